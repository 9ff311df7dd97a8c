"""Reading foreign checkpoints (the official release, its training scripts, old runs) safely, and
checking every key and shape of what they hold against our models.

Files are read with ``torch.load(weights_only=True)``, which rebuilds tensors and plain containers
only, plus an explicit allow-list of the few non-tensor types the release's files and the scripts
that wrote them put next to the weights (:data:`RELEASE_SAFE_GLOBALS`). Nothing else is unpickled:
a file that needs another type is refused with a :class:`CheckpointError` that names the type and
says how to keep only the weights of a file one trusts.
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import re
import zipfile
from collections.abc import Mapping

import torch

from asuka.errors import CheckpointError

logger = logging.getLogger("asuka.convert")


def _callback_key(name: str) -> type:
    # Lightning < 1.5 keys ``checkpoint["callbacks"]`` by the callback *class*. The class is only a
    # dict key there (never called), so an inert stand-in of the same name takes its place.
    return type(name, (), {"__module__": "asuka.models._checks", "__doc__": "stand-in for a Lightning callback key"})


_LIGHTNING_CALLBACKS = {
    "pytorch_lightning.callbacks.model_checkpoint": ("ModelCheckpoint",),
    "pytorch_lightning.callbacks.early_stopping": ("EarlyStopping",),
    "pytorch_lightning.callbacks.timer": ("Timer",),
}

#: Non-tensor types that files of the release and of its training scripts contain, as
#: ``torch.serialization.add_safe_globals`` entries (an object, or ``(stand-in, "module.Name")``
#: for a type whose package need not be installed):
#:
#: * ``argparse.Namespace`` -- ``mae_300.pth`` is written by MAE's training script as
#:   ``{'model', 'optimizer', 'epoch', 'scaler', 'args'}`` with ``args`` its command-line namespace;
#: * Lightning's ``AttributeDict`` (hyper-parameters), read as a plain ``dict``;
#: * Lightning < 1.5's callback classes, used as keys of ``checkpoint['callbacks']``.
RELEASE_SAFE_GLOBALS: list = [
    argparse.Namespace,
    *((dict, f"{module}.AttributeDict") for module in (
        "pytorch_lightning.utilities.parsing", "lightning_fabric.utilities.data", "lightning.fabric.utilities.data")),
    *((_callback_key(name), f"{module}.{name}") for module, names in _LIGHTNING_CALLBACKS.items() for name in names),
]


def _allowed_names() -> set[str]:
    names = set()
    for entry in RELEASE_SAFE_GLOBALS:
        names.add(entry[1] if isinstance(entry, tuple) else f"{entry.__module__}.{entry.__qualname__}")
    return names


def _preview(keys, limit: int = 8) -> str:
    keys = sorted(map(str, keys))
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def _shape(value) -> tuple[int, ...]:
    return tuple(value.shape) if hasattr(value, "shape") else tuple(value)


def check_state_dict(
    expected: Mapping,
    given: Mapping[str, torch.Tensor],
    *,
    what: str,
    ignore_unexpected: tuple[str, ...] = (),
) -> None:
    """Raise :class:`CheckpointError` unless ``given`` has exactly ``expected``'s keys and shapes.

    ``expected`` maps each key, spelled as in ``given`` (the file), to a tensor or a shape.
    ``ignore_unexpected`` lists key prefixes that may be present in ``given`` and are dropped
    (e.g. release sub-modules that exist in the file but are never used in forward).
    The message names the missing, unexpected and mis-shaped keys, with expected and found shapes.
    """
    exp, got = set(expected), {k for k in given if not k.startswith(ignore_unexpected)}
    missing, unexpected = exp - got, got - exp
    wrong = [
        f"{k}: expected {_shape(expected[k])}, found {_shape(given[k])}"
        for k in sorted(exp & got)
        if _shape(given[k]) != _shape(expected[k])
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_preview(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_preview(unexpected)}")
    if wrong:
        problems.append("shape mismatch: " + "; ".join(wrong[:8]) + (" ..." if len(wrong) > 8 else ""))
    if problems:
        raise CheckpointError(f"{what}: state dict does not match the model ({' | '.join(problems)})")


def load_checked(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], *, what: str,
                 ignore_unexpected: tuple[str, ...] = ()) -> torch.nn.Module:
    """Check every key and shape of ``state_dict`` against ``module``, then load it strictly."""
    expected = module.state_dict()
    check_state_dict(expected, state_dict, what=what, ignore_unexpected=ignore_unexpected)
    module.load_state_dict({k: v for k, v in state_dict.items() if k in expected}, strict=True)
    return module


def read_checkpoint(path_or_state, *, what: str, weights_key: str | None = None) -> dict:
    """Read a ``.pth``/``.pt``/``.ckpt``/``.bin`` (torch pickle) or ``.safetensors`` file, or pass a
    mapping through. Raises :class:`CheckpointError` with the path on failure.

    Torch pickles are read with ``weights_only=True`` and :data:`RELEASE_SAFE_GLOBALS`, memory-mapped
    when the file allows it (so tensors the converter drops are never read from disk). A file that
    needs any other Python type is refused with the type's name; ``weights_key`` (the entry that
    holds the weights, e.g. ``"state_dict"``) makes the message's re-save command exact.
    """
    if isinstance(path_or_state, Mapping):
        return dict(path_or_state)
    path = os.fspath(path_or_state)
    if not os.path.isfile(path):
        raise CheckpointError(f"{what}: file not found: {path}")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path)
        with torch.serialization.safe_globals(RELEASE_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        raise _unsafe_file_error(path, what, weights_key, exc) from None
    except Exception as exc:  # corrupt or truncated file, ...
        raise CheckpointError(f"{what}: cannot read {path}: {_first_line(exc)}") from None


def _unsafe_file_error(path: str, what: str, weights_key: str | None, exc: BaseException) -> CheckpointError:
    try:
        needed = sorted(set(torch.serialization.get_unsafe_globals_in_checkpoint(path)) - _allowed_names())
    except Exception:  # not a zip-format pickle: take the first offending name from torch's message
        needed = re.findall(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))[:1]
    if not needed:
        return CheckpointError(f"{what}: cannot read {path} as weights: {_first_line(exc)}")
    inner = f"c[{weights_key!r}]" if weights_key else "c"
    return CheckpointError(
        f"{what}: {path} holds Python objects of types outside the allow-list of safe types: "
        f"{', '.join(needed)}. asuka does not unpickle arbitrary objects (that can run code). "
        f"If you trust the file, keep only its weights and convert that file instead: "
        f"python -c \"import torch; c = torch.load('{path}', weights_only=False); "
        f"torch.save({{{weights_key or 'state_dict'!r}: {inner}}}, 'weights_only.pt')\"")


def take_weights(checkpoint: Mapping, *, what: str, keys: tuple[str, ...]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The state dict inside a training checkpoint and the names of everything else in it.

    ``checkpoint[key]`` for the first of ``keys`` that holds a mapping (``'model'`` in MAE's
    files, ``'state_dict'`` in Lightning's), else ``checkpoint`` itself (a bare state dict).
    Non-tensor entries of the state dict are dropped and reported with the other ignored entries.
    """
    for key in keys:
        if isinstance(checkpoint.get(key), Mapping):
            state = checkpoint[key]
            ignored = [str(k) for k in checkpoint if k != key]
            break
    else:
        state, ignored = checkpoint, []
    tensors = {str(k): v for k, v in state.items() if torch.is_tensor(v)}
    ignored += [str(k) for k in state if not torch.is_tensor(state[k])]
    if not tensors:
        raise CheckpointError(f"{what}: no tensors found (expected a state dict, or a checkpoint with one of "
                              f"{', '.join(map(repr, keys))}); top-level entries: {_preview(checkpoint)}")
    return tensors, ignored


