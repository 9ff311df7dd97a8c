"""The composite every metric is computed on, and the input checks shared by all metrics.

Inpainting metrics compare the *composite* ``pred * m + gt * (1 - m)`` (``m = mask >= 0.5``)
with the ground truth, so pixels a method changed outside the hole never count for or
against it (the convention of Co-Mod-GAN, MAT, LaMa and the ASUKA release).
"""

from __future__ import annotations

import torch

from asuka.errors import InputError

# Images are nominally in [-1, 1]; allow rounding noise from conversions, reject e.g. [0, 255].
_RANGE_TOLERANCE = 1e-3


def check_images(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> None:
    """Raise :class:`InputError` unless ``pred``/``gt`` are float ``(B,3,H,W)`` in [-1, 1] and
    ``mask`` is float ``(B,1,H,W)`` with the same ``B, H, W``."""
    for name, t, channels in (("pred", pred, 3), ("gt", gt, 3), ("mask", mask, 1)):
        if not isinstance(t, torch.Tensor):
            raise InputError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 4 or t.shape[1] != channels:
            raise InputError(f"{name}: expected shape (B, {channels}, H, W), got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise InputError(f"{name}: expected a floating-point tensor, got {t.dtype}")
    if pred.shape != gt.shape:
        raise InputError(f"pred and gt shapes differ: {tuple(pred.shape)} vs {tuple(gt.shape)}")
    if mask.shape[0] != pred.shape[0] or mask.shape[2:] != pred.shape[2:]:
        raise InputError(
            f"mask shape {tuple(mask.shape)} does not match images {tuple(pred.shape)} "
            "(expected (B, 1, H, W) with the images' B, H, W)"
        )
    for name, t in (("pred", pred), ("gt", gt)):
        if t.numel():
            lo, hi = float(t.min()), float(t.max())
            if lo < -1 - _RANGE_TOLERANCE or hi > 1 + _RANGE_TOLERANCE:
                raise InputError(f"{name}: expected values in [-1, 1], got [{lo:.4g}, {hi:.4g}]")


def hole(mask: torch.Tensor) -> torch.Tensor:
    """Boolean hole mask ``(B,1,H,W)``: ``mask >= 0.5`` (1 = hole)."""
    return mask >= 0.5


def composite(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``pred`` inside the hole, ``gt`` outside: ``pred * m + gt * (1 - m)`` with ``m = mask >= 0.5``.

    pred, gt: ``(B,3,H,W)`` in [-1, 1]; mask: ``(B,1,H,W)``, 1 = hole. Returns ``(B,3,H,W)``.
    Known pixels are copied exactly from ``gt`` (``torch.where``, not arithmetic, so they are
    bit-identical even where ``pred`` is not finite).
    """
    check_images(pred, gt, mask)
    return torch.where(hole(mask), pred, gt)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1] (clamped)."""
    return ((images + 1) / 2).clamp(0, 1)


def to_uint8_levels(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> float tensor of integer levels 0..255 (what an 8-bit image file holds)."""
    return ((images + 1) * 127.5).round().clamp(0, 255)
