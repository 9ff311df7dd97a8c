"""Helpers shared by the mask generators: argument checks, size scaling, seeding, rejection."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from asuka.errors import InputError

#: Published generator parameters (LaMa, Co-Mod-GAN, MAT) are given for 512 x 512 images.
REFERENCE_SIZE = 512


class HoleRangeError(InputError):
    """No draw of a generator had a hole ratio inside the requested range."""


def check_size(height, width) -> tuple[int, int]:
    """Return ``(height, width)`` as ints, or raise :class:`InputError` unless both are >= 8."""
    try:
        h, w = int(height), int(width)
    except (TypeError, ValueError):
        raise InputError(f"mask size must be two integers, got height={height!r}, width={width!r}") from None
    if h != height or w != width or h < 8 or w < 8:
        raise InputError(f"mask size must be integers >= 8, got height={height!r}, width={width!r}")
    return h, w


def check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise InputError(
            f"rng must be a numpy.random.Generator (e.g. numpy.random.default_rng(seed)), "
            f"got {type(rng).__name__}"
        )
    return rng


def check_hole_range(hole_range, what: str = "hole_range") -> tuple[float, float] | None:
    """``None`` or a pair ``0 <= lo < hi <= 1`` (hole-pixel fractions)."""
    if hole_range is None:
        return None
    try:
        lo, hi = (float(v) for v in hole_range)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a pair (low, high) of fractions, got {hole_range!r}") from None
    if not 0.0 <= lo < hi <= 1.0:
        raise InputError(f"{what} must satisfy 0 <= low < high <= 1, got ({lo}, {hi})")
    return lo, hi


def size_scale(height: int, width: int) -> float:
    """Factor applied to the published pixel lengths (strokes, widths, boxes) at other sizes.

    Lengths scale with the *shorter* side relative to 512, so a mask drawn at 256 x 256 looks
    like the 512 x 512 mask downsampled by 2 (same hole-ratio distribution); counts of strokes
    and boxes are not scaled.
    """
    return min(height, width) / REFERENCE_SIZE


def hole_ratio(mask: np.ndarray) -> float:
    """Fraction of hole pixels of a ``{0, 1}`` mask."""
    return float(np.count_nonzero(mask)) / mask.size


def in_range(ratio: float, hole_range: tuple[float, float] | None) -> bool:
    """Inclusive range check; an empty mask is never accepted (it has nothing to inpaint)."""
    if ratio <= 0.0:
        return False
    return hole_range is None or hole_range[0] <= ratio <= hole_range[1]


def rejection_sample(
    draw: Callable[[], np.ndarray],
    hole_range: tuple[float, float] | None,
    *,
    max_tries: int,
    what: str,
) -> np.ndarray:
    """Call ``draw()`` until its hole ratio is inside ``hole_range`` (Co-Mod's ``RandomMask`` loop).

    Raises :class:`HoleRangeError` after ``max_tries`` draws, naming the ratios seen, instead of
    looping forever on an unreachable range.
    """
    seen = []
    for _ in range(max(1, int(max_tries))):
        mask = draw()
        ratio = hole_ratio(mask)
        if in_range(ratio, hole_range):
            return mask
        seen.append(ratio)
    raise HoleRangeError(
        f"{what}: no mask with hole ratio in {hole_range} after {len(seen)} draws "
        f"(ratios seen: min {min(seen):.3f}, max {max(seen):.3f}); widen hole_range or change the "
        f"generator parameters"
    )


def rng_for(seed: int, *keys: int) -> np.random.Generator:
    """Independent generator for item ``keys`` of a run seeded with ``seed``.

    ``rng_for(seed, i)`` is the ``i``-th child of ``numpy.random.SeedSequence(seed).spawn(...)``,
    so mask ``i`` of a run depends only on ``(seed, i)``: runs can be resumed, sharded or
    extended, and a training loader can use ``rng_for(seed, epoch, index)``.
    """
    try:
        seq = np.random.SeedSequence(int(seed), spawn_key=tuple(int(k) for k in keys))
    except (TypeError, ValueError):
        raise InputError(f"seed and keys must be non-negative integers, got seed={seed!r}, keys={keys!r}") from None
    return np.random.default_rng(seq)