def report_ignored(what: str, groups: Mapping[str, list[str] | str]) -> None:
    """Say, in one log line (logger ``asuka.convert``, level WARNING), what a converter left out.

    ``groups``: reason -> the names (keys, entries) ignored for it, or a ready summary string;
    empty groups are skipped.
    Keys are summarised by their leading name parts (``decoder.up_layers.* (8 keys)``, ``encoder.* (106 keys)``).
    """
    parts = []
    for reason, names in groups.items():
        if names:
            parts.append(f"{reason}: {names if isinstance(names, str) else _summarise(names)}")
    if parts:
        logger.warning("%s: ignored %s", what, "; ".join(parts))


def _summarise(names, limit: int = 12) -> str:
    def stems(depth):
        counts: dict[str, int] = {}
        for name in names:
            bits = str(name).split(".")
            stem = ".".join(bits[:depth]) + ".*" if len(bits) > depth else str(name)
            counts[stem] = counts.get(stem, 0) + 1
        return counts

    counts = stems(2)
    if len(counts) > 3:  # e.g. every sub-module of the VAE encoder: one line for all of them
        counts = stems(1)
    shown = [f"{stem} ({n} keys)" if n > 1 else stem for stem, n in sorted(counts.items())]
    return ", ".join(shown[:limit]) + (f", ... ({len(shown) - limit} more)" if len(shown) > limit else "")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
