"""Training images: a folder searched recursively, or webdataset tar shards, cut into random crops.

Every random choice (crop position, scale, flip, and whatever a ``transform`` adds, e.g. a
mask) comes from a ``numpy.random.Generator`` seeded by ``(seed, epoch, index)`` for folders
and ``(seed, epoch, slot, position)`` for shards, so the same run gives the same samples in
the same order, whatever the number of data-loader workers, and a resumed run can continue
exactly where it stopped.

A sample is a dict::

    {"image": float32 (3, S, S) in [-1, 1], "id": str, "crop": int64 (5,)}

``id`` is the path relative to the folder (or the shard sample's ``__key__``); ``crop`` is the
:class:`CropBox` ``(resized_w, resized_h, left, top, flip)`` that reproduces the crop.
"""

from __future__ import annotations

import io
import os
import tarfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from asuka.errors import InputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")

#: A picklable ``transform(sample, rng) -> sample`` run after cropping (adds masks, etc.).
Transform = Callable[[dict, np.random.Generator], dict]
#: A picklable ``crop_override(id, rng) -> CropBox | None``: replay a stored crop for this image.
CropOverride = Callable[[str, np.random.Generator], "CropBox | None"]


def list_images(root: str | Path) -> list[str]:
    """Image paths under ``root`` (recursive, symlinks followed), relative, sorted, ``/``-separated."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"image folder not found or not a folder: {root}")
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."):
                found.append(Path(dirpath, name).relative_to(root).as_posix())
    found.sort()
    if not found:
        raise InputError(f"image folder {root}: no images found (extensions {', '.join(IMAGE_EXTENSIONS)})")
    return found


def open_rgb(source) -> Image.Image:
    """Open a path or bytes as an RGB PIL image, with the EXIF orientation applied."""
    with Image.open(source if not isinstance(source, (bytes, bytearray)) else io.BytesIO(source)) as img:
        img = ImageOps.exif_transpose(img)
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            # composite onto white: transparent pixels have arbitrary colours underneath
            img = img.convert("RGBA")
            background = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, img)
        elif img.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(img, dtype=np.float64)
            img = Image.fromarray(np.clip(arr / max(arr.max(), 1.0) * 255.0, 0, 255).astype(np.uint8))
        return img.convert("RGB")


@dataclass(frozen=True)
class CropBox:
    """How a crop was cut: resize the image to ``resized_w x resized_h``, take the square at
    ``(left, top)``, mirror it when ``flip``."""

    resized_w: int
    resized_h: int
    left: int
    top: int
    flip: bool

    def as_tensor(self) -> torch.Tensor:
        return torch.tensor([self.resized_w, self.resized_h, self.left, self.top, int(self.flip)])

    @classmethod
    def from_sequence(cls, values) -> CropBox:
        w, h, left, top, flip = (int(v) for v in values)
        return cls(w, h, left, top, bool(flip))


class RandomCrop:
    """Square random crops of side ``size`` from images of any size.

    ``resize="shorter"`` scales the shorter side to ``size`` first (the crop then spans the
    whole shorter side); ``resize="none"`` keeps the native size unless the image is smaller
    than the crop, in which case it is scaled up just enough. Flips with probability 0.5 when
    ``random_flip``. Picklable; the randomness comes from the ``rng`` passed in.
    """

    def __init__(self, size: int, *, resize: str = "shorter", random_flip: bool = True):
        if resize not in ("shorter", "none"):
            raise InputError(f"crop resize: expected 'shorter' or 'none', got {resize!r}")
        if size < 1:
            raise InputError(f"crop size: expected >= 1, got {size}")
        self.size, self.resize, self.random_flip = int(size), resize, bool(random_flip)

    def draw(self, width: int, height: int, rng: np.random.Generator) -> CropBox:
        short = min(width, height)
        scale = self.size / short if (self.resize == "shorter" or short < self.size) else 1.0
        # round up so that the shorter side is never below the crop size
        rw, rh = max(self.size, round(width * scale)), max(self.size, round(height * scale))
        left = int(rng.integers(0, rw - self.size + 1))
        top = int(rng.integers(0, rh - self.size + 1))
        flip = bool(rng.random() < 0.5) if self.random_flip else False
        return CropBox(rw, rh, left, top, flip)

    def apply(self, img: Image.Image, box: CropBox) -> torch.Tensor:
        """Cut ``box`` from ``img``: float32 ``(3, size, size)`` in ``[-1, 1]``."""
        if img.size != (box.resized_w, box.resized_h):
            img = img.resize((box.resized_w, box.resized_h), Image.Resampling.BICUBIC, reducing_gap=3.0)
        img = img.crop((box.left, box.top, box.left + self.size, box.top + self.size))
        if box.flip:
            img = ImageOps.mirror(img)
        arr = np.asarray(img, dtype=np.uint8)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div(127.5).sub(1.0)


def _make_sample(img: Image.Image, ident: str, rng: np.random.Generator, crop: RandomCrop,
                 crop_override: CropOverride | None, transform: Transform | None) -> dict:
    box = crop_override(ident, rng) if crop_override is not None else None
    fixed = box is not None
    if box is None:
        box = crop.draw(img.width, img.height, rng)
    sample = {"image": crop.apply(img, box), "id": ident, "crop": box.as_tensor(),
              "crop_fixed": fixed}
    return transform(sample, rng) if transform is not None else sample


class ImageFolderDataset(torch.utils.data.Dataset):
    """Random crops of the images under ``root`` (recursive, any size).

    Index with an int (epoch 0) or a tuple ``(index, epoch)``; the crop and the ``transform``
    draw from ``numpy.random.default_rng((seed, epoch, index))``. An unreadable file is
    reported once with a warning and replaced by the next image, so one corrupt file in a
    million does not stop a run.
    """

    def __init__(self, root: str | Path, size: int, *, seed: int = 0, resize: str = "shorter",
                 random_flip: bool = True, transform: Transform | None = None,
                 crop_override: CropOverride | None = None, files: list[str] | None = None):
        self.root = Path(root)
        self.files = list(files) if files is not None else list_images(self.root)
        self.crop = RandomCrop(size, resize=resize, random_flip=random_flip)
        self.seed, self.transform, self.crop_override = int(seed), transform, crop_override

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> tuple[Image.Image, str]:
        """The full RGB image at ``index`` and its id (relative path)."""
        for attempt in range(len(self.files)):
            i = (index + attempt) % len(self.files)
            try:
                return open_rgb(self.root / self.files[i]), self.files[i]
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                warnings.warn(f"skipping unreadable image {self.root / self.files[i]}: {exc}", stacklevel=2)
        raise InputError(f"image folder {self.root}: no readable image")

    def __getitem__(self, key) -> dict:
        index, epoch = (key, 0) if isinstance(key, (int, np.integer)) else (int(key[0]), int(key[1]))
        if not 0 <= index < len(self.files):
            raise IndexError(f"index {index} out of range for {len(self.files)} images")
        rng = np.random.default_rng((self.seed, epoch, index))
        img, ident = self.load(index)
        return _make_sample(img, ident, rng, self.crop, self.crop_override, self.transform)


def expand_shards(pattern: str) -> list[str]:
    """Shard URLs from a brace pattern, a comma-separated list, or a ``.txt`` file of URLs."""
    try:
        import braceexpand
    except ImportError:
        raise InputError(
            "webdataset shards need the webdataset extra: pip install 'asuka[webdataset]'"
        ) from None

    if pattern.endswith(".txt") and Path(pattern).is_file():
        urls = [line.strip() for line in Path(pattern).read_text().splitlines() if line.strip()]
    else:
        urls = [u for part in pattern.split(",") for u in braceexpand.braceexpand(part.strip())]
    local = [u for u in urls if "://" not in u and not u.startswith("pipe:")]
    missing = [u for u in local if not Path(u).is_file()]
    if missing:
        raise InputError(f"webdataset shards not found: {', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''} (pattern {pattern!r})")
    if not urls:
        raise InputError(f"webdataset shards: pattern {pattern!r} names no shard")
    return urls


def _iter_tar_images(url: str) -> Iterator[tuple[str, bytes | None]]:
    """``(key, image bytes)`` for each sample of a webdataset tar; ``None`` bytes when the
    sample has no image member (the sample still counts, so positions stay stable)."""
    from webdataset import gopen

    stream = gopen(url, "rb")
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            key, data = None, None
            for member in tar:
                if not member.isfile():
                    continue
                name = member.name
                base = name.rsplit("/", 1)[-1]
                k = name[: len(name) - len(base)] + base.split(".", 1)[0]
                ext = base.split(".", 1)[1].lower() if "." in base else ""
                if k != key:
                    if key is not None:
                        yield key, data
                    key, data = k, None
                if data is None and "." + ext.rsplit(".", 1)[-1] in IMAGE_EXTENSIONS:
                    data = tar.extractfile(member).read()
            if key is not None:
                yield key, data
    finally:
        stream.close()


class ShardImageDataset(torch.utils.data.IterableDataset):
    """Random crops of the images in webdataset tar shards (one image per sample key).

    An endless stream: each epoch, the shard order is shuffled with ``(seed, epoch)``; the
    shards are dealt to ``num_slots = world_size x num_workers`` readers (slot = rank x
    workers + worker), and each reader reads its shards in order. The ``DataLoader`` takes
    whole batches from the workers in turn, so the stream is the same for a given worker
    count. :meth:`set_start` skips the first ``n`` batches of this process without decoding
    their images (exact resume). Every rank must see at least one shard: use at least
    ``world_size x num_workers`` shards.
    """

    def __init__(self, shards: str, size: int, *, batch_size: int, seed: int = 0,
                 resize: str = "shorter", random_flip: bool = True, transform: Transform | None = None,
                 crop_override: CropOverride | None = None, rank: int = 0, world_size: int = 1):
        self.urls = expand_shards(shards)
        self.crop = RandomCrop(size, resize=resize, random_flip=random_flip)
        self.seed, self.transform, self.crop_override = int(seed), transform, crop_override
        self.batch_size, self.rank, self.world_size = int(batch_size), int(rank), int(world_size)
        self.start_batches = 0

    def set_start(self, batches: int) -> None:
        """Begin after ``batches`` batches already consumed by this process."""
        self.start_batches = int(batches)

    def _slot(self) -> tuple[int, int, int, int]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        slots = self.world_size * workers
        if len(self.urls) < slots:
            raise InputError(f"webdataset: {len(self.urls)} shards for {self.world_size} processes x "
                             f"{workers} workers; expected at least {slots} shards")
        return self.rank * workers + worker, slots, worker, workers

    def __iter__(self) -> Iterator[dict]:
        slot, slots, worker, workers = self._slot()
        # The loader takes batch j from worker j % workers: this worker made ceil((k - w) / W)
        # of the k batches consumed before the resume point.
        skip = max(0, -(-(self.start_batches - worker) // workers)) * self.batch_size
        epoch = 0
        while True:
            order = np.random.default_rng((self.seed, epoch)).permutation(len(self.urls))
            mine = [self.urls[i] for i in order[slot::slots]]
            position = 0
            for url in mine:
                for key, data in _iter_tar_images(url):
                    if data is None:
                        warnings.warn(f"webdataset {url}: sample {key} has no image; skipped", stacklevel=2)
                        continue
                    position += 1
                    if skip > 0:  # counted before decoding, so a corrupt image skipped here is off by one
                        skip -= 1
                        continue
                    rng = np.random.default_rng((self.seed, epoch, slot, position))
                    try:
                        img = open_rgb(data)
                    except (OSError, ValueError, Image.DecompressionBombError) as exc:
                        warnings.warn(f"webdataset {url}: unreadable image {key}: {exc}", stacklevel=2)
                        continue
                    yield _make_sample(img, key, rng, self.crop, self.crop_override, self.transform)
            if position == 0:
                raise InputError(f"webdataset: shards {mine[:3]} hold no samples")
            epoch += 1


class StoredCrops:
    """A ``crop_override`` that replays stored crops: ``boxes`` maps image id -> CropBox; the
    stored crop is used with probability ``p`` (a draw from the sample's generator)."""

    def __init__(self, boxes: Mapping[str, CropBox], p: float = 1.0):
        self.boxes, self.p = dict(boxes), float(p)

    def __call__(self, ident: str, rng: np.random.Generator) -> CropBox | None:
        u = rng.random()  # drawn for every sample so the other draws do not depend on the store
        box = self.boxes.get(ident)
        return box if box is not None and u < self.p else None
