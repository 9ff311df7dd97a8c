"""Seeded mask generators and the paper's mask mixtures.

Every generator is ``f(height, width, rng: numpy.random.Generator, **params)`` and returns an
``(H, W)`` float32 array in {0, 1} with **1 = hole** (pixels to fill). All randomness comes from
``rng``; :func:`rng_for` gives the generator of item ``i`` of a seeded run.

Generators (registry names in :data:`GENERATOR_NAMES`): LaMa strokes ``lama-thin`` /
``lama-medium`` / ``lama-thick`` (:func:`lama_irregular`), Co-Mod-GAN / MAT free-form ``comod`` /
``mat-large`` / ``mat-small`` (:func:`free_form`), ``object`` shapes (:func:`object_shape` with a
:class:`ShapeBank`), ``rectangle`` and ``rectangle-complement``. Mixtures:
:func:`paper_train_mixture`, :func:`misato_eval_mixture`, :func:`get_mixture`.
Published pixel sizes are for 512 px and are scaled by ``min(H, W) / 512`` at other sizes.
"""

from asuka.masks._common import HoleRangeError, hole_ratio, rng_for, size_scale
from asuka.masks.coco import CocoAnnotations, decode_segmentation, fill_polygons, rle_decode, rle_encode
from asuka.masks.irregular import FREE_FORM_PRESETS, LAMA_PRESETS, free_form, lama_irregular
from asuka.masks.mixture import (
    GENERATOR_NAMES,
    MIXTURE_NAMES,
    Component,
    MaskDraw,
    MaskMixture,
    enlarge_to_ratio,
    get_generator,
    get_mixture,
    misato_eval_mixture,
    paper_train_mixture,
)
from asuka.masks.regular import rectangle, rectangle_complement
from asuka.masks.shapes import Shape, ShapeBank, object_shape
from asuka.masks.writer import mask_to_png, write_masks

__all__ = [
    "CocoAnnotations", "Component", "FREE_FORM_PRESETS", "GENERATOR_NAMES", "HoleRangeError",
    "LAMA_PRESETS", "MIXTURE_NAMES", "MaskDraw", "MaskMixture", "Shape", "ShapeBank",
    "decode_segmentation", "enlarge_to_ratio", "fill_polygons", "free_form", "get_generator",
    "get_mixture", "hole_ratio", "lama_irregular", "mask_to_png", "misato_eval_mixture", "object_shape",
    "paper_train_mixture", "rectangle", "rectangle_complement", "rle_decode", "rle_encode",
    "rng_for", "size_scale", "write_masks",
]
