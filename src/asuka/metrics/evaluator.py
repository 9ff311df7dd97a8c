"""Streaming evaluation: feed batches, get every metric at the end.

:class:`InpaintingEvaluator` takes ``(pred, gt, mask)`` batches, computes the per-image
metrics (LPIPS, PSNR, SSIM, boundary gradient, boundary colour shift) at once and keeps only
those numbers and the Inception features of ``gt`` and of the composite (2 x 2048 float32 per
image, 16 KiB) -- never the images. :meth:`InpaintingEvaluator.compute` then adds FID and
U-IDS/P-IDS, overall and per group (e.g. MISATO's four domains).
"""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.linalg
import torch

from asuka.errors import InputError
from asuka.metrics.composite import check_images, composite, hole
from asuka.metrics.distribution import fid_from_features, inception_discriminative_scores
from asuka.metrics.perceptual import lpips_distance
from asuka.metrics.pixel import pixel_metrics

#: Per-image metrics, in report order.
PER_IMAGE_METRICS = ("lpips", "psnr", "ssim", "boundary_grad", "color_shift")
#: Report columns: key, header, format. ``n`` first, distribution metrics next.
COLUMNS = (
    ("n", "n", "{:d}"),
    ("fid", "FID", "{:.2f}"),
    ("u_ids", "U-IDS", "{:.4f}"),
    ("p_ids", "P-IDS", "{:.4f}"),
    ("lpips", "LPIPS", "{:.4f}"),
    ("psnr", "PSNR", "{:.2f}"),
    ("ssim", "SSIM", "{:.4f}"),
    ("boundary_grad", "Grad", "{:.3f}"),
    ("color_shift", "dE00 shift", "{:.3f}"),
)
METRIC_DESCRIPTIONS = {
    "fid": "Frechet Inception distance (lower is better)",
    "u_ids": "unpaired Inception discriminative score, SVM misclassification rate (0.5 best)",
    "p_ids": "paired Inception discriminative score (0.5 best)",
    "lpips": "LPIPS AlexNet v0.1 (lower is better)",
    "psnr": "PSNR in dB on [0, 1] (higher is better)",
    "ssim": "SSIM of grayscale images (higher is better)",
    "boundary_grad": "Sobel gradient error along the mask edge, 0..255 scale (lower is better)",
    "color_shift": "CIEDE2000 jump across the hole boundary minus the ground truth's (0 best)",
}


