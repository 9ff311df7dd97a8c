"""Reconstruction losses of the autoencoder stages (``decoder``, ``vae``).

``L1 + w_p * LPIPS + w_kl * KL + w_gan * hinge-PatchGAN`` as in taming-transformers'
``LPIPSWithDiscriminator`` (which the Asymmetric-VQGAN decoder training, and so ASUKA's,
follows): the GAN term and the discriminator start at ``gan_start``; the GAN weight is
rescaled by the ratio of the reconstruction and GAN gradient norms at the generator's last
layer when ``gan_adaptive``.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from asuka.errors import InputError


@dataclasses.dataclass
class ReconLossConfig:
    """Weights of the reconstruction loss.

    ``perceptual``: ``auto`` uses LPIPS (AlexNet) when its ImageNet backbone weights are on
    this machine (torch hub cache or ``lpips_backbone``) and skips it with a warning
    otherwise; ``on`` requires them; ``off`` never uses LPIPS.
    ``gan_start``: optimizer step from which the discriminator trains and the GAN term counts
    (larger than ``max_steps``: no GAN).
    """

    l1_weight: float = 1.0
    perceptual: str = "auto"
    perceptual_weight: float = 1.0
    lpips_backbone: str | None = None
    kl_weight: float = 1e-6
    gan_weight: float = 0.5
    gan_start: int = 10_000_000
    gan_adaptive: bool = True
    disc_layers: int = 3
    disc_channels: int = 64

    def validate(self, prefix: str = "loss") -> None:
        if self.perceptual not in ("auto", "on", "off"):
            raise InputError(f"config {prefix}.perceptual: expected auto, on or off, got {self.perceptual!r}")
        for name in ("l1_weight", "perceptual_weight", "kl_weight", "gan_weight"):
            if getattr(self, name) < 0:
                raise InputError(f"config {prefix}.{name}: expected >= 0, got {getattr(self, name)}")
        if self.disc_layers < 1 or self.disc_channels < 1:
            raise InputError(f"config {prefix}.disc_layers/disc_channels: expected >= 1, got "
                             f"{self.disc_layers}, {self.disc_channels}")


def load_perceptual(config: ReconLossConfig, device) -> nn.Module | None:
    """The frozen LPIPS network per ``config.perceptual`` (or None when it is not used)."""
    if config.perceptual == "off" or config.perceptual_weight == 0:
        return None
    from torchvision.models import AlexNet_Weights

    from asuka.metrics.perceptual import hub_checkpoint_path, load_lpips

    url = AlexNet_Weights.IMAGENET1K_V1.url
    path = Path(config.lpips_backbone) if config.lpips_backbone else hub_checkpoint_path(url)
    if not path.is_file():
        message = (f"LPIPS needs torchvision's ImageNet AlexNet weights, not found at {path}: download "
                   f"{url} to that path (or set loss.lpips_backbone=PATH)")
        if config.perceptual == "on":
            raise InputError(f"config loss.perceptual=on: {message}")
        warnings.warn(f"training WITHOUT the LPIPS term: {message}; loss.perceptual=off silences this",
                      stacklevel=2)
        return None
    return load_lpips(device=device, backbone_path=path).eval().requires_grad_(False)


class PatchDiscriminator(nn.Module):
    """The pix2pix / taming "NLayer" PatchGAN: ``(B, 3, H, W)`` in [-1, 1] -> logits
    ``(B, 1, H / 2^n - 2, W / 2^n - 2)`` (one per ~70 px patch at ``n = 3``)."""

    def __init__(self, in_channels: int = 3, channels: int = 64, layers: int = 3):
        super().__init__()
        seq: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < layers else 1
            seq += [nn.Conv2d(channels * prev, channels * mult, 4, stride, 1, bias=False),
                    nn.BatchNorm2d(channels * mult), nn.LeakyReLU(0.2, True)]
        seq.append(nn.Conv2d(channels * mult, 1, 4, 1, 1))
        self.net = nn.Sequential(*seq)
        for m in self.modules():  # DCGAN initialisation, as pix2pix/taming
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def _unwrap(module: nn.Module) -> nn.Module:
    return getattr(module, "module", module)  # DDP keeps the model in .module


class ReconstructionLoss:
    """Computes the generator and discriminator losses of one micro-batch.

    ``perceptual``: LPIPS network or None. The discriminator is a trained model owned by the
    stage (``self.models["disc"]``); the generator's GAN term goes through it with detached
    parameters, so the two losses can be summed into one backward pass without the GAN term
    pushing gradients into the discriminator.
    """

    def __init__(self, config: ReconLossConfig, perceptual: nn.Module | None):
        self.config, self.perceptual = config, perceptual

    def __call__(self, recon: torch.Tensor, target: torch.Tensor, *, step: int, disc: nn.Module,
                 kl: torch.Tensor | None = None, last_layer: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``recon``/``target``: ``(B, 3, H, W)`` in [-1, 1]; ``kl``: per-sample KL ``(B,)`` of the
        posterior (or None); ``disc``: the discriminator (None: no GAN term); ``last_layer``: the
        generator's output weight (adaptive GAN weight).
        Returns ``(total loss, named terms)``."""
        cfg = self.config
        recon, target = recon.float(), target.float()
        l1 = (recon - target).abs().mean()
        nll = cfg.l1_weight * l1
        zero = recon.new_zeros(())
        p_loss = zero
        if self.perceptual is not None:
            p_loss = self.perceptual(recon, target).mean()
            nll = nll + cfg.perceptual_weight * p_loss
        kl_loss = kl.mean() if kl is not None else zero
        total = nll + cfg.kl_weight * kl_loss
        g_loss = d_loss = weight = zero
        if disc is not None and step >= cfg.gan_start and cfg.gan_weight > 0:
            raw = _unwrap(disc)
            frozen = {k: v.detach() for k, v in raw.named_parameters()}
            frozen.update(dict(raw.named_buffers()))
            g_loss = -torch.func.functional_call(raw, frozen, (recon,)).float().mean()
            weight = recon.new_tensor(cfg.gan_weight)
            if cfg.gan_adaptive and last_layer is not None and torch.is_grad_enabled():
                g_nll = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
                g_gan = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
                weight = (g_nll.norm() / (g_gan.norm() + 1e-4)).clamp(0.0, 1e4).detach() * cfg.gan_weight
            total = total + weight * g_loss
            d_loss = hinge_d_loss(disc(target.detach()).float(), disc(recon.detach()).float())
            total = total + d_loss  # only reaches the discriminator (its inputs are detached)
        terms = {"l1": l1.detach(), "lpips": p_loss.detach(), "kl": kl_loss.detach(),
                 "g_loss": g_loss.detach(), "d_loss": d_loss.detach(), "gan_weight": weight.detach()}
        return total, terms
