"""Data plumbing for the training loop: a resumable sampler, mask transforms, the loader.

Reproducibility contract: sample ``k`` of process ``r`` depends only on (seed, k, r, world
size); the loader's worker count and a resume in the middle do not change it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from asuka.errors import InputError


class ResumableSampler(torch.utils.data.Sampler):
    """An endless stream of ``(index, epoch)`` keys for a map-style dataset.

    Epoch ``e`` visits a permutation of ``range(n)`` drawn with ``(seed, e)``; process ``rank``
    of ``world_size`` takes positions ``rank, rank + world_size, ...`` of it. ``start`` is the
    number of keys this process already consumed (the resume point).
    """

    def __init__(self, n: int, *, seed: int, rank: int = 0, world_size: int = 1, start: int = 0):
        if n < world_size:
            raise InputError(f"dataset: {n} images for {world_size} processes; expected at least one each")
        self.n, self.seed, self.rank, self.world_size, self.start = n, seed, rank, world_size, start

    def per_epoch(self) -> int:
        return len(range(self.rank, self.n, self.world_size))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, offset = divmod(self.start, self.per_epoch())
        while True:
            order = np.random.default_rng((self.seed, epoch)).permutation(self.n)
            for index in order[self.rank :: self.world_size][offset:]:
                yield int(index), epoch
            epoch, offset = epoch + 1, 0

    def __len__(self) -> int:  # the loader only needs a length for its progress estimate
        return 2**62


class RectangleMasks:
    """One axis-aligned rectangle per mask, area ratio uniform in ``[min_ratio, max_ratio]``,
    aspect ratio in ``[1/3, 3]``. Cheap and exactly reproducible; for tests and ablations."""

    def __init__(self, min_ratio: float = 0.1, max_ratio: float = 0.5):
        self.min_ratio, self.max_ratio = float(min_ratio), float(max_ratio)

    def sample(self, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
        ratio = rng.uniform(self.min_ratio, self.max_ratio)
        aspect = np.exp(rng.uniform(np.log(1 / 3), np.log(3)))
        mh = int(np.clip(round(np.sqrt(ratio * h * w * aspect)), 1, h))
        mw = int(np.clip(round(ratio * h * w / mh), 1, w))
        top, left = int(rng.integers(0, h - mh + 1)), int(rng.integers(0, w - mw + 1))
        mask = np.zeros((h, w), np.float32)
        mask[top : top + mh, left : left + mw] = 1.0
        return mask


class AddMask:
    """Dataset transform: ``sample["mask"]`` = float32 ``(1, H, W)``, 1 = hole, at the image size.

    ``kind="paper_train"`` draws from :func:`asuka.masks.paper_train_mixture`; ``"rect"`` from
    :class:`RectangleMasks`. The generator is built lazily so the transform pickles into
    data-loader workers cheaply.
    """

    def __init__(self, kind: str = "paper_train", *, shapes: str | None = None,
                 min_ratio: float = 0.1, max_ratio: float = 0.5):
        self.kind, self.shapes, self.min_ratio, self.max_ratio = kind, shapes, min_ratio, max_ratio
        self._source = None

    @classmethod
    def from_config(cls, masks) -> AddMask:
        return cls(masks.kind, shapes=masks.shapes, min_ratio=masks.min_ratio, max_ratio=masks.max_ratio)

    def __getstate__(self):
        return {**self.__dict__, "_source": None}

    def _get_source(self):
        if self._source is None:
            if self.kind == "rect":
                self._source = RectangleMasks(self.min_ratio, self.max_ratio)
            elif self.kind == "paper_train":
                from asuka.masks import paper_train_mixture

                # no enlargement to 75% here: the MAE's forward masks the extra tokens itself
                self._source = paper_train_mixture(shapes=self.shapes, target_ratio=None)
            else:
                raise InputError(f"masks.kind: expected 'paper_train' or 'rect', got {self.kind!r}")
        return self._source

    def draw(self, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
        out = self._get_source().sample(h, w, rng)
        mask = getattr(out, "mask", out)  # asuka.masks returns a MaskDraw, RectangleMasks an array
        return np.asarray(mask, dtype=np.float32)

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        _, h, w = sample["image"].shape
        sample["mask"] = torch.from_numpy(self.draw(h, w, rng)).reshape(1, h, w)
        return sample


class Compose:
    """Apply dataset transforms in order (picklable)."""

    def __init__(self, *transforms):
        self.transforms = [t for t in transforms if t is not None]

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        for transform in self.transforms:
            sample = transform(sample, rng)
        return sample


def check_data_source(data) -> None:
    """Fail early (before any model is loaded) when ``data`` names no usable images."""
    from pathlib import Path

    from asuka.data.images import expand_shards

    if (data.root is None) == (data.shards is None):
        raise InputError("config data: set exactly one of data.root (an image folder) or "
                         f"data.shards (webdataset tars); got root={data.root!r}, shards={data.shards!r}")
    if data.root is not None and not Path(data.root).is_dir():
        raise InputError(f"config data.root: image folder not found: {data.root}")
    if data.shards is not None:
        expand_shards(data.shards)


def build_dataset(config, *, transform=None, crop_override=None, rank: int = 0, world_size: int = 1):
    """The dataset ``config.data`` names, at ``config.data.resolution``, seeded by ``config.seed``."""
    from asuka.data.images import ImageFolderDataset, ShardImageDataset

    data = config.data
    check_data_source(data)
    common = dict(seed=config.seed, resize=data.resize, random_flip=data.random_flip,
                  transform=transform, crop_override=crop_override)
    if data.root is not None:
        return ImageFolderDataset(data.root, data.resolution, **common)
    return ShardImageDataset(data.shards, data.resolution, batch_size=config.batch_size,
                             rank=rank, world_size=world_size, **common)


def make_loader(dataset, *, batch_size: int, num_workers: int, seed: int, rank: int, world_size: int,
                start_batches: int) -> torch.utils.data.DataLoader:
    """An endless loader that begins after ``start_batches`` batches of this process."""
    common = dict(batch_size=batch_size, num_workers=num_workers, drop_last=True,
                  persistent_workers=False, pin_memory=torch.cuda.is_available())
    if num_workers > 0:
        common["prefetch_factor"] = 2
    if isinstance(dataset, torch.utils.data.IterableDataset):
        dataset.set_start(start_batches)
        return torch.utils.data.DataLoader(dataset, **common)
    sampler = ResumableSampler(len(dataset), seed=seed, rank=rank, world_size=world_size,
                               start=start_batches * batch_size)
    return torch.utils.data.DataLoader(dataset, sampler=sampler, **common)
