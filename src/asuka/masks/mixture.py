"""Weighted mixtures of mask generators, and the paper's training / MISATO evaluation mixes.

ASUKA's training masks (paper, MAE fine-tuning; the alignment module uses the same masks):
50 % object shapes (COCO segments), half of them combined with an irregular mask;
40 % irregular (Co-Mod-GAN and LaMa generators); 10 % regular (a rectangle, or the complement
of a rectangle); hole ratio in [0.1, 0.75]. For the MAE the mask is then *enlarged to 75 %*
with random extra regions: every patch (token) that touches the hole is masked and random
further patches are masked until 75 % of the 16 x 16 token grid is (MAE-FAR's recipe); that is
:attr:`MaskDraw.enlarged`, while :attr:`MaskDraw.mask` stays the hole the model must fill.
MISATO's evaluation masks are the same mix without the rectangle types, ratio in [0.2, 0.8].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from asuka.errors import InputError
from asuka.masks._common import (
    HoleRangeError,
    check_hole_range,
    check_rng,
    check_size,
    hole_ratio,
)
from asuka.masks.irregular import free_form, lama_irregular
from asuka.masks.regular import rectangle, rectangle_complement
from asuka.masks.shapes import ShapeBank, object_shape

#: name -> (function, fixed keyword arguments). Every function is
#: ``f(height, width, rng, *, hole_range=..., **params) -> (H, W) float32, 1 = hole``.
_REGISTRY: dict[str, tuple[Callable, dict]] = {
    "lama-thin": (lama_irregular, {"preset": "thin"}),
    "lama-medium": (lama_irregular, {"preset": "medium"}),
    "lama-thick": (lama_irregular, {"preset": "thick"}),
    "comod": (free_form, {"preset": "comod"}),
    "mat-large": (free_form, {"preset": "mat-large"}),
    "mat-small": (free_form, {"preset": "mat-small"}),
    "object": (object_shape, {}),
    "rectangle": (rectangle, {}),
    "rectangle-complement": (rectangle_complement, {}),
}

GENERATOR_NAMES: tuple[str, ...] = tuple(_REGISTRY)
MIXTURE_NAMES: tuple[str, ...] = ("paper-train", "misato-eval")


def get_generator(name: str) -> Callable[..., np.ndarray]:
    """The seeded generator ``f(height, width, rng, **params)`` registered under ``name``."""
    if name not in _REGISTRY:
        raise InputError(f"unknown mask generator {name!r}; expected one of {', '.join(GENERATOR_NAMES)}")
    fn, fixed = _REGISTRY[name]

    def generate(height, width, rng, **params):
        return fn(height, width, rng, **{**fixed, **params})

    generate.__name__ = name.replace("-", "_")
    generate.__doc__ = fn.__doc__
    return generate


@dataclass
class MaskDraw:
    """One sampled mask and how it was made.

    ``mask``: ``(H, W)`` float32 in {0, 1}, 1 = hole. ``generator``: registry name (``"a+b"``
    when generator ``a`` was drawn on top of ``b``). ``params``: JSON-friendly parameters.
    ``ratio``: hole fraction of ``mask``. ``enlarged``: ``mask`` plus random extra grid cells
    so that at least ``target_ratio`` of the cells touch a hole (``None`` unless the mixture
    has a ``target_ratio``); for MAE training, the cells are the ViT patches.
    """

    mask: np.ndarray
    generator: str
    params: dict
    ratio: float
    enlarged: np.ndarray | None = None

    def to_json(self) -> dict:
        return {"generator": self.generator, "params": _jsonable(self.params), "ratio": round(self.ratio, 6)}


def _jsonable(x):
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float):
        # 12 significant digits: 0.8 - 0.2 is written 0.6, not 0.6000000000000001
        return float(f"{x:.12g}")
    return x


@dataclass(frozen=True)
class Component:
    """One entry of a :class:`MaskMixture`.

    ``generator``: registry name; ``weight``: relative probability; ``params``: extra keyword
    arguments for the generator (JSON-friendly); ``overlay``: components of which one (by
    weight) is drawn first, and this component's mask is added on top of it (only for
    ``"object"``, whose generator accepts a ``base`` mask).
    """

    generator: str
    weight: float
    params: Mapping = field(default_factory=dict)
    overlay: tuple["Component", ...] = ()


def _pick(cum: np.ndarray, rng) -> int:
    """Index drawn with probabilities proportional to the weights behind ``cum``."""
    return int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))


def _cumulative(components: Sequence[Component]) -> np.ndarray:
    w = np.array([c.weight for c in components], dtype=np.float64)
    if w.size == 0 or (w < 0).any() or w.sum() <= 0 or not np.isfinite(w).all():
        raise InputError(f"mixture weights must be non-negative with a positive sum, got {w.tolist()}")
    cum = np.cumsum(w)
    cum[-1] = max(cum[-1], np.nextafter(cum[-1], np.inf))  # searchsorted never runs off the end
    return cum


def _grid_edges(n: int, cells: int) -> np.ndarray:
    return np.round(np.linspace(0, n, cells + 1)).astype(np.int64)


def enlarge_to_ratio(mask: np.ndarray, target_ratio: float, rng: np.random.Generator,
                     grid: int | tuple[int, int] = 16) -> np.ndarray:
    """Add random grid cells to ``mask`` until ``target_ratio`` of the cells touch a hole.

    ``mask``: ``(H, W)`` in {0, 1}; ``grid``: cells per side (or ``(rows, cols)``) -- 16 for a
    ViT-B/16 on 256 px, so cells are exactly the MAE tokens. Returns ``(H, W)`` float32: the
    original hole plus the added cells (cells that already touch the hole are not filled in).
    If the hole already touches more cells than the target, nothing is added.
    """
    check_rng(rng)
    m = np.asarray(mask)
    if m.ndim != 2:
        raise InputError(f"mask must be 2-D (H, W), got shape {m.shape}")
    gh, gw = (grid, grid) if np.isscalar(grid) else tuple(grid)
    h, w = m.shape
    if not (1 <= gh <= h and 1 <= gw <= w):
        raise InputError(f"grid {gh}x{gw} does not fit a {h}x{w} mask")
    if not 0.0 <= target_ratio <= 1.0:
        raise InputError(f"target_ratio must be in [0, 1], got {target_ratio}")
    ys, xs = _grid_edges(h, gh), _grid_edges(w, gw)
    hole = (m > 0.5)
    touched = np.logical_or.reduceat(np.logical_or.reduceat(hole, xs[:-1], axis=1), ys[:-1], axis=0)
    need = math.ceil(target_ratio * gh * gw - 1e-9) - int(touched.sum())
    extra = np.zeros((gh, gw), bool)
    if need > 0:
        free = np.flatnonzero(~touched)
        extra.flat[rng.choice(free, size=need, replace=False)] = True
    extra_px = np.repeat(np.repeat(extra, np.diff(ys), axis=0), np.diff(xs), axis=1)
    return (hole | extra_px).astype(np.float32)


def _force_into_range(mask: np.ndarray, lo: float, hi: float, rng) -> np.ndarray:
    """Last resort when a generator cannot reach the range: add random ellipses (too small)
    or cut random rectangles out of the hole (too large) until the ratio is in [lo, hi]."""
    h, w = mask.shape
    mask = (mask > 0.5).astype(np.uint8)
    for _ in range(200):
        ratio = hole_ratio(mask)
        if lo <= ratio <= hi and ratio > 0:
            break
        gap = (lo - ratio) if ratio < lo else (ratio - hi)
        # aim a bit past the bound, but never further than the middle of the range
        area = max(4.0, min(gap + 0.25 * (hi - lo), 0.5 * (hi - lo) + gap) * h * w)
        aspect = math.exp(rng.uniform(-0.7, 0.7))
        ax = max(1, int(math.sqrt(area * aspect / math.pi)))
        ay = max(1, int(math.sqrt(area / aspect / math.pi)))
        cx, cy = int(rng.integers(w)), int(rng.integers(h))
        if ratio < lo:
            cv2.ellipse(mask, (cx, cy), (ax, ay), float(rng.uniform(0, 180)), 0, 360, 1, -1)
        else:
            bw, bh = min(w, int(math.sqrt(area * aspect))), min(h, int(math.sqrt(area / aspect)))
            x, y = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
            mask[y:y + bh, x:x + bw] = 0
    return mask.astype(np.float32)


class MaskMixture:
    """Weighted mixture of mask generators with hole-ratio bounds.

    ``components``: :class:`Component` list; ``ratio_range``: ``(low, high)`` hole fraction every
    draw must satisfy (passed to each generator as ``hole_range``; ``None`` = each generator's
    own default); ``target_ratio`` / ``target_grid``: if set, each draw also gets
    :attr:`MaskDraw.enlarged` (see :func:`enlarge_to_ratio`); ``shapes``: :class:`ShapeBank`, a
    COCO ``.json`` / shape-folder path, or ``None`` for the synthetic bank (used by ``"object"``).
    A generator that cannot reach the range in ``max_tries`` draws is followed by a random
    adjustment (recorded as ``params["adjusted"] = True``; rare with the built-in mixes).
    """

    def __init__(
        self,
        components: Sequence[Component],
        *,
        ratio_range=None,
        target_ratio: float | None = None,
        target_grid: int | tuple[int, int] = 16,
        shapes=None,
        name: str = "custom",
        max_tries: int = 50,
    ):
        self.components = tuple(components)
        self._cum = _cumulative(self.components)
        for c in self.components:
            get_generator(c.generator)  # validates the name
            if c.overlay:
                if c.generator != "object":
                    raise InputError(f"only 'object' components can have an overlay, got {c.generator!r}")
                for o in c.overlay:
                    get_generator(o.generator)
                    if o.overlay:
                        raise InputError("overlay components cannot have overlays themselves")
        # aligned with self.components (not keyed by id(): the mixture is pickled into workers)
        self._overlay_cum = [_cumulative(c.overlay) if c.overlay else None for c in self.components]
        self.ratio_range = check_hole_range(ratio_range, "ratio_range")
        if target_ratio is not None and not 0 < target_ratio <= 1:
            raise InputError(f"target_ratio must be in (0, 1], got {target_ratio}")
        self.target_ratio = target_ratio
        self.target_grid = target_grid
        self.name = name
        self.max_tries = int(max_tries)
        needs_shapes = any(c.generator == "object" for c in self.components)
        self.shapes = ShapeBank.load(shapes) if needs_shapes else None

    def __repr__(self) -> str:
        return f"MaskMixture({self.name!r}, ratio_range={self.ratio_range}, components={self.proportions()})"

    def proportions(self) -> dict[str, float]:
        """Probability of each drawn generator name (``"object+comod"`` etc. for overlays)."""
        total = float(sum(c.weight for c in self.components))
        out: dict[str, float] = {}
        for c in self.components:
            p = c.weight / total
            if c.overlay:
                ow = float(sum(o.weight for o in c.overlay))
                for o in c.overlay:
                    key = f"{c.generator}+{o.generator}"
                    out[key] = out.get(key, 0.0) + p * o.weight / ow
            else:
                out[c.generator] = out.get(c.generator, 0.0) + p
        return out

    def _run(self, comp: Component, h, w, rng, hole_range, **extra):
        params = dict(comp.params)
        if hole_range is not None:
            params["hole_range"] = hole_range
        call = dict(params, **extra)
        if comp.generator == "object":
            call["shapes"] = self.shapes
            params["shapes"] = self.shapes.name
        if "max_tries" not in call:
            call["max_tries"] = self.max_tries
        fn = get_generator(comp.generator)
        try:
            mask = fn(h, w, rng, **call)
        except HoleRangeError:
            if hole_range is None:
                raise
            call["hole_range"] = None  # any non-empty draw, then pushed into the range
            try:
                mask = fn(h, w, rng, **call)
            except HoleRangeError:
                mask = np.zeros((h, w), np.float32)
            mask = _force_into_range(mask, hole_range[0], hole_range[1], rng)
            params["adjusted"] = True
        return mask, {**_REGISTRY[comp.generator][1], **params}

    def sample(self, height: int, width: int, rng: np.random.Generator) -> MaskDraw:
        """Draw one mask ``(height, width)`` using only ``rng``."""
        h, w = check_size(height, width)
        check_rng(rng)
        k = _pick(self._cum, rng)
        comp, rr = self.components[k], self.ratio_range
        if comp.overlay:
            under = comp.overlay[_pick(self._overlay_cum[k], rng)]
            # leave room for the object: the under-mask covers at most (high - low)
            base, p_under = self._run(under, h, w, rng, None if rr is None else (0.0, rr[1] - rr[0]))
            mask, p_obj = self._run(comp, h, w, rng, rr, base=base)
            name, params = f"{comp.generator}+{under.generator}", {comp.generator: p_obj, under.generator: p_under}
        else:
            mask, params = self._run(comp, h, w, rng, rr)
            name = comp.generator
        enlarged = None
        if self.target_ratio is not None:
            enlarged = enlarge_to_ratio(mask, self.target_ratio, rng, self.target_grid)
        return MaskDraw(mask=mask, generator=name, params=params, ratio=hole_ratio(mask), enlarged=enlarged)

    __call__ = sample


_IRREGULAR = (
    Component("comod", 0.5),
    Component("lama-thin", 0.5 / 3),
    Component("lama-medium", 0.5 / 3),
    Component("lama-thick", 0.5 / 3),
)


def paper_train_mixture(shapes=None, *, target_ratio: float | None = 0.75, target_grid=16) -> MaskMixture:
    """ASUKA's training masks: 25 % object shapes, 25 % object shapes on an irregular mask,
    40 % irregular (half Co-Mod, half LaMa thin/medium/thick), 5 % rectangle, 5 % complement of
    a rectangle; hole ratio in [0.1, 0.75]; ``enlarged`` to ``target_ratio`` of the
    ``target_grid`` cells (MAE tokens) -- pass ``target_ratio=None`` to skip that."""
    comps = [
        Component("object", 0.25),
        Component("object", 0.25, overlay=_IRREGULAR),
        *(Component(c.generator, 0.4 * c.weight) for c in _IRREGULAR),
        Component("rectangle", 0.05),
        Component("rectangle-complement", 0.05),
    ]
    return MaskMixture(comps, ratio_range=(0.1, 0.75), target_ratio=target_ratio, target_grid=target_grid,
                       shapes=shapes, name="paper-train")


def misato_eval_mixture(shapes=None) -> MaskMixture:
    """MISATO's evaluation masks: the training mix without the rectangle types (object 5/9,
    half of it on an irregular mask; irregular 4/9), hole ratio in [0.2, 0.8]."""
    comps = [
        Component("object", 0.25),
        Component("object", 0.25, overlay=_IRREGULAR),
        *(Component(c.generator, 0.4 * c.weight) for c in _IRREGULAR),
    ]
    return MaskMixture(comps, ratio_range=(0.2, 0.8), shapes=shapes, name="misato-eval")


def get_mixture(name: str, shapes=None) -> MaskMixture:
    """``"paper-train"``, ``"misato-eval"`` or a single generator name (with its own defaults)."""
    if name == "paper-train":
        return paper_train_mixture(shapes)
    if name == "misato-eval":
        return misato_eval_mixture(shapes)
    if name in _REGISTRY:
        return MaskMixture([Component(name, 1.0)], shapes=shapes, name=name)
    raise InputError(f"unknown mask mix {name!r}; expected one of {', '.join(MIXTURE_NAMES + GENERATOR_NAMES)}")
