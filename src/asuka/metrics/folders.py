"""Evaluate folders of predictions against ground truth and masks (what ``asuka evaluate`` runs).

Files are matched by stem (``0007.png`` in ``--pred`` with ``0007.jpg`` in ``--gt``); masks may
also carry MISATO's 1024-px ``00`` prefix (``000007.png``). Every problem found before any
network runs -- missing or extra files, unreadable files, size mismatches -- is reported at
once as one :class:`~asuka.errors.InputError` naming the files.

Masks are white (>= 50%) = hole, as in MISATO, LaMa and SD. They must be binary: a mask with
more than 1% of its pixels between 32 and 223 (i.e. more than 1/8 of the range away from both
black and white) is refused, since thresholding a soft or resized mask silently changes the
hole. The 1% tolerance admits JPEG-compressed binary masks (ringing at the edges: about 0.03%
of such pixels at quality 75, 0.8% at quality 50); a bilinearly resized mask (2-4%) is refused.
A mask holding only the values 0 and 1 (a 0/1 array saved as 8-bit) is refused too: read as
0..255 it would have no hole.

The loader streams (images are decoded by DataLoader workers, batch by batch, and dropped after
:meth:`InpaintingEvaluator.update`), so memory does not grow with the number of images except
for the evaluator's features (16 KiB per image).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from torch.utils.data import DataLoader, Dataset

from asuka.errors import InputError
from asuka.io import find_images, load_image, mask_from_pil, open_image
from asuka.metrics.evaluator import EvaluationReport, InpaintingEvaluator

#: MISATO's domains in index order: file NNNN belongs to MISATO_DOMAINS[NNNN // 500].
MISATO_DOMAINS = ("outdoor landscape", "indoor", "building", "background")
MISATO_DOMAIN_SIZE = 500
MISATO_MASK_PREFIX = "00"  # the 1024-px masks are named 00NNNN.png
# A mask pixel is "ambiguous" between AMBIGUOUS_LOW and AMBIGUOUS_HIGH (0..255 scale).
AMBIGUOUS_LOW, AMBIGUOUS_HIGH = 32, 223
MAX_AMBIGUOUS_FRACTION = 0.01
_MAX_LISTED = 10


@dataclass(frozen=True)
class Triplet:
    """One image to evaluate: its name (the stem) and the three files."""

    name: str
    pred: Path
    gt: Path
    mask: Path


def _listing(items, limit: int = _MAX_LISTED) -> str:
    items = sorted(items)
    return ", ".join(items[:limit]) + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def misato_domains(names) -> dict[str, str] | None:
    """name -> MISATO domain when every name is a 4-digit MISATO index (0000-1999), else None."""
    names = list(names)
    if not names or not all(re.fullmatch(r"\d{4}", n) and int(n) < len(MISATO_DOMAINS) * MISATO_DOMAIN_SIZE
                            for n in names):
        return None
    return {n: MISATO_DOMAINS[int(n) // MISATO_DOMAIN_SIZE] for n in names}


def match_folders(pred_dir, gt_dir, mask_dir) -> list[Triplet]:
    """Match the image files of three folders by stem (sorted by name).

    Raises :class:`InputError` naming the stems missing from, or extra in, any folder.
    """
    for what, d in (("--pred", pred_dir), ("--gt", gt_dir), ("--mask", mask_dir)):
        if not Path(d).is_dir():
            raise InputError(f"{what}: directory not found: {d}")
    preds = find_images(pred_dir, what="prediction")
    gts = find_images(gt_dir, what="ground-truth")
    masks = find_images(mask_dir, what="mask")
    if not gts:
        raise InputError(f"no image files in the ground-truth directory {gt_dir}")
    mask_of = {}
    for stem in gts:
        if stem in masks:
            mask_of[stem] = stem
        elif MISATO_MASK_PREFIX + stem in masks:
            mask_of[stem] = MISATO_MASK_PREFIX + stem
    problems = []
    if set(gts) - set(preds):
        problems.append(f"{len(set(gts) - set(preds))} ground-truth image(s) have no prediction in {pred_dir}: "
                        f"{_listing(set(gts) - set(preds))}")
    if set(preds) - set(gts):
        problems.append(f"{len(set(preds) - set(gts))} prediction(s) have no ground truth in {gt_dir}: "
                        f"{_listing(set(preds) - set(gts))}")
    if set(gts) - set(mask_of):
        problems.append(f"{len(set(gts) - set(mask_of))} ground-truth image(s) have no mask in {mask_dir}: "
                        f"{_listing(set(gts) - set(mask_of))}")
    if set(masks) - set(mask_of.values()):
        problems.append(f"{len(set(masks) - set(mask_of.values()))} mask(s) match no ground-truth image: "
                        f"{_listing(set(masks) - set(mask_of.values()))}")
    if problems:
        raise InputError("prediction, ground-truth and mask folders do not match (files are matched by "
                         f"name without extension; counts: {len(preds)} predictions, {len(gts)} ground "
                         f"truths, {len(masks)} masks): " + "; ".join(problems))
    return [Triplet(s, preds[s], gts[s], masks[mask_of[s]]) for s in sorted(gts)]


def _header_size(path: Path) -> tuple[int, int]:
    """(width, height) after the EXIF orientation, from the file header only."""
    with PIL.Image.open(path) as img:
        w, h = img.size
        orientation = img.getexif().get(0x0112, 1)
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def check_files(triplets: list[Triplet]) -> None:
    """Read every header: unreadable files and size mismatches -> one :class:`InputError`."""
    problems = []
    for t in triplets:
        sizes = {}
        for kind, path in (("pred", t.pred), ("gt", t.gt), ("mask", t.mask)):
            try:
                sizes[kind] = _header_size(path)
            except (OSError, ValueError, SyntaxError, PIL.UnidentifiedImageError) as exc:
                problems.append(f"cannot read {path}: {exc}")
        if len(sizes) == 3 and len(set(sizes.values())) > 1:
            problems.append(f"{t.name}: sizes differ (width x height): " + ", ".join(
                f"{kind} {w}x{h} ({p.name})" for (kind, (w, h)), p in zip(sizes.items(), (t.pred, t.gt, t.mask))))
    if problems:
        listed = "; ".join(problems[:_MAX_LISTED])
        more = f"; ... ({len(problems) - _MAX_LISTED} more)" if len(problems) > _MAX_LISTED else ""
        raise InputError(f"{len(problems)} problem(s) with the input files: {listed}{more}")


def _mask_levels(img: PIL.Image.Image) -> np.ndarray:
    """The 0..255 values that :func:`asuka.io.mask_from_pil` thresholds (alpha or luminance)."""
    if img.mode == "P" or ("transparency" in img.info and img.mode in ("L", "RGB", "1")):
        img = img.convert("RGBA")
    if "A" in img.getbands():
        alpha = np.asarray(img.getchannel("A"))
        colour = np.asarray(img.convert("RGB")).reshape(-1, 3)
        if (colour == colour[0]).all() and not (alpha == alpha.flat[0]).all():
            return alpha
    if img.mode.startswith("I"):
        return np.clip(np.round(np.asarray(img, dtype=np.float64) / 257.0), 0, 255).astype(np.uint8)
    if img.mode == "F":
        return np.clip(np.asarray(img), 0, 255).astype(np.uint8)
    return np.asarray(img.convert("L"))


def read_mask(path: Path) -> np.ndarray:
    """Read an evaluation mask: ``(H, W)`` float32 in {0, 1}; refuse non-binary ones (module doc)."""
    img = open_image(path)
    levels = _mask_levels(img)
    ambiguous = float(((levels >= AMBIGUOUS_LOW) & (levels <= AMBIGUOUS_HIGH)).mean())
    if ambiguous > MAX_AMBIGUOUS_FRACTION:
        raise InputError(
            f"mask {path} is not binary: {ambiguous:.1%} of its pixels are between {AMBIGUOUS_LOW} and "
            f"{AMBIGUOUS_HIGH} (expected black = keep and white = hole; up to "
            f"{MAX_AMBIGUOUS_FRACTION:.0%} such pixels are tolerated as compression noise)")
    if levels.max() == 1:
        raise InputError(f"mask {path} holds only the values 0 and 1: save it as 0 = keep, 255 = hole")
    return mask_from_pil(img)


class TripletDataset(Dataset):
    """Decodes one triplet per item: ``pred``/``gt`` uint8 ``(3,H,W)``, ``mask`` uint8 ``(1,H,W)``
    in {0, 1}, ``name``. A bad file gives ``{"error": message}`` instead of raising, so that the
    message reaches the user intact from a DataLoader worker."""

    def __init__(self, triplets: list[Triplet]):
        self.triplets = list(triplets)

    def __len__(self) -> int:
        return len(self.triplets)

    def __getitem__(self, index: int) -> dict:
        t = self.triplets[index]
        try:
            pred = np.asarray(load_image(t.pred))
            gt = np.asarray(load_image(t.gt))
            mask = read_mask(t.mask)
        except InputError as exc:
            return {"name": t.name, "error": str(exc)}
        if pred.shape != gt.shape or mask.shape != gt.shape[:2]:
            return {"name": t.name, "error": f"{t.name}: sizes differ after decoding: pred {pred.shape[1]}x"
                    f"{pred.shape[0]}, gt {gt.shape[1]}x{gt.shape[0]}, mask {mask.shape[1]}x{mask.shape[0]}"}
        return {
            "name": t.name,
            "pred": torch.from_numpy(pred.copy()).permute(2, 0, 1),
            "gt": torch.from_numpy(gt.copy()).permute(2, 0, 1),
            "mask": torch.from_numpy(mask.astype(np.uint8))[None],
        }


def _as_list(batch: list) -> list:
    return batch  # images of different sizes cannot be stacked; runs are batched below


def _same_size_runs(items: list[dict]) -> list[list[dict]]:
    runs: list[list[dict]] = []
    for item in items:
        if runs and runs[-1][0]["gt"].shape == item["gt"].shape:
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


def check_output_dir(out_dir, input_dirs) -> Path:
    """Refuse an output directory that is one of the input directories or inside one."""
    out = Path(out_dir).resolve()
    for d in input_dirs:
        d = Path(d).resolve()
        if out == d or d in out.parents:
            raise InputError(f"output directory {out_dir} is (inside) the input directory {d}; "
                             "choose a directory outside the inputs (they are never written to)")
    if out.exists() and not out.is_dir():
        raise InputError(f"output path {out_dir} exists and is not a directory")
    return out


def evaluate_folders(pred_dir, gt_dir, mask_dir, *, evaluator: InpaintingEvaluator, batch_size: int = 16,
                     num_workers: int = 0, domains: bool = True, progress: bool = False,
                     triplets: list[Triplet] | None = None) -> EvaluationReport:
    """Evaluate the files of three folders with ``evaluator``; streams, never keeps images.

    domains: group the report by MISATO domain when every name is a MISATO index (0000-1999).
    triplets: the already checked result of :func:`match_folders` + :func:`check_files`
        (to validate inputs before loading networks); default: done here.
    """
    if batch_size < 1:
        raise InputError(f"batch size must be >= 1, got {batch_size}")
    if num_workers < 0:
        raise InputError(f"number of workers must be >= 0, got {num_workers}")
    if triplets is None:
        triplets = match_folders(pred_dir, gt_dir, mask_dir)
        check_files(triplets)
    group_of = (misato_domains(t.name for t in triplets) if domains else None) or {}
    loader = DataLoader(TripletDataset(triplets), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=_as_list, shuffle=False)
    if progress:
        from tqdm import tqdm

        loader = tqdm(loader, desc="evaluating", unit="batch")
    evaluator.reset()
    for items in loader:
        errors = [item["error"] for item in items if "error" in item]
        if errors:
            raise InputError("; ".join(errors))
        for run in _same_size_runs(items):
            pred = torch.stack([it["pred"] for it in run]).float() / 127.5 - 1
            gt = torch.stack([it["gt"] for it in run]).float() / 127.5 - 1
            mask = torch.stack([it["mask"] for it in run]).float()
            evaluator.update(pred, gt, mask, names=[it["name"] for it in run],
                             groups=[group_of.get(it["name"]) for it in run])
    report = evaluator.compute()
    report.settings.update({"pred": str(pred_dir), "gt": str(gt_dir), "mask": str(mask_dir),
                            "grouping": "MISATO domains" if group_of else None})
    return report