@dataclass
class EvaluationReport:
    """Result of an evaluation.

    overall: metric -> value (``None`` when not computed) and ``n``;
    groups: group name -> the same dict for that group's images (empty when ungrouped);
    per_image: one dict per image (``name``, ``group``, ``hole_ratio`` and per-image metrics);
    settings: how it was computed; notes: caveats (skipped metrics and why).
    """

    overall: dict
    groups: dict = field(default_factory=dict)
    per_image: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def rows(self) -> list[tuple[str, dict]]:
        """``("all", overall)`` followed by one row per group."""
        return [("all", self.overall)] + list(self.groups.items())

    def _columns(self) -> list[tuple[str, str, str]]:
        return [c for c in COLUMNS if any(r.get(c[0]) is not None for _, r in self.rows())]

    @staticmethod
    def _cell(value, fmt: str) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return fmt.format(value)

    def _cells(self) -> tuple[list[str], list[list[str]]]:
        columns = self._columns()
        header = ["subset"] + [c[1] for c in columns]
        body = [[name] + [self._cell(row.get(key), fmt) for key, _, fmt in columns] for name, row in self.rows()]
        return header, body

    def format_table(self) -> str:
        """Plain-text table (one row for all images, one per group)."""
        header, body = self._cells()
        widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
        line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in body])

    def to_markdown(self) -> str:
        header, body = self._cells()
        out = ["# Inpainting evaluation", ""]
        out += ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in body]
        out += ["", "All metrics are computed on the composite pred * m + gt * (1 - m), m = mask >= 0.5.", ""]
        out += [f"- **{h}**: {METRIC_DESCRIPTIONS[k]}" for k, h, _ in self._columns() if k in METRIC_DESCRIPTIONS]
        if self.settings:
            out += ["", "Settings: " + ", ".join(f"{k} = {v}" for k, v in self.settings.items())]
        if self.notes:
            out += ["", "Notes:"] + [f"- {n}" for n in self.notes]
        return "\n".join(out) + "\n"

    def to_dict(self) -> dict:
        return {"overall": self.overall, "groups": self.groups, "settings": self.settings,
                "notes": self.notes, "per_image": self.per_image}

    def write(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """Write ``metrics.json`` (everything), ``per_image.csv`` and ``metrics.md`` into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / "metrics.json", "csv": out / "per_image.csv", "markdown": out / "metrics.md"}
        paths["json"].write_text(json.dumps(_json_safe(self.to_dict()), indent=2, allow_nan=False) + "\n")
        fields = ["name", "group", "hole_ratio"] + [m for m in PER_IMAGE_METRICS
                                                    if any(m in r for r in self.per_image)]
        with open(paths["csv"], "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.per_image)
        paths["markdown"].write_text(self.to_markdown())
        return paths


def _json_safe(value):
    """NaN/inf are not JSON: write them as null; numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _mean(values: list[float]) -> float | None:
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else None


class InpaintingEvaluator:
    """Accumulate inpainting metrics batch by batch; images are never kept.

    feature_extractor: images (B,3,H,W) in [-1, 1] -> (B, D) features, e.g.
        :func:`asuka.metrics.load_feature_extractor`; ``None`` skips FID and IDS.
    lpips_model: from :func:`asuka.metrics.load_lpips`; ``None`` skips LPIPS.
    ids: compute U-IDS/P-IDS (needs ``feature_extractor``).
    ids_pca_dim: the ASUKA release's PCA variant of IDS (e.g. 512); ``None``: Co-Mod-GAN's.
    pixel_metrics: PSNR, SSIM, boundary gradient and boundary colour shift.
    color_band: band width in pixels of :func:`asuka.metrics.boundary_color_shift`.
    psnr_eps: see :func:`asuka.metrics.psnr`.
    device: where the networks run; batches are moved there.
    workers: threads for the per-image CPU metrics (default: up to 8, one per core).
    seed: PCA's random state (the only random step).
    """

    def __init__(self, *, feature_extractor: torch.nn.Module | None = None,
                 lpips_model: torch.nn.Module | None = None, ids: bool = True,
                 ids_pca_dim: int | None = None, pixel_metrics: bool = True, color_band: int = 4,
                 psnr_eps: float = 1e-7, device: str | torch.device = "cpu", seed: int = 0,
                 workers: int | None = None):
        if ids_pca_dim is not None and ids_pca_dim < 1:
            raise InputError(f"ids_pca_dim must be a positive number of dimensions, got {ids_pca_dim}")
        if color_band < 1:
            raise InputError(f"color_band must be >= 1 pixel, got {color_band}")
        self.device = torch.device(device)
        self.feature_extractor = feature_extractor.eval().to(self.device) if feature_extractor is not None else None
        self.lpips_model = lpips_model.eval().to(self.device) if lpips_model is not None else None
        self.ids = ids and feature_extractor is not None
        self.ids_pca_dim = ids_pca_dim
        self.pixel_metrics = pixel_metrics
        self.color_band = color_band
        self.psnr_eps = psnr_eps
        self.seed = seed
        self.workers = workers if workers is not None else min(8, os.cpu_count() or 1)
        self.reset()

    def reset(self) -> None:
        self._rows: list[dict] = []
        self._real: list[np.ndarray] = []
        self._fake: list[np.ndarray] = []

    @property
    def num_images(self) -> int:
        return len(self._rows)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, *,
               names: Sequence[str] | None = None, groups: Sequence[str | None] | None = None) -> list[dict]:
        """Add a batch. pred, gt: ``(B,3,H,W)`` in [-1, 1]; mask: ``(B,1,H,W)``, 1 = hole.

        names, groups: one per image (default: running index, no group). Returns the batch's
        per-image rows.
        """
        check_images(pred, gt, mask)
        b = pred.shape[0]
        names = list(names) if names is not None else [str(self.num_images + i) for i in range(b)]
        groups = list(groups) if groups is not None else [None] * b
        if len(names) != b or len(groups) != b:
            raise InputError(f"update: {b} images but {len(names)} names and {len(groups)} groups")
        pred, gt, mask = (t.to(self.device, torch.float32) for t in (pred, gt, mask))

        rows = [{"name": str(n), "group": g, "hole_ratio": float(r)}
                for n, g, r in zip(names, groups, hole(mask).float().flatten(1).mean(1).tolist())]
        columns: dict[str, list[float]] = {}
        if self.lpips_model is not None:
            columns["lpips"] = lpips_distance(self.lpips_model, pred, gt, mask).tolist()
        if self.pixel_metrics:
            for key, values in pixel_metrics(pred, gt, mask, band=self.color_band, psnr_eps=self.psnr_eps,
                                             workers=self.workers).items():
                columns[key] = values.tolist()
        for key, values in columns.items():
            for row, v in zip(rows, values):
                row[key] = v
        if self.feature_extractor is not None:
            feats = self.feature_extractor(torch.cat([gt, composite(pred, gt, mask)]))
            if feats.ndim != 2 or feats.shape[0] != 2 * b:
                raise InputError(f"feature extractor returned shape {tuple(feats.shape)}, "
                                 f"expected ({2 * b}, D) for {2 * b} images")
            feats = feats.float().cpu().numpy()
            self._real.append(feats[:b])
            self._fake.append(feats[b:])
        self._rows.extend(rows)
        return rows

    def _distribution_metrics(self, real: np.ndarray, fake: np.ndarray, label: str,
                              notes: list[str]) -> dict:
        out = {"fid": None, "u_ids": None, "p_ids": None}
        n, dim = real.shape
        if n < 2:
            notes.append(f"{label}: FID/IDS need at least 2 images, got {n}")
            return out
        if n <= dim:
            notes.append(f"{label}: FID from {n} images of {dim}-d features (singular covariances); "
                         "not comparable with FIDs over more images than dimensions")
        try:
            with warnings.catch_warnings():  # scipy warns about the singular case noted above
                warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
                out["fid"] = fid_from_features(real, fake)
        except ValueError as exc:  # a complex square root: far too few images for the feature size
            notes.append(f"{label}: FID not computed ({exc})")
        if self.ids:
            svm_dim = self.ids_pca_dim or dim
            # with no more samples than dimensions a linear SVM separates any two sets:
            # U-IDS would be 0 whatever the method, so it is not reported
            if 2 * n <= svm_dim:
                notes.append(f"{label}: IDS not computed: {2 * n} samples for {svm_dim} SVM dimensions "
                             "(needs more samples than dimensions)")
            else:
                with warnings.catch_warnings():  # liblinear may stop at max_iter, as in the reference
                    warnings.simplefilter("ignore")
                    out["u_ids"], out["p_ids"] = inception_discriminative_scores(
                        real, fake, pca_dim=self.ids_pca_dim, seed=self.seed)
        return out

    def _summary(self, index: list[int], label: str, real, fake, notes: list[str]) -> dict:
        rows = [self._rows[i] for i in index]
        summary: dict = {"n": len(rows)}
        if real is not None:
            summary.update(self._distribution_metrics(real[index], fake[index], label, notes))
        for key in PER_IMAGE_METRICS:
            if any(key in r for r in rows):
                summary[key] = _mean([r.get(key) for r in rows])
        return summary

    def compute(self) -> EvaluationReport:
        """Overall and per-group metrics from everything added so far."""
        if not self._rows:
            raise InputError("no images were evaluated")
        notes: list[str] = []
        real = np.concatenate(self._real) if self._real else None
        fake = np.concatenate(self._fake) if self._fake else None
        overall = self._summary(list(range(len(self._rows))), "all", real, fake, notes)
        groups: dict[str, dict] = {}
        group_index: dict[str, list[int]] = {}
        for i, r in enumerate(self._rows):
            if r["group"] is not None:
                group_index.setdefault(r["group"], []).append(i)
        for name, index in group_index.items():
            groups[name] = self._summary(index, name, real, fake, notes)
        nan_shift = sum(1 for r in self._rows if "color_shift" in r and not math.isfinite(r["color_shift"]))
        if nan_shift:
            notes.append(f"color shift undefined for {nan_shift} image(s) with an empty or full mask "
                         "(left out of the means)")
        settings = {
            "features": getattr(self.feature_extractor, "name", type(self.feature_extractor).__name__)
            if self.feature_extractor is not None else None,
            "ids_pca_dim": self.ids_pca_dim,
            "lpips": "alex v0.1" if self.lpips_model is not None else None,
            "color_band_px": self.color_band if self.pixel_metrics else None,
        }
        return EvaluationReport(overall=overall, groups=groups, per_image=list(self._rows),
                                settings=settings, notes=notes)
