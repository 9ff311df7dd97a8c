"""Object-shape masks: banks of object silhouettes and the generator that places them.

A :class:`ShapeBank` holds object outlines from

* a COCO-format instance annotation file (:meth:`ShapeBank.from_coco`: polygons and RLE, as
  in the paper, which uses COCO segments),
* a folder of binary shape images (:meth:`ShapeBank.from_folder`: white = object), or
* a synthetic bank (:meth:`ShapeBank.synthetic`: random smooth blobs and simple silhouettes
  built from ellipses and boxes -- people, animals, vehicles, trees, furniture). It stands in
  when no annotations are available; it is *not* the paper's mask distribution.

:func:`object_shape` draws a mask by placing randomly scaled and flipped objects.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from asuka.errors import InputError
from asuka.masks._common import check_hole_range, check_rng, check_size, hole_ratio, rejection_sample
from asuka.masks.coco import CocoAnnotations, fill_polygons, polygons_to_arrays, rle_decode

_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass(frozen=True, eq=False)
class Shape:
    """One object outline, stored at its native size.

    ``kind`` is ``"polygon"`` (``data``: list of ``(N, 2)`` (x, y) arrays relative to the
    bounding box origin), ``"bitmap"`` (``data``: ``(height, width)`` uint8 crop) or ``"rle"``
    (``data``: ``(rle_dict, (x0, y0))``, decoded when rendered, so large COCO files stay small in
    memory). ``area`` is the object's pixel area at native size.
    """

    kind: str
    data: object
    width: int
    height: int
    area: float

    @property
    def fill(self) -> float:
        """Fraction of the bounding box covered by the object."""
        return self.area / float(self.width * self.height)

    def render(self, scale: float) -> np.ndarray:
        """The object scaled by ``scale``: ``(round(height*scale), round(width*scale))`` uint8 {0,1}."""
        oh, ow = max(1, int(round(self.height * scale))), max(1, int(round(self.width * scale)))
        if self.kind == "polygon":
            return fill_polygons(self.data, oh, ow, scale=scale)
        if self.kind == "rle":
            rle, (x0, y0) = self.data
            bitmap = rle_decode(rle)[y0:y0 + self.height, x0:x0 + self.width]
        else:
            bitmap = self.data
        if (oh, ow) == bitmap.shape:
            return bitmap.copy()
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        return (cv2.resize(bitmap.astype(np.float32), (ow, oh), interpolation=interp) >= 0.5).astype(np.uint8)


def _bitmap_shape(bitmap: np.ndarray) -> Shape | None:
    ys, xs = np.nonzero(bitmap)
    if ys.size == 0:
        return None
    crop = np.ascontiguousarray(bitmap[ys.min():ys.max() + 1, xs.min():xs.max() + 1], dtype=np.uint8)
    return Shape("bitmap", crop, crop.shape[1], crop.shape[0], float(ys.size))


def _polygon_shape(polys: list[np.ndarray], area: float | None = None) -> Shape | None:
    pts = np.concatenate(polys)
    x0, y0 = np.floor(pts.min(0))
    x1, y1 = np.ceil(pts.max(0))
    w, h = int(x1 - x0), int(y1 - y0)
    if w < 1 or h < 1:
        return None
    rel = [p - (x0, y0) for p in polys]
    if area is None:  # shoelace; COCO files carry the rasterised area, others may not
        area = sum(0.5 * abs(np.dot(p[:, 0], np.roll(p[:, 1], 1)) - np.dot(p[:, 1], np.roll(p[:, 0], 1))) for p in rel)
    area = min(float(area), float(w * h))
    if area <= 0:
        return None
    return Shape("polygon", rel, w, h, area)


class ShapeBank(Sequence):
    """An indexable collection of :class:`Shape` objects with a ``name`` for manifests."""

    def __init__(self, shapes: Sequence[Shape], *, name: str):
        self.shapes = list(shapes)
        self.name = name
        if not self.shapes:
            raise InputError(f"shape bank {name!r} is empty: no usable object shapes")

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, index):
        return self.shapes[index]

    def __repr__(self) -> str:
        return f"ShapeBank({self.name!r}, {len(self)} shapes)"

    # ---------------------------------------------------------------- constructors
    @classmethod
    def from_coco(
        cls,
        annotations: str | os.PathLike | CocoAnnotations,
        *,
        min_area: float = 1024.0,
        include_crowd: bool = False,
        category_ids: Sequence[int] | None = None,
    ) -> "ShapeBank":
        """Object shapes from a COCO instances file (polygon or RLE segmentations).

        ``min_area`` drops tiny objects (their outlines are too coarse to scale up; 1024 px is
        COCO's small/medium boundary); crowd regions are skipped unless ``include_crowd``;
        ``category_ids`` keeps only those categories.
        """
        coco = annotations if isinstance(annotations, CocoAnnotations) else CocoAnnotations.load(annotations)
        cats = None if category_ids is None else set(category_ids)
        shapes = []
        for ann in coco.annotations:
            if ann.get("iscrowd", 0) and not include_crowd:
                continue
            if cats is not None and ann.get("category_id") not in cats:
                continue
            if ann["image_id"] not in coco.images:
                raise InputError(f"{coco.source}: annotation {ann.get('id')} refers to unknown image_id {ann['image_id']}")
            seg = ann["segmentation"]
            area = ann.get("area")
            if area is not None and area < min_area:
                continue
            if isinstance(seg, dict):
                h, w = coco.image_size(ann["image_id"])
                if list(seg.get("size", [])) != [h, w]:
                    raise InputError(f"{coco.source}: RLE size {seg.get('size')} of annotation {ann.get('id')} "
                                     f"does not match its image size [{h}, {w}]")
                full = rle_decode(seg)
                ys, xs = np.nonzero(full)
                if ys.size < max(1, min_area):
                    continue
                x0, y0 = int(xs.min()), int(ys.min())
                shapes.append(Shape("rle", (seg, (x0, y0)), int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1,
                                    float(ys.size)))
            else:
                shape = _polygon_shape(polygons_to_arrays(seg), area)
                if shape is not None and shape.area >= min_area:
                    shapes.append(shape)
        if not shapes:
            raise InputError(f"{coco.source}: no object annotations with area >= {min_area} "
                             f"(of {len(coco.annotations)} annotations; crowd included: {include_crowd})")
        return cls(shapes, name=f"coco:{os.path.basename(coco.source)}")

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, *, threshold: int = 127, invert: bool = False,
                    min_area: int = 64) -> "ShapeBank":
        """Object shapes from binary images in ``folder`` (white, i.e. > ``threshold``, = object;
        ``invert=True`` for black objects). Images are converted to grayscale; each image is one
        shape, cropped to its bounding box."""
        from PIL import Image

        folder = os.fspath(folder)
        if not os.path.isdir(folder):
            raise InputError(f"shape folder not found: {folder}")
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith(_IMAGE_EXTS))
        if not files:
            raise InputError(f"shape folder {folder} has no images (expected {', '.join(_IMAGE_EXTS)})")
        shapes = []
        for f in files:
            with Image.open(os.path.join(folder, f)) as im:
                gray = np.asarray(im.convert("L"))
            bitmap = (gray <= threshold) if invert else (gray > threshold)
            if bitmap.sum() < min_area or bitmap.all():
                continue  # empty or all-object images carry no outline
            shapes.append(_bitmap_shape(bitmap.astype(np.uint8)))
        if not shapes:
            raise InputError(f"shape folder {folder}: none of {len(files)} images has an object of >= {min_area} "
                             f"pixels that does not fill the whole image (white = object, threshold {threshold})")
        return cls(shapes, name=f"folder:{os.path.basename(os.path.normpath(folder))}")

    @classmethod
    def synthetic(cls, n: int = 256, seed: int = 0) -> "ShapeBank":
        """A fixed bank of ``n`` synthetic object shapes (cached): half smooth random blobs
        (polygons), half silhouettes of people, animals, vehicles, trees and furniture made of
        ellipses and boxes (bitmaps at 128 px). A stand-in for COCO segments, not a copy of them."""
        return _synthetic_bank(int(n), int(seed))

    @classmethod
    def load(cls, source) -> "ShapeBank":
        """``None`` -> synthetic bank; a bank -> itself; a ``.json`` path -> COCO; a folder -> images."""
        if source is None:
            return cls.synthetic()
        if isinstance(source, ShapeBank):
            return source
        path = os.fspath(source)
        if os.path.isdir(path):
            return cls.from_folder(path)
        if path.lower().endswith(".json"):
            return cls.from_coco(path)
        raise InputError(f"shapes must be a COCO .json file or a folder of shape images, got {path!r}"
                         + ("" if os.path.exists(path) else " (does not exist)"))


# ------------------------------------------------------------------------------ synthetic bank


def _blob(rng) -> Shape:
    """Star-convex smooth blob: radius 1 + low-frequency Fourier terms, stretched and rotated."""
    theta = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    r = np.ones_like(theta)
    for k in range(2, 7):
        r += rng.uniform(0, 0.35 / k ** 0.7) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    r = np.clip(r, 0.25, None)
    pts = np.stack([r * np.cos(theta), r * np.sin(theta)], 1) * (rng.uniform(0.5, 1.0), 1.0)
    a = rng.uniform(0, np.pi)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    pts = pts @ rot.T * 64
    return _polygon_shape([pts - pts.min(0)])


def _silhouette(kind: str, rng) -> Shape:
    c = np.zeros((192, 192), np.uint8)
    j = lambda v, s=0.15: v * rng.uniform(1 - s, 1 + s)  # noqa: E731 - jitter a proportion

    def ell(cx, cy, ax, ay, ang=0.0):
        cv2.ellipse(c, (int(cx), int(cy)), (max(1, int(ax)), max(1, int(ay))), ang, 0, 360, 1, -1)

    def box(x0, y0, x1, y1):
        cv2.rectangle(c, (int(x0), int(y0)), (int(x1), int(y1)), 1, -1)

    if kind == "person":
        ell(96, j(30), j(12), j(14))  # head
        ell(96, j(75), j(22), j(38))  # torso
        spread = j(10, 0.5)
        for s in (-1, 1):
            ell(96 + s * j(28), j(80), j(6), j(30), s * spread)  # arms
            ell(96 + s * j(10), j(140), j(8), j(40), -s * spread / 2)  # legs
    elif kind == "animal":
        ell(90, 95, j(50), j(24))  # body
        ell(j(150), j(75), j(18), j(14), j(20))  # head
        for x in (55, 70, 110, 125):
            box(x - 5, 100, x + 5, j(150))  # legs
        ell(j(44), j(82), j(16), 4, j(-30))  # tail
    elif kind == "vehicle":
        box(20, j(80), 172, j(125))  # body
        box(j(55), j(50), j(135), 90)  # cabin
        for x in (j(50), j(142)):
            ell(x, 125, j(17), j(17))  # wheels
    elif kind == "tree":
        box(90, 110, j(104), 185)  # trunk
        for _ in range(5):
            ell(j(97, 0.3), j(70, 0.3), j(32), j(30))  # crown
    else:  # furniture: a chair or table
        box(40, j(90), 152, j(105))  # seat / top
        for x in (45, 140):
            box(x, 100, x + 8, 175)  # legs
        if rng.random() < 0.5:
            box(40, j(20), 52, 100)  # back rest
    return _bitmap_shape(c)


@functools.lru_cache(maxsize=4)
def _synthetic_bank(n: int, seed: int) -> ShapeBank:
    if n < 1:
        raise InputError(f"synthetic shape bank size must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    kinds = ("person", "animal", "vehicle", "tree", "furniture")
    shapes = [_blob(rng) if i % 2 == 0 else _silhouette(kinds[(i // 2) % len(kinds)], rng) for i in range(n)]
    return ShapeBank(shapes, name=f"synthetic:{n}:{seed}")


# ------------------------------------------------------------------------------ generator


def object_shape(
    height: int,
    width: int,
    rng: np.random.Generator,
    *,
    shapes: ShapeBank | None = None,
    hole_range=(0.1, 0.5),
    max_objects: int = 3,
    max_extent: float = 1.0,
    hflip_prob: float = 0.5,
    vflip_prob: float = 0.0,
    base: np.ndarray | None = None,
    max_tries: int = 20,
) -> np.ndarray:
    """Object-shape mask, ``(H, W)`` float32, 1 = hole (the objects).

    A target hole ratio ``t`` is drawn uniformly in ``hole_range`` (above the ratio of
    ``base``, if given: the objects are added onto that mask). Then objects from ``shapes``
    (default: the synthetic bank) are picked uniformly, flipped (horizontally with
    ``hflip_prob``, vertically with ``vflip_prob``), scaled so that each adds the area still
    missing to ``t`` -- but never larger than ``max_extent`` times the image side -- and placed
    uniformly inside the image, until the ratio reaches the low end of ``hole_range`` or
    ``max_objects`` objects are placed. Draws outside ``hole_range`` are redrawn.
    """
    h, w = check_size(height, width)
    check_rng(rng)
    bank = ShapeBank.synthetic() if shapes is None else shapes
    if not isinstance(bank, ShapeBank):
        raise InputError(f"shapes must be a ShapeBank (from_coco / from_folder / synthetic), got {type(bank).__name__}")
    lo, hi = check_hole_range(hole_range) or (0.0, 1.0)
    if base is not None and np.shape(base) != (h, w):
        raise InputError(f"base mask must have shape ({h}, {w}), got {np.shape(base)}")
    if max_objects < 1 or not 0 < max_extent <= 1:
        raise InputError(f"need max_objects >= 1 and 0 < max_extent <= 1, got {max_objects}, {max_extent}")

    def draw():
        mask = np.zeros((h, w), np.uint8) if base is None else (np.asarray(base) > 0.5).astype(np.uint8)
        ratio = hole_ratio(mask)
        target = rng.uniform(max(lo, ratio), hi) if ratio < hi else ratio
        for _ in range(max_objects):
            missing = (target - ratio) * h * w
            if missing < 1:
                break
            shape = bank[int(rng.integers(len(bank)))]
            scale = math.sqrt(missing / shape.area)
            scale = min(scale, max_extent * w / shape.width, max_extent * h / shape.height)
            obj = shape.render(scale)
            if rng.random() < hflip_prob:
                obj = obj[:, ::-1]
            if rng.random() < vflip_prob:
                obj = obj[::-1]
            oh, ow = min(obj.shape[0], h), min(obj.shape[1], w)
            y, x = int(rng.integers(0, h - oh + 1)), int(rng.integers(0, w - ow + 1))
            mask[y:y + oh, x:x + ow] |= obj[:oh, :ow]
            ratio = hole_ratio(mask)
            if ratio >= lo:
                break
        return mask.astype(np.float32)

    return rejection_sample(draw, (lo, hi), max_tries=max_tries, what=f"object shapes ({bank.name})")
