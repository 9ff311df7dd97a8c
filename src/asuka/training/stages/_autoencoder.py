"""What the ``decoder`` and ``vae`` stages share: the reconstruction loss with its PatchGAN
discriminator, the second optimizer, and the config section for them."""

from __future__ import annotations

import dataclasses

import torch

from asuka.training.config import OptimConfig, TrainConfig
from asuka.training.losses import PatchDiscriminator, ReconLossConfig, ReconstructionLoss, load_perceptual
from asuka.training.stage import Stage


def _taming_optim(lr: float) -> OptimConfig:
    # taming / Asymmetric-VQGAN: Adam, betas (0.5, 0.9), no weight decay, for both networks
    return OptimConfig(lr=lr, betas=(0.5, 0.9), weight_decay=0.0, max_grad_norm=None)


@dataclasses.dataclass
class AutoencoderConfig(TrainConfig):
    """Adds ``loss`` (:class:`ReconLossConfig`) and ``disc_optim`` (the discriminator's AdamW)."""

    loss: ReconLossConfig = dataclasses.field(default_factory=ReconLossConfig)
    disc_optim: OptimConfig = dataclasses.field(default_factory=lambda: _taming_optim(1e-4))

    def validate(self) -> None:
        super().validate()
        self.loss.validate()

    @property
    def uses_gan(self) -> bool:
        return self.loss.gan_weight > 0 and self.loss.gan_start < self.max_steps


class AutoencoderStage(Stage):
    """Base: subclasses put their generator in ``self.models[self.generator_name]``, call
    :meth:`build_loss`, and set ``self.last_layer`` (the generator's output conv weight)."""

    generator_name = ""

    def build_loss(self) -> None:
        cfg = self.config
        self.recon_loss = ReconstructionLoss(cfg.loss, load_perceptual(cfg.loss, self.device))
        if self.recon_loss.perceptual is not None:
            self.recon_loss.perceptual.to(self.device)
        if cfg.uses_gan:  # no discriminator (and no idle optimizer) when the GAN never starts
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed + 7)
                self.models["disc"] = PatchDiscriminator(channels=cfg.loss.disc_channels,
                                                         layers=cfg.loss.disc_layers)

    def optimizer_groups(self):
        groups = {"main": ([self.generator_name], self.config.optim)}
        if "disc" in self.models:
            groups["disc"] = (["disc"], self.config.disc_optim)
        return groups

    def ema_model(self) -> str | None:
        return self.generator_name

    def reconstruction_loss(self, recon, target, *, step: int, kl=None):
        """Total loss and terms; see :class:`~asuka.training.losses.ReconstructionLoss`."""
        return self.recon_loss(recon, target, step=step, disc=self.models.get("disc"), kl=kl,
                               last_layer=self.last_layer)
