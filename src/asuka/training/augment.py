"""Colour augmentation of the decoder stage's input, through an explicit generator.

torchvision's ``ColorJitter`` draws its factors from the global RNG; this draws them (one set
per image, and the order of the four operations) from the step's generator and applies them
with torchvision's functional ops, so a run is reproducible and resumable.
"""

from __future__ import annotations

import dataclasses

import torch
from torchvision.transforms.v2 import functional as TF

from asuka.errors import InputError


@dataclasses.dataclass
class ColorJitterConfig:
    """ColorJitter strengths (the paper: brightness 0.15, contrast 0.2, saturation 0.1, hue 0.03).

    Brightness, contrast and saturation factors are uniform in ``[1 - s, 1 + s]``; the hue
    shift is uniform in ``[-hue, hue]`` (fractions of a full turn). ``p``: probability that an
    image is jittered at all.
    """

    brightness: float = 0.15
    contrast: float = 0.2
    saturation: float = 0.1
    hue: float = 0.03
    p: float = 1.0

    def validate(self, prefix: str = "color_jitter") -> None:
        for name in ("brightness", "contrast", "saturation"):
            if not 0 <= getattr(self, name) <= 1:
                raise InputError(f"config {prefix}.{name}: expected a value in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.hue <= 0.5:
            raise InputError(f"config {prefix}.hue: expected a value in [0, 0.5], got {self.hue}")
        if not 0 <= self.p <= 1:
            raise InputError(f"config {prefix}.p: expected a probability, got {self.p}")


def color_jitter(images: torch.Tensor, config: ColorJitterConfig, generator: torch.Generator) -> torch.Tensor:
    """Jitter each image of ``images`` ``(B, 3, H, W)`` in [-1, 1]; returns a new tensor, same range.

    The draws (per image: apply-or-not, order, four factors) come from ``generator``, which
    must live on ``images.device``.
    """
    b = images.shape[0]
    dev = images.device
    u = torch.rand(b, 5, generator=generator, device=dev).cpu()  # apply?, then 4 factors
    order = torch.stack([torch.randperm(4, generator=generator, device=dev) for _ in range(b)]).cpu()
    out = images.clone()
    strengths = (config.brightness, config.contrast, config.saturation, config.hue)
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for i in range(b):
        if u[i, 0] >= config.p:
            continue  # left exactly as it was
        img = ((images[i : i + 1].float() + 1.0) / 2.0).clamp(0.0, 1.0)  # torchvision's colour ops: [0, 1]
        for k in order[i].tolist():
            s = strengths[k]
            if s == 0:
                continue
            factor = (2 * u[i, 1 + k].item() - 1) * s  # uniform in [-s, s]
            img = ops[k](img, factor if k == 3 else 1.0 + factor)
        out[i] = (img[0] * 2.0 - 1.0).to(images.dtype)
    return out
