"""Write seeded mask sets to disk: ``DIR/0000.png ...`` (255 = hole) and ``DIR/manifest.json``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from asuka.errors import InputError
from asuka.masks._common import rng_for
from asuka.masks.mixture import MaskMixture, get_mixture

MANIFEST = "manifest.json"


def mask_filename(index: int, last_index: int) -> str:
    """``0000.png``; more digits only when the run has indices >= 10000."""
    return f"{index:0{max(4, len(str(last_index)))}d}.png"


def mask_to_png(mask: np.ndarray, path: str | os.PathLike) -> None:
    """Write an ``(H, W)`` mask (1 = hole) as an 8-bit grayscale PNG with 255 = hole.

    Written under a temporary name and renamed, so an interrupted run leaves no partial file.
    """
    import PIL.Image

    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    image = PIL.Image.fromarray(((np.asarray(mask) > 0.5) * 255).astype(np.uint8), mode="L")
    try:
        image.save(partial, format="PNG")
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise InputError(f"cannot write {path}: {exc}") from None


def write_masks(
    output: str | os.PathLike,
    *,
    mix: str | MaskMixture,
    n: int,
    height: int,
    width: int,
    seed: int = 0,
    start: int = 0,
    shapes=None,
    overwrite: bool = False,
    progress: bool = False,
) -> dict:
    """Draw masks ``start .. start+n-1`` of the run ``(mix, seed, size)`` and write them.

    Mask ``i`` is drawn with :func:`asuka.masks.rng_for` ``(seed, i)``, so any index range can be
    (re)generated independently: shards written into the same folder merge their entries into
    one ``manifest.json`` (the run settings must match). Existing mask files or a manifest of a
    different run are an :class:`InputError` unless ``overwrite``. Returns the manifest dict.
    """
    if n < 1 or start < 0:
        raise InputError(f"need n >= 1 and start >= 0, got n={n}, start={start}")
    mixture = mix if isinstance(mix, MaskMixture) else get_mixture(mix, shapes=shapes)
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder")
    last = start + n - 1
    names = {i: mask_filename(i, last) for i in range(start, start + n)}
    run = {
        "mix": mixture.name,
        "seed": int(seed),
        "size": [int(height), int(width)],
        "shapes": None if mixture.shapes is None else mixture.shapes.name,
        "polarity": "255 = hole, 0 = keep",
        "rng": "numpy.random.default_rng(numpy.random.SeedSequence(seed, spawn_key=(index,)))",
    }
    manifest_path = out / MANIFEST
    entries: dict[int, dict] = {}
    if manifest_path.exists():
        try:
            old = json.loads(manifest_path.read_text())
            same_run = all(old.get(k) == v for k, v in run.items())
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            old, same_run = {}, False
        if same_run:
            entries = {int(e["index"]): e for e in old.get("masks", [])}
        elif not overwrite:
            raise InputError(
                f"{manifest_path} belongs to another run ({ {k: old.get(k) for k in run} if old else 'unreadable'}); "
                f"use another folder or --overwrite"
            )
    existing = [names[i] for i in names if (out / names[i]).exists()]
    if existing and not overwrite:
        shown = ", ".join(existing[:5]) + (f", ... ({len(existing) - 5} more)" if len(existing) > 5 else "")
        raise InputError(f"{len(existing)} mask file(s) already exist in {out}: {shown}; "
                         f"use --overwrite, another folder, or --start after the last index")
    out.mkdir(parents=True, exist_ok=True)

    indices = range(start, start + n)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="masks", unit="mask")
    for i in indices:
        draw = mixture.sample(height, width, rng_for(seed, i))
        mask_to_png(draw.mask, out / names[i])
        entries[i] = {"index": i, "file": names[i], **draw.to_json()}

    manifest = {**run, "count": len(entries), "masks": [entries[k] for k in sorted(entries)]}
    partial = manifest_path.with_name(f".{MANIFEST}.partial")
    partial.write_text(json.dumps(manifest, indent=1))
    os.replace(partial, manifest_path)
    return manifest
