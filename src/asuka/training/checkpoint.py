"""Training checkpoints: ``<run>/checkpoints/step_00001000/state.pt``, written atomically.

The state is written into a hidden temporary folder, flushed to disk, and the folder is then
renamed into place, so a run killed at any moment (``kill -9``, power loss) leaves either the
previous checkpoints or a complete new one, never a half-written one that a resume would pick.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import torch

from asuka.errors import CheckpointError

_NAME = re.compile(r"^step_(\d+)$")
STATE_FILE = "state.pt"


def checkpoints_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run as ``(step, folder)``, oldest first."""
    folder = checkpoints_dir(run_dir)
    if not folder.is_dir():
        return []
    found = []
    for child in folder.iterdir():
        match = _NAME.match(child.name)
        if match and (child / STATE_FILE).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some file systems do not allow opening folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_checkpoint(run_dir: str | Path, step: int, state: dict, *, keep: int) -> Path:
    """Write ``state`` as the checkpoint of ``step`` and delete all but the newest ``keep``.

    Call on the main process only. Returns the checkpoint folder.
    """
    folder = checkpoints_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step_{step:08d}"
    tmp = folder / f".tmp-step_{step:08d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    with open(tmp / STATE_FILE, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    _fsync_dir(tmp)
    if final.exists():  # the same step saved again (e.g. a resumed run): replace it
        old = folder / f".old-step_{step:08d}-{os.getpid()}"
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)
    _fsync_dir(folder)
    for _, path in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)
    # leftovers of runs killed while writing
    for child in folder.glob(".tmp-step_*"):
        if child != tmp:
            shutil.rmtree(child, ignore_errors=True)
    return final


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint folder (or its ``state.pt``) on the CPU."""
    path = Path(path)
    file = path / STATE_FILE if path.is_dir() else path
    if not file.is_file():
        raise CheckpointError(f"training checkpoint not found: expected {file}")
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated file, foreign pickle, ...
        raise CheckpointError(f"training checkpoint {file}: cannot read it: {exc}") from None
