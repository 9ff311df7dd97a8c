"""Classical reference fills that the learned models are measured against.

Images are ``(N, 3, H, W)`` floats in ``[-1, 1]``, masks ``(N, 1, H, W)`` with 1 = hole; every
result keeps the known pixels and lies on the 8-bit grid, as a saved PNG would.
"""

from __future__ import annotations

import numpy as np
import torch

from asuka.errors import InputError

OPENCV_METHODS = ("telea", "ns")
#: Conjugate-gradient iterations of :func:`membrane_fill` (converged on 512 px holes).
MEMBRANE_ITERATIONS = 3000


def quantize_8bit(images: torch.Tensor) -> torch.Tensor:
    """``[-1, 1]`` floats rounded to the 256 levels an 8-bit image holds (still in ``[-1, 1]``)."""
    return ((images + 1) * 127.5).round().clamp(0, 255) / 127.5 - 1.0


def opencv_inpaint(images: torch.Tensor, masks: torch.Tensor, method: str = "telea", radius: int = 3) -> torch.Tensor:
    """OpenCV's ``cv2.inpaint`` on the 8-bit images: ``"telea"`` (fast marching) or ``"ns"``
    (Navier-Stokes), with ``radius`` px of neighbourhood; a mask pixel >= 0.5 is a hole."""
    import cv2  # opencv-python-headless, a core dependency

    if method not in OPENCV_METHODS:
        raise InputError(f"opencv_inpaint: method must be one of {OPENCV_METHODS}, got {method!r}")
    flag = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}[method]
    out = []
    for img, m in zip(images, masks):
        u8 = ((img.permute(1, 2, 0).cpu().numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
        hole = (m[0].cpu().numpy() >= 0.5).astype(np.uint8) * 255
        res = cv2.inpaint(np.ascontiguousarray(u8[..., ::-1]), hole, radius, flag)[..., ::-1]
        out.append(torch.from_numpy(res.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1))
    return torch.stack(out)


def mean_colour_fill(images: torch.Tensor, masks: torch.Tensor, margin: int, resolution: int) -> torch.Tensor:
    """Each hole filled with the mean colour of the known pixels of its crop-mode region
    (:func:`asuka.pipeline_base.crop_box` with ``margin`` and ``resolution``): the simplest fill
    that uses the same context a pipeline sees."""
    from asuka.pipeline_base import crop_box

    out = []
    for img, m in zip(images, masks):
        hole = m >= 0.5
        if not hole.any():
            out.append(img)
            continue
        top, left, h, w = crop_box(hole[0], margin, resolution)
        region = img[:, top:top + h, left:left + w]
        known = ~hole[:, top:top + h, left:left + w]
        mean = (region * known).sum((1, 2)) / known.sum().clamp(min=1)
        out.append(torch.where(hole, mean[:, None, None], img))
    return quantize_8bit(torch.stack(out))


def membrane_fill(images: torch.Tensor, masks: torch.Tensor, fade: float) -> torch.Tensor:
    """The pipelines' seam blending (:mod:`asuka.seams`) applied to a fill with no content: each
    hole solved from its edge alone -- over the first ``fade`` px following the surroundings'
    edges continued into it (:func:`asuka.seams.continuation_guide`), inside a smooth membrane
    (harmonic interpolation). What the blending makes without a model; on the 8-bit grid."""
    from asuka import seams

    out = []
    for img, m in zip(images, masks):
        img, m = img[None].float(), (m[None] >= 0.5).float()
        guide = seams.continuation_guide(img, m)
        solved = seams.poisson_blend(torch.zeros_like(img), img, m, fade=fade, guide=guide,
                                     max_iter=MEMBRANE_ITERATIONS)
        out.append((m * solved + (1 - m) * img)[0])
    return quantize_8bit(torch.stack(out))
