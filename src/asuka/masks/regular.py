"""Regular masks: one rectangle, or everything outside one rectangle (outpainting-like)."""

from __future__ import annotations

import math

import numpy as np

from asuka.errors import InputError
from asuka.masks._common import check_hole_range, check_rng, check_size, rejection_sample


def _check_aspect(aspect_range) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in aspect_range)
    except (TypeError, ValueError):
        raise InputError(f"aspect_range must be a pair (low, high), got {aspect_range!r}") from None
    if not 0 < lo <= hi:
        raise InputError(f"aspect_range must satisfy 0 < low <= high, got ({lo}, {hi})")
    return lo, hi


def _box(h, w, rng, area_fraction, aspect_range):
    """Random axis-aligned box of about ``area_fraction`` of the image, aspect (w/h) log-uniform."""
    a_lo, a_hi = aspect_range
    aspect = math.exp(rng.uniform(math.log(a_lo), math.log(a_hi)))
    area = area_fraction * h * w
    bw = math.sqrt(area * aspect)
    bw = min(bw, w)  # cannot be wider than the image ...
    bh = area / bw
    if bh > h:  # ... nor taller: give the excess back to the width
        bh = h
        bw = min(w, area / h)
    bw, bh = max(1, int(round(bw))), max(1, int(round(bh)))
    x = int(rng.integers(0, w - bw + 1))
    y = int(rng.integers(0, h - bh + 1))
    return x, y, bw, bh


def rectangle(
    height: int,
    width: int,
    rng: np.random.Generator,
    *,
    hole_range=(0.1, 0.5),
    aspect_range=(0.5, 2.0),
    max_tries: int = 20,
) -> np.ndarray:
    """One filled rectangle, ``(H, W)`` float32, 1 = hole.

    The hole ratio is drawn uniformly in ``hole_range``, the aspect ratio (width / height)
    log-uniformly in ``aspect_range`` (clamped so the box fits), the position uniformly.
    """
    h, w = check_size(height, width)
    check_rng(rng)
    lo, hi = check_hole_range(hole_range) or (0.0, 1.0)
    aspect = _check_aspect(aspect_range)

    def draw():
        mask = np.zeros((h, w), np.float32)
        x, y, bw, bh = _box(h, w, rng, rng.uniform(lo, hi), aspect)
        mask[y:y + bh, x:x + bw] = 1.0
        return mask

    return rejection_sample(draw, (lo, hi), max_tries=max_tries, what="rectangle")


def rectangle_complement(
    height: int,
    width: int,
    rng: np.random.Generator,
    *,
    hole_range=(0.25, 0.75),
    aspect_range=(0.5, 2.0),
    max_tries: int = 20,
) -> np.ndarray:
    """Hole everywhere *outside* one rectangle (the kept region), ``(H, W)`` float32, 1 = hole.

    The hole ratio is drawn uniformly in ``hole_range``; the kept rectangle covers the rest,
    with aspect ratio log-uniform in ``aspect_range`` and a uniform position.
    """
    h, w = check_size(height, width)
    check_rng(rng)
    lo, hi = check_hole_range(hole_range) or (0.0, 1.0)
    aspect = _check_aspect(aspect_range)

    def draw():
        mask = np.ones((h, w), np.float32)
        x, y, bw, bh = _box(h, w, rng, 1.0 - rng.uniform(lo, hi), aspect)
        mask[y:y + bh, x:x + bw] = 0.0
        return mask

    return rejection_sample(draw, (lo, hi), max_tries=max_tries, what="rectangle-complement")
