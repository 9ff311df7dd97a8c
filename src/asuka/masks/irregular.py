"""Irregular masks: LaMa's random strokes and Co-Mod-GAN / MAT free-form masks.

Both are re-implemented from the published descriptions of those generators, drawn with
OpenCV, in this package's polarity: 1 = hole (Co-Mod and MAT themselves use 0 = hole).
Published pixel parameters are for 512 x 512; at other sizes every length (stroke length and
width, box size, margin) is multiplied by ``min(height, width) / 512`` while counts stay the
same, so the hole-ratio distribution is (nearly) independent of the size.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from asuka.errors import InputError
from asuka.masks._common import (
    check_hole_range,
    check_rng,
    check_size,
    rejection_sample,
    size_scale,
)

# --------------------------------------------------------------------------------------------
# LaMa (Suvorov et al. 2022) random irregular masks
# --------------------------------------------------------------------------------------------

#: LaMa's evaluation presets at 512 px. ``box_proba`` is the weight of a box mask relative to
#: the stroke mask (weight 1): LaMa's mixed generator draws *one* kind per mask with
#: probabilities normalised over the weights, i.e. boxes with probability 0.3 / 1.3.
#: ``hole_range``: LaMa's evaluation set rejects masks covering more than half the image.
LAMA_PRESETS: dict[str, dict] = {
    "thin": dict(min_times=4, max_times=70, max_width=20, max_len=100, max_angle=4,
                 box_proba=0.0, hole_range=(0.0, 0.5)),
    "medium": dict(min_times=4, max_times=10, max_width=100, max_len=200, max_angle=4,
                   box_proba=0.3, box_min_size=30, box_max_size=150, box_min_times=1,
                   box_max_times=5, box_margin=0, hole_range=(0.0, 0.5)),
    "thick": dict(min_times=1, max_times=5, max_width=250, max_len=450, max_angle=4,
                  box_proba=0.3, box_min_size=30, box_max_size=300, box_min_times=1,
                  box_max_times=4, box_margin=10, hole_range=(0.0, 0.5)),
}


def _lama_strokes(h, w, rng, *, min_times, max_times, max_width, max_len, max_angle, scale):
    mask = np.zeros((h, w), np.float32)
    max_len_px = max(1, int(round(max_len * scale)))
    max_width_px = max(1, int(round(max_width * scale)))
    base_len, base_width = 10 * scale, max(1.0, 5 * scale)
    n_strokes = int(rng.integers(min_times, max_times + 1))
    # all random numbers at once (thin masks have up to 350 segments; scalar draws dominate)
    starts = rng.integers((0, 0), (w, h), size=(n_strokes, 2))
    n_segments = 1 + rng.integers(5, size=n_strokes)
    total = int(n_segments.sum())
    # LaMa's angle is an integer number of radians (+0.01), mirrored for even strokes.
    angles = 0.01 + rng.integers(max_angle, size=total)
    stroke_of = np.repeat(np.arange(n_strokes), n_segments)
    angles = np.where(stroke_of % 2 == 0, 2 * math.pi - angles, angles)
    lengths = base_len + rng.integers(max_len_px, size=total)
    widths = np.maximum(1, np.round(base_width + rng.integers(max_width_px, size=total))).astype(int)
    dx, dy = lengths * np.sin(angles), lengths * np.cos(angles)
    k = 0
    for i in range(n_strokes):
        x, y = int(starts[i, 0]), int(starts[i, 1])
        for _ in range(int(n_segments[i])):
            x2 = int(min(max(x + dx[k], 0), w))  # LaMa truncates after clipping
            y2 = int(min(max(y + dy[k], 0), h))
            cv2.line(mask, (x, y), (x2, y2), 1.0, int(widths[k]))
            x, y = x2, y2
            k += 1
    return mask


def _lama_boxes(h, w, rng, *, min_size, max_size, min_times, max_times, margin, scale):
    mask = np.zeros((h, w), np.float32)
    margin = int(round(margin * scale))
    lo = max(1, int(round(min_size * scale)))
    hi = min(int(round(max_size * scale)), h - 2 * margin, w - 2 * margin)
    if hi <= lo:
        raise InputError(
            f"lama boxes: image {h}x{w} too small for box sizes {min_size}-{max_size} (scaled "
            f"{lo}-{hi}) with margin {margin}"
        )
    for _ in range(int(rng.integers(min_times, max_times + 1))):
        bw, bh = int(rng.integers(lo, hi)), int(rng.integers(lo, hi))
        x = int(rng.integers(margin, w - margin - bw + 1))
        y = int(rng.integers(margin, h - margin - bh + 1))
        mask[y:y + bh, x:x + bw] = 1.0
    return mask


def lama_irregular(
    height: int,
    width: int,
    rng: np.random.Generator,
    *,
    preset: str = "medium",
    hole_range=...,
    max_tries: int = 100,
    **overrides,
) -> np.ndarray:
    """LaMa-style random thick strokes (optionally boxes instead), ``(H, W)`` float32, 1 = hole.

    ``preset`` is ``"thin"``, ``"medium"`` or ``"thick"`` (LaMa's evaluation settings at 512,
    see :data:`LAMA_PRESETS`); keyword ``overrides`` replace single parameters
    (``min_times, max_times, max_width, max_len, max_angle, box_proba, box_min_size,
    box_max_size, box_min_times, box_max_times, box_margin``), always in 512-px units.
    Each stroke: 1-5 segments, angle ``0.01 + randint(max_angle)`` (mirrored for even strokes),
    length ``10 + randint(max_len)``, width ``5 + randint(max_width)``.
    Masks whose hole ratio is outside ``hole_range`` (default: the preset's, ``(0, 0.5)``;
    ``None`` = accept any non-empty mask) are redrawn, at most ``max_tries`` times.
    """
    h, w = check_size(height, width)
    check_rng(rng)
    if preset not in LAMA_PRESETS:
        raise InputError(f"unknown LaMa preset {preset!r}; expected one of {sorted(LAMA_PRESETS)}")
    p = dict(LAMA_PRESETS[preset])
    unknown = set(overrides) - set(LAMA_PRESETS["thick"])
    if unknown:
        raise InputError(f"unknown LaMa parameter(s) {sorted(unknown)}; expected some of {sorted(LAMA_PRESETS['thick'])}")
    p.update(overrides)
    hr = check_hole_range(p.pop("hole_range") if hole_range is ... else hole_range)
    scale = size_scale(h, w)
    box_p = float(p.get("box_proba", 0.0))
    stroke_kw = {k: p[k] for k in ("min_times", "max_times", "max_width", "max_len", "max_angle")}
    if min(stroke_kw["max_width"], stroke_kw["max_len"], stroke_kw["max_angle"]) < 1 or \
            not 0 <= stroke_kw["min_times"] <= stroke_kw["max_times"]:
        raise InputError(f"LaMa parameters out of range: {stroke_kw}")

    def draw():
        if box_p > 0 and rng.random() < box_p / (1.0 + box_p):
            return _lama_boxes(h, w, rng, min_size=p["box_min_size"], max_size=p["box_max_size"],
                               min_times=p["box_min_times"], max_times=p["box_max_times"],
                               margin=p["box_margin"], scale=scale)
        return _lama_strokes(h, w, rng, scale=scale, **stroke_kw)

    return rejection_sample(draw, hr, max_tries=max_tries, what=f"lama-{preset}")


# --------------------------------------------------------------------------------------------
# Co-Mod-GAN (Zhao et al. 2021) / MAT (Li et al. 2022) free-form masks
# --------------------------------------------------------------------------------------------

#: ``(A, B, C)``: at most ``A*coef`` rectangles of side < s/2, ``B*coef`` of side < s and
#: ``C*coef`` brush strokes, with ``coef = min(low + high, 1)`` of the hole range.
FREE_FORM_PRESETS: dict[str, tuple[int, int, int]] = {
    "comod": (10, 5, 20),
    "mat-large": (5, 3, 9),
    "mat-small": (3, 2, 4),
}


def _brush_strokes(h, w, rng, max_tries, min_width, max_width):
    mask = np.zeros((h, w), np.uint8)
    mean_angle, angle_range = 2 * math.pi / 5, 2 * math.pi / 15
    radius = math.sqrt(h * h + w * w) / 8  # mean step length
    for _ in range(int(rng.integers(max(1, max_tries)))):
        n_vertex = int(rng.integers(4, 18))
        a_min = mean_angle - rng.uniform(0, angle_range)
        a_max = mean_angle + rng.uniform(0, angle_range)
        angles = rng.uniform(a_min, a_max, n_vertex)
        angles[0::2] = 2 * math.pi - angles[0::2]  # zig-zag: alternate turning direction
        steps = np.clip(rng.normal(radius, radius // 2, n_vertex), 0, 2 * radius)
        pts = np.empty((n_vertex + 1, 2), np.float64)
        pts[0] = rng.integers(0, w), rng.integers(0, h)
        for i in range(n_vertex):  # clipping each step makes the walk sequential
            pts[i + 1, 0] = min(max(pts[i, 0] + steps[i] * math.cos(angles[i]), 0), w)
            pts[i + 1, 1] = min(max(pts[i, 1] + steps[i] * math.sin(angles[i]), 0), h)
        pts = pts.astype(np.int32)
        stroke_w = max(1, int(rng.uniform(min_width, max_width)))
        cv2.polylines(mask, [pts], False, 1, thickness=stroke_w)
        for x, y in pts:  # round joints, as the original draws a disc at every vertex
            cv2.circle(mask, (int(x), int(y)), stroke_w // 2, 1, -1)
    if rng.random() > 0.5:
        mask = mask[::-1]
    if rng.random() > 0.5:
        mask = mask[:, ::-1]
    return mask


def _random_rects(mask, rng, max_tries, max_h, max_w):
    h, w = mask.shape
    for _ in range(int(rng.integers(max(1, max_tries)))):
        rw, rh = int(rng.integers(max(1, max_w))), int(rng.integers(max(1, max_h)))
        # a rectangle may stick out of the image by up to half its size, then it is clipped
        x = int(rng.integers(-(rw // 2), w - rw + rw // 2))
        y = int(rng.integers(-(rh // 2), h - rh + rh // 2))
        mask[max(y, 0):min(y + rh, h), max(x, 0):min(x + rw, w)] = 1


def free_form(
    height: int,
    width: int,
    rng: np.random.Generator,
    *,
    preset: str = "comod",
    counts: tuple[int, int, int] | None = None,
    hole_range=(0.0, 1.0),
    min_width: float = 12,
    max_width: float = 48,
    max_tries: int = 100,
) -> np.ndarray:
    """Co-Mod-GAN / MAT ``RandomMask``-style free-form mask, ``(H, W)`` float32, 1 = hole.

    ``preset``: ``"comod"`` (10, 5, 20), ``"mat-large"`` (5, 3, 9) or ``"mat-small"`` (3, 2, 4),
    or explicit ``counts=(A, B, C)``. With ``coef = min(low + high, 1)`` of ``hole_range``:
    up to ``A*coef`` random rectangles of sides < s/2, up to ``B*coef`` of sides < s (per axis
    for non-square images), union up to ``C*coef`` brush strokes (4-17 vertices, step
    ~ N(r, r/2) clipped to [0, 2r] with r = sqrt(H^2 + W^2) / 8, zig-zag angles around 2 pi / 5,
    width U(min_width, max_width) in 512-px units, discs at the vertices, random flips).
    Redrawn until the hole ratio is inside ``hole_range`` (at most ``max_tries`` draws).
    """
    h, w = check_size(height, width)
    check_rng(rng)
    label = f"free-form {preset}" if counts is None else f"free-form {tuple(counts)}"
    if counts is None:
        if preset not in FREE_FORM_PRESETS:
            raise InputError(f"unknown free-form preset {preset!r}; expected one of {sorted(FREE_FORM_PRESETS)}")
        counts = FREE_FORM_PRESETS[preset]
    if len(counts) != 3 or min(counts) < 0:
        raise InputError(f"free-form counts must be three non-negative integers (A, B, C), got {counts!r}")
    hr = check_hole_range(hole_range)
    coef = min(hr[0] + hr[1], 1.0) if hr is not None else 1.0
    a, b, c = (int(n * coef) for n in counts)
    scale = size_scale(h, w)
    wmin, wmax = max(1.0, min_width * scale), max(1.0, max_width * scale)
    if wmax < wmin:
        raise InputError(f"free-form stroke widths need min_width <= max_width, got {min_width}, {max_width}")

    def draw():
        mask = np.zeros((h, w), np.uint8)
        _random_rects(mask, rng, a, h // 2, w // 2)
        _random_rects(mask, rng, b, h, w)
        mask |= _brush_strokes(h, w, rng, c, wmin, wmax)
        return mask.astype(np.float32)

    return rejection_sample(draw, hr, max_tries=max_tries, what=label)
