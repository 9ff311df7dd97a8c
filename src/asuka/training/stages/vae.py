"""Stage ``vae``: a small KL-VAE from scratch (for a small ASUKA trained on one machine).

Loss: L1 + LPIPS (optional: only when the AlexNet weights are on this machine, see
:class:`~asuka.training.losses.ReconLossConfig`) + KL (+ hinge PatchGAN from ``loss.gan_start``).
The exported ``vae/`` carries a ``scaling_factor`` = 1 / std of its latents, measured on
training crops at export, so the UNet stage sees unit-variance latents (SD's 0.18215 plays
that role for the SD VAE).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch import nn

from asuka.training.components import load_part_folder
from asuka.training.config import DataConfig, OptimConfig
from asuka.training.losses import ReconLossConfig
from asuka.training.stage import StepOutput
from asuka.training.stages._autoencoder import AutoencoderConfig, AutoencoderStage, _taming_optim


@dataclasses.dataclass
class VAEModelConfig:
    """``AutoencoderKL`` fields (down/up blocks are ``DownEncoderBlock2D``/``UpDecoderBlock2D``;
    the downscale factor is ``2 ** (len(block_out_channels) - 1)``). ``init``: a folder to
    continue from. ``scaling_factor``: fixed value, or ``null`` to measure it at export from
    ``scale_samples`` training crops."""

    init: str | None = None
    block_out_channels: tuple[int, ...] = (64, 128, 256)
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 32
    scaling_factor: float | None = None
    scale_samples: int = 64


@dataclasses.dataclass
class VAEConfig(AutoencoderConfig):
    vae: VAEModelConfig = dataclasses.field(default_factory=VAEModelConfig)
    data: DataConfig = dataclasses.field(default_factory=lambda: DataConfig(resolution=128))
    loss: ReconLossConfig = dataclasses.field(default_factory=lambda: ReconLossConfig(kl_weight=1e-6))
    optim: OptimConfig = dataclasses.field(default_factory=lambda: _taming_optim(4.5e-4))
    disc_optim: OptimConfig = dataclasses.field(default_factory=lambda: _taming_optim(4.5e-4))


class _VAEWithPosterior(nn.Module):
    """``forward(image, generator) -> (reconstruction, per-sample KL)``: one call through the
    module DDP wraps (calling ``vae.encode``/``decode`` on the wrapper would skip its sync)."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, image: torch.Tensor, generator: torch.Generator):
        posterior = self.vae.encode(image).latent_dist
        recon = self.vae.decode(posterior.sample(generator=generator)).sample
        return recon, posterior.kl()


class VAEStage(AutoencoderStage):
    name = "vae"
    config_class = VAEConfig
    generator_name = "vae"

    def build(self) -> None:
        from diffusers import AutoencoderKL

        cfg, m = self.config, self.config.vae
        if m.init is not None:
            vae = load_part_folder(AutoencoderKL, m.init, "vae", what="config vae.init")
        else:
            n = len(m.block_out_channels)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                vae = AutoencoderKL(
                    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                    up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(m.block_out_channels),
                    layers_per_block=m.layers_per_block, latent_channels=m.latent_channels,
                    norm_num_groups=m.norm_num_groups, sample_size=cfg.data.resolution,
                    scaling_factor=m.scaling_factor if m.scaling_factor is not None else 1.0)
        self.last_layer = vae.decoder.conv_out.weight
        self.models["vae"] = _VAEWithPosterior(vae)
        self.build_loss()

    def loss(self, batch, step, *, generator):
        image = batch["image"]
        recon, kl = self.models["vae"](image, generator)
        return StepOutput(*self.reconstruction_loss(recon, image, step=step, kl=kl))

    @torch.no_grad()
    def measure_scaling_factor(self, vae) -> float:
        """1 / std of the latent means of ``scale_samples`` fixed training crops."""
        from asuka.training.data import build_dataset

        cfg = self.config
        dataset = build_dataset(cfg)
        if isinstance(dataset, torch.utils.data.IterableDataset):
            n = cfg.vae.scale_samples
            stream = iter(dataset)
            samples = [next(stream) for _ in range(n)]
        else:  # spread over the whole folder, epoch-0 crops
            n = min(cfg.vae.scale_samples, len(dataset))
            samples = [dataset[(int(i), 0)] for i in np.linspace(0, len(dataset) - 1, n).round()]
        was_training = vae.training
        vae.eval()
        stds = []
        for start in range(0, n, 8):
            images = torch.stack([s["image"] for s in samples[start : start + 8]]).to(self.device)
            stds.append(vae.encode(images).latent_dist.mean.float().flatten())
        vae.train(was_training)
        return float(1.0 / torch.cat(stds).std().clamp_min(1e-6))

    def export(self, models, out_dir: Path) -> list[Path]:
        vae = models["vae"].vae
        if self.config.vae.scaling_factor is None:
            vae.register_to_config(scaling_factor=self.measure_scaling_factor(vae))
        path = Path(out_dir) / "vae"
        vae.save_pretrained(path)
        return [path]
