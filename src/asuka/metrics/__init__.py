"""Inpainting metrics: LPIPS, FID, U-IDS/P-IDS, PSNR, SSIM, boundary gradient, boundary colour
shift and seed variance.

Everything is computed on the composite ``pred * m + gt * (1 - m)`` with ``m = mask >= 0.5``
(:func:`composite`). Images are ``(B,3,H,W)`` tensors in [-1, 1], masks ``(B,1,H,W)`` with
1 = hole.

Quick use::

    from asuka.metrics import InpaintingEvaluator, load_feature_extractor, load_lpips
    ev = InpaintingEvaluator(feature_extractor=load_feature_extractor("tf2015"), lpips_model=load_lpips())
    for pred, gt, mask in batches:
        ev.update(pred, gt, mask)
    report = ev.compute()        # report.overall["fid"], report.format_table(), report.write(dir)

or, for folders of files, :func:`evaluate_folders` (what ``asuka evaluate`` runs).
"""

from asuka.metrics.composite import composite
from asuka.metrics.distribution import (
    feature_statistics,
    fid_from_features,
    frechet_distance,
    inception_discriminative_scores,
)
from asuka.metrics.evaluator import EvaluationReport, InpaintingEvaluator
from asuka.metrics.features import (
    FeatureExtractor,
    TF2015Inception,
    TorchvisionInception,
    find_tf2015_inception,
    load_feature_extractor,
    tf_legacy_bilinear_resize,
)
from asuka.metrics.folders import MISATO_DOMAINS, evaluate_folders, match_folders, misato_domains
from asuka.metrics.perceptual import load_lpips, lpips_distance
from asuka.metrics.pixel import (
    band_color_error,
    boundary_color_shift,
    boundary_gradient,
    hole_psnr,
    pixel_metrics,
    psnr,
    seed_variance,
    ssim,
)

__all__ = [
    "composite",
    "psnr",
    "hole_psnr",
    "band_color_error",
    "ssim",
    "boundary_gradient",
    "boundary_color_shift",
    "seed_variance",
    "pixel_metrics",
    "load_lpips",
    "lpips_distance",
    "FeatureExtractor",
    "TF2015Inception",
    "TorchvisionInception",
    "find_tf2015_inception",
    "load_feature_extractor",
    "tf_legacy_bilinear_resize",
    "feature_statistics",
    "frechet_distance",
    "fid_from_features",
    "inception_discriminative_scores",
    "InpaintingEvaluator",
    "EvaluationReport",
    "evaluate_folders",
    "match_folders",
    "misato_domains",
    "MISATO_DOMAINS",
]
