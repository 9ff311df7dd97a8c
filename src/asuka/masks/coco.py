"""COCO-format instance annotations: polygon and RLE decoding, per-image object masks.

Implements the COCO mask formats without pycocotools:

* polygons: ``[[x1, y1, x2, y2, ...], ...]`` in pixel coordinates (pixel ``i`` spans
  ``[i, i+1)``), rasterised with OpenCV;
* uncompressed RLE: ``{"size": [h, w], "counts": [n0, n1, ...]}`` -- run lengths over the
  *column-major* flattened mask, starting with a run of zeros;
* compressed RLE: the same runs as a string (6-bit chunks offset by 48, runs after the second
  stored as differences to the run two before), as written by ``pycocotools.mask.encode``.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Mapping

import numpy as np

from asuka.errors import InputError

# --------------------------------------------------------------------------------------------
# RLE
# --------------------------------------------------------------------------------------------


def _counts_from_string(s: str) -> list[int]:
    counts: list[int] = []
    p, n = 0, len(s)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise InputError(f"corrupt compressed RLE string (truncated chunk at position {p})")
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)  # sign-extend
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def _counts_to_string(counts) -> str:
    out = []
    for i, c in enumerate(counts):
        x = int(c) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5  # arithmetic shift keeps the sign
            more = x != -1 if ch & 0x10 else x != 0
            if more:
                ch |= 0x20
            out.append(chr(ch + 48))
    return "".join(out)


def rle_decode(rle: Mapping) -> np.ndarray:
    """COCO RLE (compressed or not) -> ``(h, w)`` uint8 array in {0, 1}."""
    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError):
        raise InputError(f"RLE must be a dict with 'size' [h, w] and 'counts', got {str(rle)[:120]}") from None
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    if isinstance(counts, str):
        counts = _counts_from_string(counts)
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 1 or (counts < 0).any() or counts.sum() != h * w:
        raise InputError(
            f"RLE counts do not describe a {h}x{w} mask (they sum to {int(counts.sum()) if counts.ndim == 1 else '?'}, "
            f"expected {h * w}, all non-negative)"
        )
    values = (np.arange(len(counts)) % 2).astype(np.uint8)
    flat = np.repeat(values, counts)
    return np.ascontiguousarray(flat.reshape(w, h).T)


def rle_encode(mask: np.ndarray, *, compressed: bool = True) -> dict:
    """``(h, w)`` binary mask -> COCO RLE dict (``counts`` a string unless ``compressed=False``)."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise InputError(f"rle_encode expects a 2-D mask, got shape {m.shape}")
    flat = (m.T.reshape(-1) > 0).astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0] + counts  # runs start with zeros by convention
    h, w = m.shape
    return {"size": [h, w], "counts": _counts_to_string(counts) if compressed else counts}


# --------------------------------------------------------------------------------------------
# polygons
# --------------------------------------------------------------------------------------------


def polygons_to_arrays(polygons) -> list[np.ndarray]:
    """COCO polygon list -> list of ``(N, 2)`` float64 (x, y) arrays; checks the format."""
    if not isinstance(polygons, (list, tuple)) or not polygons:
        raise InputError(f"COCO polygons must be a non-empty list of [x1, y1, x2, y2, ...], got {str(polygons)[:80]}")
    out = []
    for poly in polygons:
        arr = np.asarray(poly, dtype=np.float64).reshape(-1)
        if arr.size < 6 or arr.size % 2:
            raise InputError(f"a COCO polygon needs an even number >= 6 of coordinates, got {arr.size}")
        out.append(arr.reshape(-1, 2))
    return out


def _parity_fill(poly: np.ndarray, height: int, width: int) -> np.ndarray:
    """Even-odd scanline fill of one ``(N, 2)`` polygon sampled at pixel centres, as bool."""
    x0, y0 = poly[:, 0], poly[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    ylo, yhi = np.minimum(y0, y1), np.maximum(y0, y1)
    # rows r whose centre r + 0.5 lies in [ylo, yhi) (half-open: a vertex is counted once)
    r0 = np.clip(np.ceil(ylo - 0.5), 0, height).astype(np.int64)
    r1 = np.clip(np.ceil(yhi - 0.5), 0, height).astype(np.int64)
    n = np.maximum(r1 - r0, 0)
    if n.sum() == 0:
        return np.zeros((height, width), bool)
    edge = np.repeat(np.arange(len(n)), n)
    rows = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n) + r0[edge]
    yc = rows + 0.5
    t = (yc - y0[edge]) / (y1[edge] - y0[edge])  # horizontal edges have n == 0
    xc = x0[edge] + t * (x1[edge] - x0[edge])
    # the crossing toggles "inside" from the first pixel whose centre is at or right of it
    cols = np.clip(np.ceil(xc - 0.5), 0, width).astype(np.int64)
    toggles = np.bincount(rows * (width + 1) + cols, minlength=height * (width + 1))
    # uint8 wrap-around keeps the parity and is several times faster than int64 at 512 px
    toggles = toggles.astype(np.uint8).reshape(height, width + 1)
    return (np.cumsum(toggles, axis=1, dtype=np.uint8)[:, :width] & 1).astype(bool)


