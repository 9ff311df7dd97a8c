"""Datasets and benchmark construction.

* :mod:`asuka.data.images` -- training images (folders, webdataset shards) cut into crops;
* :mod:`asuka.data.misato` -- :class:`MisatoDataset` (the MISATO layout),
  :class:`PairedFolderDataset` (image and mask folders matched by stem), :func:`domain_of`;
* :mod:`asuka.data.build` -- :func:`build_benchmark`: a MISATO-style benchmark from any image
  folder (CLIP embeddings, bisecting k-means, the evaluation mask mix).

Names are imported lazily, so ``import asuka.data`` does not load torch.
"""

from importlib import import_module

_LAZY = {
    "MisatoDataset": "asuka.data.misato",
    "PairedFolderDataset": "asuka.data.misato",
    "domain_of": "asuka.data.misato",
    "MISATO_DOMAINS": "asuka.data.misato",
    "build_benchmark": "asuka.data.build",
    "make_embedder": "asuka.data.build",
    "ImageFolderDataset": "asuka.data.images",
    "ShardImageDataset": "asuka.data.images",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'asuka.data' has no attribute {name!r}")
