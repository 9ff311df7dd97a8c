"""The MISATO benchmark layout and a generic image/mask folder pair dataset.

MISATO as distributed (``yikaiwang/MISATO``)::

    ROOT/512/image/0000.png ... 1999.png     ROOT/512/mask/0000.png ... 1999.png
    ROOT/1024/image/0000.png ... 1499.png    ROOT/1024/mask/000000.png ... 001499.png

Masks are grayscale, 255 = hole. Index ranges: 0000-0499 outdoor landscape (Flickr-Landscape),
0500-0999 indoor (Matterport3D), 1000-1499 building (MegaDepth), 1500-1999 background (COCO
2014; not in the 1024 set). ``asuka build-benchmark`` writes the same layout.

Samples are dicts (they collate with the default ``DataLoader`` collate)::

    {"image": float32 (3, H, W) in [-1, 1], "mask": float32 (1, H, W) in {0, 1} (1 = hole),
     "name": str (file stem, e.g. "0007"), "domain": str}
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from asuka.errors import InputError

#: Domain of MISATO file ``NNNN``: ``MISATO_DOMAINS[NNNN // 500]``.
MISATO_DOMAINS = ("outdoor landscape", "indoor", "building", "background")
MISATO_DOMAIN_SIZE = 500
#: resolution -> number of pairs in the distributed set
MISATO_COUNTS = {512: 2000, 1024: 1500}
#: resolution -> prefix of the mask file names (the 1024 masks are ``00NNNN.png``)
MISATO_MASK_PREFIX = {512: "", 1024: "00"}
UNKNOWN_DOMAIN = "unknown"
_MAX_LISTED = 8


def _listing(names) -> str:
    names = sorted(names)
    return ", ".join(names[:_MAX_LISTED]) + (f", ... ({len(names) - _MAX_LISTED} more)" if len(names) > _MAX_LISTED else "")


def mask_prefix(resolution: int) -> str:
    """``"00"`` for the 1024-px layout, ``""`` otherwise."""
    return MISATO_MASK_PREFIX.get(int(resolution), "")


def domain_of(index_or_name) -> str:
    """MISATO domain of an index (``7``) or a file name / stem (``"0007"``, ``"0007.png"``,
    ``"000007.png"`` -- the 1024 mask name). Raises :class:`InputError` outside 0-1999."""
    if isinstance(index_or_name, (int, np.integer)):
        index = int(index_or_name)
    else:
        stem = Path(str(index_or_name)).stem
        if not re.fullmatch(r"\d{4}|00\d{4}", stem):
            raise InputError(f"not a MISATO file name: {index_or_name!r} (expected NNNN or 00NNNN, e.g. '0007.png')")
        index = int(stem)
    if not 0 <= index < len(MISATO_DOMAINS) * MISATO_DOMAIN_SIZE:
        raise InputError(f"MISATO index must be in 0..{len(MISATO_DOMAINS) * MISATO_DOMAIN_SIZE - 1}, got {index}")
    return MISATO_DOMAINS[index // MISATO_DOMAIN_SIZE]


def _domain_or_unknown(name: str) -> str:
    try:
        return domain_of(name)
    except InputError:
        return UNKNOWN_DOMAIN


def _to_sample(image_path: Path, mask_path: Path, name: str, domain: str, *, resize_mask: bool) -> dict:
    from asuka.io import fit_mask, load_image, load_mask

    img = load_image(image_path)
    mask = fit_mask(load_mask(mask_path), img.size, resize=resize_mask, what=f"mask {mask_path.name}")
    image = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1).div(127.5).sub(1.0)
    return {"image": image.contiguous(), "mask": torch.from_numpy(mask)[None], "name": name, "domain": domain}


def _stems(directory: Path, what: str) -> dict[str, Path]:
    from asuka.io import find_images

    return find_images(directory, what=what)


class MisatoDataset(torch.utils.data.Dataset):
    """MISATO image/mask pairs at ``resolution`` 512 (2000 pairs) or 1024 (1500 pairs).

    ``root`` is the folder holding ``512/`` and ``1024/`` (or the resolution folder itself).
    With ``strict=True`` exactly the distributed files ``0000..N-1`` must be present; with
    ``strict=False`` any set of ``NNNN`` pairs (e.g. a benchmark built with
    ``asuka build-benchmark`` at any size) is accepted. Masks of another size than their image
    are resized (nearest), as the release's loader does. Samples: see the module docstring.
    """

    def __init__(self, root: str | os.PathLike, resolution: int = 512, *, strict: bool = True):
        resolution = int(resolution)
        if strict and resolution not in MISATO_COUNTS:
            raise InputError(f"MISATO resolution must be one of {sorted(MISATO_COUNTS)}, got {resolution} "
                             "(use strict=False for a benchmark built at another size)")
        root = Path(root)
        base = root / str(resolution)
        if not (base / "image").is_dir() and (root / "image").is_dir():
            base = root  # the resolution folder itself was given
        image_dir, mask_dir = base / "image", base / "mask"
        missing_dirs = [str(d) for d in (image_dir, mask_dir) if not d.is_dir()]
        if missing_dirs:
            raise InputError(f"MISATO layout not found under {root}: missing folder(s) {', '.join(missing_dirs)} "
                             f"(expected {root}/{resolution}/image/NNNN.png and {root}/{resolution}/mask/"
                             f"{mask_prefix(resolution)}NNNN.png)")
        prefix = mask_prefix(resolution)
        images = _stems(image_dir, "MISATO image")
        masks = _stems(mask_dir, "MISATO mask")
        if strict:
            names = [f"{i:04d}" for i in range(MISATO_COUNTS[resolution])]
        else:
            names = sorted(n for n in images if re.fullmatch(r"\d{4,}", n))
            if not names:
                raise InputError(f"{image_dir}: no NNNN.png images found")
        problems = []
        no_image = [f"{n}.png" for n in names if n not in images]
        no_mask = [f"{prefix}{n}.png" for n in names if prefix + n not in masks]
        if no_image:
            problems.append(f"{len(no_image)} image(s) missing in {image_dir}: {_listing(no_image)}")
        if no_mask:
            problems.append(f"{len(no_mask)} mask(s) missing in {mask_dir}: {_listing(no_mask)}")
        if problems:
            expected = f"{len(names)} pairs" if strict else "a mask for every image"
            raise InputError(f"incomplete MISATO layout at {base} (expected {expected}): " + "; ".join(problems))
        self.root, self.resolution, self.names = base, resolution, names
        self.image_paths = [images[n] for n in names]
        self.mask_paths = [masks[prefix + n] for n in names]

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict:
        name = self.names[index]
        return _to_sample(self.image_paths[index], self.mask_paths[index], name, _domain_or_unknown(name),
                          resize_mask=True)


class PairedFolderDataset(torch.utils.data.Dataset):
    """Images and masks from two folders, matched by file stem (``a.jpg`` with ``a.png``).

    A mask may also carry MISATO's ``00`` prefix (``000007.png`` for ``0007.jpg``). Images
    without a mask, or masks without an image, are an :class:`InputError` naming them. A mask
    of another size than its image is an error unless ``resize_masks`` (nearest). ``domain``
    is the MISATO domain for ``NNNN`` names in 0000-1999, else ``"unknown"``.
    """

    def __init__(self, images_dir: str | os.PathLike, masks_dir: str | os.PathLike, *, resize_masks: bool = False):
        from asuka.io import pair_by_stem

        pairs = pair_by_stem(images_dir, masks_dir, unused_masks="error")
        self.names = sorted(pairs)
        self.image_paths = [pairs[n][0] for n in self.names]
        self.mask_paths = [pairs[n][1] for n in self.names]
        self.resize_masks = resize_masks

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict:
        name = self.names[index]
        return _to_sample(self.image_paths[index], self.mask_paths[index], name, _domain_or_unknown(name),
                          resize_mask=self.resize_masks)
