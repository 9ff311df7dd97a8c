"""Per-image metrics that need no network weights.

All take ``pred``, ``gt`` as ``(B,3,H,W)`` tensors in [-1, 1] and ``mask`` as ``(B,1,H,W)``
(1 = hole, binarised at 0.5), evaluate the composite ``pred * m + gt * (1 - m)`` and return a
float64 tensor ``(B,)`` on the CPU, one value per image.

* :func:`psnr`, :func:`ssim` -- the ASUKA release's conventions (PSNR on [0, 1] with a 1e-7
  guard; SSIM of grayscale images through scikit-image).
* :func:`boundary_gradient` -- the release's mask-boundary gradient error (``cal_grad.py``).
* :func:`boundary_color_shift` -- CIEDE2000 colour jump across the hole boundary, relative to
  the ground truth's own jump (the "visual consistency" ASUKA's decoder targets).
* :func:`hole_psnr` -- PSNR over the hole pixels only (the known pixels are exact in the
  composite, so the whole-image PSNR mostly measures the hole ratio).
* :func:`band_color_error` -- CIEDE2000 between the fill and the ground truth in the band just
  inside the hole (colour cast / seam where the fill meets its surroundings).
* :func:`seed_variance` -- how much the fill changes across random seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import torch
from scipy import ndimage
from skimage.color import deltaE_ciede2000, rgb2lab
from skimage.metrics import structural_similarity

from asuka.errors import InputError
from asuka.metrics.composite import check_images, composite, hole, to_unit


def _hole_numpy(mask: torch.Tensor) -> np.ndarray:
    """``(B,1,H,W)`` mask -> bool array ``(B,H,W)``, True in the hole."""
    return hole(mask)[:, 0].cpu().numpy()


def _unit_hwc(images: torch.Tensor) -> np.ndarray:
    """``(B,3,H,W)`` in [-1, 1] -> float64 ``(B,H,W,3)`` in [0, 1]."""
    return to_unit(images.double()).permute(0, 2, 3, 1).cpu().numpy()


# Grayscale weights of torchvision's rgb_to_grayscale (and TF's), which the release used for SSIM.
_GRAY = np.array([0.2989, 0.587, 0.114])


def _ssim_one(fake: np.ndarray, real: np.ndarray, _hole: np.ndarray | None = None) -> float:
    return float(structural_similarity(fake @ _GRAY, real @ _GRAY, data_range=1.0))


def _gradient_one(fake: np.ndarray, real: np.ndarray, m: np.ndarray) -> float:
    edges = cv2.Canny(m.astype(np.uint8) * 255, 100, 200) > 0
    if not edges.any():
        return 0.0
    fake, real = fake * 255.0, real * 255.0  # the release works on the 0..255 scale
    per_channel = []
    for c in range(3):
        dx = cv2.Sobel(fake[..., c], cv2.CV_64F, 1, 0, ksize=3) - cv2.Sobel(real[..., c], cv2.CV_64F, 1, 0, ksize=3)
        dy = cv2.Sobel(fake[..., c], cv2.CV_64F, 0, 1, ksize=3) - cv2.Sobel(real[..., c], cv2.CV_64F, 0, 1, ksize=3)
        per_channel.append(np.sqrt(dx**2 + dy**2)[edges].mean())
    return float(np.mean(per_channel))


def _color_shift_one(fake: np.ndarray, real: np.ndarray, m: np.ndarray, band: int) -> float:
    if not m.any() or m.all():
        return float("nan")
    # distance of each hole pixel to the nearest known pixel, and that pixel's coordinates
    dist, nearest = ndimage.distance_transform_edt(m, return_indices=True)
    inner = np.nonzero(m & (dist <= band))
    outer = (nearest[0][inner], nearest[1][inner])
    # convert only the pixels involved: Lab of a whole 512x512 image costs 10x more
    idx = (np.concatenate([inner[0], outer[0]]), np.concatenate([inner[1], outer[1]]))
    n = len(inner[0])
    lab_f, lab_r = rgb2lab(fake[idx]), rgb2lab(real[idx])
    return float(deltaE_ciede2000(lab_f[:n], lab_f[n:]).mean() - deltaE_ciede2000(lab_r[:n], lab_r[n:]).mean())


def _band_pixels(m: np.ndarray, band: int):
    dist = ndimage.distance_transform_edt(m)
    return np.nonzero(m & (dist <= band))


def _band_error_one(fake: np.ndarray, real: np.ndarray, m: np.ndarray, band: int) -> tuple[float, float]:
    if not m.any() or m.all():
        return float("nan"), float("nan")
    idx = _band_pixels(m, band)
    lab_f, lab_r = rgb2lab(fake[idx][None])[0], rgb2lab(real[idx][None])[0]
    per_pixel = float(deltaE_ciede2000(lab_f, lab_r).mean())
    cast = float(deltaE_ciede2000(lab_f.mean(0), lab_r.mean(0)))
    return per_pixel, cast


def band_color_error(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, *, band: int = 4,
                     reduce: str = "pixel", workers: int = 1) -> torch.Tensor:
    """Colour error of the fill in the band of hole pixels within ``band`` px (Euclidean) of a
    known pixel, in CIEDE2000 units (CIE Lab, D65, scikit-image), against ``gt``.

    ``reduce="pixel"``: the mean over the band of each pixel's CIEDE2000 to the ground truth;
    ``"mean"``: the CIEDE2000 between the band's mean Lab colours (a colour cast of the fill's
    edge, blind to texture). 0 when ``pred == gt``; NaN for a mask with no hole or no known pixel.
    """
    if band < 1:
        raise InputError(f"band_color_error: band must be >= 1 pixel, got {band}")
    if reduce not in ("pixel", "mean"):
        raise InputError(f"band_color_error: reduce must be 'pixel' or 'mean', got {reduce!r}")
    fake, real = _unit_hwc(composite(pred, gt, mask)), _unit_hwc(gt)
    k = 0 if reduce == "pixel" else 1
    return _per_image(lambda f, r, m: _band_error_one(f, r, m, band)[k], fake, real, _hole_numpy(mask),
                      workers=workers)


def hole_psnr(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, *, eps: float = 1e-7) -> torch.Tensor:
    """PSNR in dB on the [0, 1] scale over the hole pixels (all three channels) only:
    ``-10 log10(mse_hole + eps)``. NaN for an image without hole pixels."""
    check_images(pred, gt, mask)
    m = hole(mask).double()
    err = ((to_unit(pred.double()) - to_unit(gt.double())) ** 2 * m).flatten(1).sum(1)
    n = m.flatten(1).sum(1) * pred.shape[1]
    mse = torch.where(n > 0, err / n.clamp(min=1), torch.full_like(err, float("nan")))
    return (-10 * torch.log10(mse + eps)).cpu()


def _per_image(fn, fake, real, holes, *extra, workers: int = 1) -> torch.Tensor:
    args = [(f, r, m, *extra) for f, r, m in zip(fake, real, holes)]
    if workers > 1 and len(args) > 1:
        # cv2, scipy.ndimage and scikit-image's array code release the GIL: threads run in parallel
        with ThreadPoolExecutor(min(workers, len(args))) as pool:
            values = list(pool.map(lambda a: fn(*a), args))
    else:
        values = [fn(*a) for a in args]
    return torch.tensor(values, dtype=torch.float64)


def psnr(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, *, eps: float = 1e-7) -> torch.Tensor:
    """PSNR in dB of the composite against ``gt`` on the [0, 1] scale: ``-10 log10(mse + eps)``.

    The mean squared error runs over all pixels and channels of each image. ``eps = 1e-7``
    is the ASUKA release's guard (it caps identical images at 70 dB and changes the value by
    less than 0.001 dB for any mse above 1e-4); ``eps = 0`` gives scikit-image's
    ``peak_signal_noise_ratio(data_range=1)`` exactly (``inf`` for identical images).
    """
    fake = to_unit(composite(pred, gt, mask).double())
    real = to_unit(gt.double())
    mse = ((fake - real) ** 2).flatten(1).mean(1)
    return (-10 * torch.log10(mse + eps)).cpu()


def ssim(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, *, workers: int = 1) -> torch.Tensor:
    """SSIM of the grayscale composite against grayscale ``gt`` (the release's convention).

    Grayscale is 0.2989 R + 0.587 G + 0.114 B of [0, 1] images (torchvision's
    ``rgb_to_grayscale``), then ``skimage.metrics.structural_similarity(data_range=1)`` with
    its defaults (7x7 uniform window, sample covariance). Images must be at least 7x7.
    ``workers`` threads share the images of the batch.
    """
    if min(gt.shape[-2:]) < 7:
        raise InputError(f"ssim: images must be at least 7x7 pixels, got {gt.shape[-1]}x{gt.shape[-2]}")
    fake, real = _unit_hwc(composite(pred, gt, mask)), _unit_hwc(gt)
    return _per_image(_ssim_one, fake, real, _hole_numpy(mask), workers=workers)


def boundary_gradient(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, *,
                      workers: int = 1) -> torch.Tensor:
    """Mean Sobel-gradient error along the mask edge (the release's ``cal_grad.py``).

    Per colour channel, on the 0..255 scale: the 3x3 Sobel gradients (x and y) of the composite
    minus those of ``gt``; the magnitude of that difference averaged over the pixels that
    ``cv2.Canny(mask, 100, 200)`` marks as the mask's edge; then the mean over the three
    channels. 0 where the mask has no edge (empty or full mask), as in the release.
    Lower is better: a seam or a blurred boundary raises it.
    """
    fake, real = _unit_hwc(composite(pred, gt, mask)), _unit_hwc(gt)
    return _per_image(_gradient_one, fake, real, _hole_numpy(mask), workers=workers)


def boundary_color_shift(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, *,
                         band: int = 4, workers: int = 1) -> torch.Tensor:
    """Colour jump across the hole boundary, in CIEDE2000 units, relative to the ground truth.

    Every hole pixel within ``band`` pixels (Euclidean) of a known pixel is paired with its
    nearest known pixel, just outside the hole. The mean CIEDE2000 difference (CIE Lab,
    D65, via scikit-image) over these pairs is computed on the composite and on ``gt``; the
    result is composite minus ``gt``. 0 when ``pred == gt``; it grows when the fill's colour
    is shifted against its surroundings. It can be slightly negative (a fill smoother than
    the real texture at the edge). NaN for an image whose mask has no hole or no known pixel.
    """
    if band < 1:
        raise InputError(f"boundary_color_shift: band must be >= 1 pixel, got {band}")
    fake, real = _unit_hwc(composite(pred, gt, mask)), _unit_hwc(gt)
    return _per_image(_color_shift_one, fake, real, _hole_numpy(mask), band, workers=workers)


def pixel_metrics(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, *, band: int = 4,
                  psnr_eps: float = 1e-7, workers: int = 1) -> dict[str, torch.Tensor]:
    """PSNR, SSIM, boundary gradient and boundary colour shift of a batch in one pass.

    Same values as the four functions; the composite and the conversions are done once and the
    per-image work is shared by ``workers`` threads. Returns name -> ``(B,)`` float64.
    """
    if band < 1:
        raise InputError(f"boundary_color_shift: band must be >= 1 pixel, got {band}")
    if min(gt.shape[-2:]) < 7:
        raise InputError(f"ssim: images must be at least 7x7 pixels, got {gt.shape[-1]}x{gt.shape[-2]}")
    comp = composite(pred, gt, mask)
    fake, real, holes = _unit_hwc(comp), _unit_hwc(gt), _hole_numpy(mask)
    mse = ((fake - real) ** 2).reshape(len(fake), -1).mean(1)

    def one(f, r, m):
        return (_ssim_one(f, r), _gradient_one(f, r, m), _color_shift_one(f, r, m, band))

    if workers > 1 and len(fake) > 1:
        with ThreadPoolExecutor(min(workers, len(fake))) as pool:
            values = list(pool.map(one, fake, real, holes))
    else:
        values = [one(f, r, m) for f, r, m in zip(fake, real, holes)]
    values = torch.tensor(values, dtype=torch.float64).reshape(len(fake), 3)
    return {
        "psnr": -10 * torch.log10(torch.from_numpy(mse) + psnr_eps),
        "ssim": values[:, 0],
        "boundary_grad": values[:, 1],
        "color_shift": values[:, 2],
    }


def seed_variance(samples: torch.Tensor | Sequence[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """Per-pixel variance across seeds inside the hole, averaged over hole pixels and channels.

    samples: ``(S,B,3,H,W)`` tensor or a sequence of ``S >= 2`` tensors ``(B,3,H,W)`` in [-1, 1]
    (the same inputs inpainted with ``S`` different seeds); mask: ``(B,1,H,W)``, 1 = hole.
    The variance is the population variance (divisor ``S``) on the [0, 1] scale. Returns
    ``(B,)`` float64; 0 for identical runs, NaN for an image without a hole.
    """
    if not isinstance(samples, torch.Tensor):
        samples = torch.stack(list(samples))
    if samples.ndim != 5 or samples.shape[0] < 2:
        raise InputError(f"seed_variance: expected samples (S>=2, B, 3, H, W), got {tuple(samples.shape)}")
    for s in samples:
        check_images(s, s, mask)
    var = to_unit(samples).double().var(dim=0, correction=0).mean(1)  # (B,H,W)
    m = hole(mask)[:, 0]
    count = m.flatten(1).sum(1)
    total = (var * m).flatten(1).sum(1)
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan"))).cpu()
