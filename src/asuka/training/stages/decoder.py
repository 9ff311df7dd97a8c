"""Stage ``decoder``: train the mask-conditioned decoder as local harmonisation.

* input latents: the frozen VAE encoder's latents of the *colour-augmented* image
  (ColorJitter brightness 0.15, contrast 0.2, saturation 0.1, hue 0.03), or, for the images
  ``asuka make-latent-aug`` prepared (paper: 50%), the backbone's one-step estimate
  ``z0_hat`` at the stored crop;
* condition: the *un-augmented* image (masked inside the decoder) and the mask;
* target: the original image;
* loss: L1 + LPIPS + hinge PatchGAN from ``loss.gan_start`` (see
  :mod:`asuka.training.losses`; the KL term has no gradient with a frozen encoder and is
  left out here).

Starts from a KL decoder (``decoder: null`` -> :meth:`MaskConditionedDecoder.from_autoencoder_kl`
of the backbone's VAE: SD-1.5's (z=4), ours, or with ``backbone.kind: flux`` FLUX.1-Fill's
(z=16, no post_quant_conv)) or from one of our decoder folders / the release's checkpoint. The
decoder takes the VAE's own latents (what its ``decode`` takes), so the FLUX VAE's scaling and
shift play no part here. Exports ``decoder/``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from asuka.errors import InputError
from asuka.training.augment import ColorJitterConfig, color_jitter
from asuka.training.components import BackboneConfig, load_backbone_part, load_model
from asuka.training.config import DataConfig, OptimConfig
from asuka.training.data import AddMask, Compose
from asuka.training.losses import ReconLossConfig
from asuka.training.stage import StepOutput
from asuka.training.stages._autoencoder import AutoencoderConfig, AutoencoderStage, _taming_optim


@dataclasses.dataclass
class LatentAugUseConfig:
    """``dir``: output of ``asuka make-latent-aug`` (None: colour augmentation only);
    ``p``: probability that an image with a stored latent uses it (else its colour-augmented
    random crop)."""

    dir: str | None = None
    p: float = 1.0


@dataclasses.dataclass
class DecoderConfig(AutoencoderConfig):
    """``backbone``: where the frozen KL VAE comes from (only its encoder is used, plus its
    decoder as the starting point). ``decoder``: ``null`` to start from that VAE's decoder, or
    a decoder folder / release file to continue from."""

    backbone: BackboneConfig = dataclasses.field(default_factory=BackboneConfig)
    decoder: str | None = None
    color_jitter: ColorJitterConfig = dataclasses.field(default_factory=ColorJitterConfig)
    latent_aug: LatentAugUseConfig = dataclasses.field(default_factory=LatentAugUseConfig)
    gradient_checkpointing: bool = False
    data: DataConfig = dataclasses.field(default_factory=lambda: DataConfig(resolution=256))
    optim: OptimConfig = dataclasses.field(
        default_factory=lambda: OptimConfig(lr=8e-5, betas=(0.5, 0.9), weight_decay=0.0, schedule="cosine",
                                            max_grad_norm=None))
    disc_optim: OptimConfig = dataclasses.field(default_factory=lambda: _taming_optim(8e-5))
    loss: ReconLossConfig = dataclasses.field(default_factory=lambda: ReconLossConfig(gan_start=30_000))

    def validate(self) -> None:
        super().validate()
        self.backbone.validate()
        self.color_jitter.validate()
        if not 0.0 <= self.latent_aug.p <= 1.0:
            raise InputError(f"config latent_aug.p: expected a probability, got {self.latent_aug.p}")


class DecoderStage(AutoencoderStage):
    name = "decoder"
    config_class = DecoderConfig
    generator_name = "decoder"

    def build(self) -> None:
        from asuka.models.decoder import MaskConditionedDecoder

        cfg = self.config
        vae = load_backbone_part(cfg.backbone, "vae", seed=cfg.seed + 2)
        if cfg.decoder is None:
            decoder = MaskConditionedDecoder.from_autoencoder_kl(vae, seed=cfg.seed)
        else:
            decoder = load_model(MaskConditionedDecoder, cfg.decoder, what="config decoder", seed=cfg.seed)
        if decoder.config.latent_channels != vae.config.latent_channels:
            raise InputError(f"decoder stage: the decoder takes {decoder.config.latent_channels} latent channels, "
                             f"the VAE makes {vae.config.latent_channels}")
        if cfg.gradient_checkpointing:
            decoder.enable_gradient_checkpointing()
        vae.decoder = None  # only the encoder is needed: free the copy of the decoder
        self.vae = self.freeze(vae)
        self.factor = decoder.downscale_factor
        if cfg.data.resolution % self.factor:
            raise InputError(f"config data.resolution: expected a multiple of {self.factor}, got {cfg.data.resolution}")
        self.last_layer = decoder.decoder.conv_out.weight
        self.models["decoder"] = decoder
        self.build_loss()
        self._store = None
        if cfg.latent_aug.dir is not None:
            from asuka.training.latent_aug import LatentAugStore

            self._store = LatentAugStore(cfg.latent_aug.dir)
            meta = self._store.meta()
            want = {"resolution": cfg.data.resolution, "latent_channels": decoder.config.latent_channels}
            bad = {k: (meta.get(k), v) for k, v in want.items() if meta.get(k) != v}
            if bad:
                raise InputError(f"latent_aug.dir {cfg.latent_aug.dir} does not fit this run: "
                                 + ", ".join(f"{k} {a} (store) vs {b} (run)" for k, (a, b) in bad.items()))

    def dataset_transform(self):
        attach = None
        if self._store is not None:
            from asuka.training.latent_aug import AttachLatent

            size = self.config.data.resolution // self.factor
            attach = AttachLatent(self._store.root, self.models["decoder"].config.latent_channels, size)
        return Compose(AddMask.from_config(self.config.masks), attach)

    def crop_override(self):
        if self._store is None:
            return None
        from asuka.data.images import StoredCrops

        return StoredCrops(self._store.boxes(), p=self.config.latent_aug.p)

    @torch.no_grad()
    def make_inputs(self, batch: dict, generator: torch.Generator):
        """``(z, condition image, mask, target)``: ``z`` unscaled input latents (encoder latents
        of the colour-jittered image, or the stored ``z0_hat``); the condition image and the
        target are the un-augmented image."""
        image, mask = batch["image"], batch["mask"]
        jittered = color_jitter(image, self.config.color_jitter, generator)
        z = self.vae.encode(jittered.to(self.weight_dtype)).latent_dist.sample(generator=generator).float()
        if "latent" in batch:
            use = batch["has_latent"].to(z.device).view(-1, 1, 1, 1)
            z = torch.where(use, batch["latent"].to(z), z)
        return z, image, mask, image

    def loss(self, batch, step, *, generator):
        z, cond_image, mask, target = self.make_inputs(batch, generator)
        recon = self.models["decoder"](z, cond_image, mask).sample
        total, terms = self.reconstruction_loss(recon, target, step=step)
        if "has_latent" in batch:
            terms["latent_aug"] = batch["has_latent"].float().mean()
        return StepOutput(total, terms)

    def export(self, models, out_dir: Path) -> list[Path]:
        path = Path(out_dir) / "decoder"
        models["decoder"].save_pretrained(path)
        return [path]