def fill_polygons(polys: list[np.ndarray], height: int, width: int, *, scale: float = 1.0,
                  offset=(0.0, 0.0)) -> np.ndarray:
    """Rasterise ``(x, y)`` polygons into an ``(h, w)`` uint8 mask in {0, 1} (union of polygons).

    Coordinates are mapped by ``(p - offset) * scale``. Pixel ``i`` spans ``[i, i+1)`` (COCO's
    convention) and is set when its centre is inside (even-odd rule), so areas are unbiased:
    the square with corners 10 and 20 covers pixels 10..19. (OpenCV's ``fillPoly`` also fills
    the boundary pixels, which would grow every object by about a pixel all round.)
    """
    off = np.asarray(offset, dtype=np.float64)
    mask = np.zeros((height, width), bool)
    for p in polys:
        mask |= _parity_fill((np.asarray(p, np.float64) - off) * scale, height, width)
    return mask.astype(np.uint8)


def decode_segmentation(segmentation, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (polygons, RLE or compressed RLE) -> ``(h, w)`` uint8 mask."""
    if isinstance(segmentation, Mapping):
        mask = rle_decode(segmentation)
        if mask.shape != (height, width):
            raise InputError(f"RLE size {list(mask.shape)} does not match the image size [{height}, {width}]")
        return mask
    return fill_polygons(polygons_to_arrays(segmentation), height, width)


# --------------------------------------------------------------------------------------------
# annotation files
# --------------------------------------------------------------------------------------------


class CocoAnnotations:
    """A COCO instances file (``images`` + ``annotations``), indexed by image id and file name."""

    def __init__(self, data: Mapping, *, source: str = "<dict>"):
        self.source = source
        if not isinstance(data, Mapping) or "images" not in data or "annotations" not in data:
            raise InputError(
                f"{source}: not a COCO instances file (expected a JSON object with 'images' and "
                f"'annotations' lists)"
            )
        self.images: dict = {}
        self.by_file: dict = {}
        for img in data["images"]:
            try:
                iid, fname = img["id"], img["file_name"]
                int(img["height"]), int(img["width"])
            except (KeyError, TypeError, ValueError):
                raise InputError(f"{source}: image entry needs id, file_name, height, width; got {str(img)[:120]}") from None
            self.images[iid] = img
            self.by_file[os.path.basename(fname)] = img
        self.annotations = list(data["annotations"])
        self.by_image = defaultdict(list)
        for ann in self.annotations:
            if "image_id" not in ann or "segmentation" not in ann:
                raise InputError(f"{source}: annotation needs image_id and segmentation; got {str(ann)[:120]}")
            self.by_image[ann["image_id"]].append(ann)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CocoAnnotations":
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise InputError(f"COCO annotation file not found: {path}")
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: not valid JSON ({exc})") from None
        return cls(data, source=path)

    def image_size(self, image_id) -> tuple[int, int]:
        img = self.images[image_id]
        return int(img["height"]), int(img["width"])

    def annotation_mask(self, ann: Mapping) -> np.ndarray:
        """Full-image ``(h, w)`` uint8 mask of one annotation."""
        h, w = self.image_size(ann["image_id"])
        return decode_segmentation(ann["segmentation"], h, w)

    def objects_mask(self, file_name: str, *, include_crowd: bool = True) -> np.ndarray | None:
        """Union of all annotated objects of the image ``file_name`` (matched by base name),
        ``(h, w)`` uint8 in {0, 1}; ``None`` if the file is not listed in the annotations."""
        img = self.by_file.get(os.path.basename(file_name))
        if img is None:
            return None
        h, w = int(img["height"]), int(img["width"])
        mask = np.zeros((h, w), np.uint8)
        for ann in self.by_image.get(img["id"], ()):
            if ann.get("iscrowd", 0) and not include_crowd:
                continue
            mask |= decode_segmentation(ann["segmentation"], h, w)
        return mask
