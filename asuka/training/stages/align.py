"""Stage ``align``: train the alignment module on the frozen MAE and the frozen backbone.

Loss: the inpainting UNet's noise-prediction loss with ``aligner(MAE prior)`` as the
condition. Misalignment substitution: with probability ``p`` (per sample) the MAE prior of
the *unmasked* image (the "reconstructed" prior, all-zero mask) replaces the prior of the
masked image; ``p`` goes linearly from ``p_start`` to ``p_end`` over the first
``decay_steps`` steps, then stays (paper: 1.0 -> 0.1 over 2,000 steps). The MAE sees its
own resolution (256; :meth:`MAEPrior.prior` resizes), the backbone ``data.resolution``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from asuka.errors import InputError
from asuka.training.components import BackboneConfig, load_backbone_part, load_model, noise_scheduler
from asuka.training.config import DataConfig, OptimConfig, TrainConfig
from asuka.training.data import AddMask
from asuka.training.stages._diffusion import NoisePredictionStage


@dataclasses.dataclass
class SubstitutionConfig:
    """Probability of using the prior of the unmasked image: ``p_start`` -> ``p_end`` linearly
    over ``decay_steps`` optimizer steps, then ``p_end``."""

    p_start: float = 1.0
    p_end: float = 0.1
    decay_steps: int = 2000

    def p(self, step: int) -> float:
        """The probability at optimizer step ``step`` (0-based)."""
        if self.decay_steps <= 0 or step >= self.decay_steps:
            return self.p_end
        return self.p_start + (self.p_end - self.p_start) * step / self.decay_steps


@dataclasses.dataclass
class AlignConfig(TrainConfig):
    """``mae``: the fine-tuned MAE (a ``save_pretrained`` folder such as ``runs/mae/export/mae``,
    the release's ``mae_300.pth``, or a preset for tests). ``aligner``: the aligner's start
    (a preset: random init, widths from the MAE and the UNet; or a folder to continue);
    ``aligner_config``: preset fields to replace (e.g. ``{num_blocks: 2}``). ``gradient_checkpointing``: recompute
    the frozen UNet's activations in the backward pass (less memory, ~30% slower)."""

    mae: str = "full"
    aligner: str = "full"
    aligner_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    backbone: BackboneConfig = dataclasses.field(default_factory=BackboneConfig)
    substitution: SubstitutionConfig = dataclasses.field(default_factory=SubstitutionConfig)
    gradient_checkpointing: bool = False
    data: DataConfig = dataclasses.field(default_factory=lambda: DataConfig(resolution=512))
    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(lr=1e-4, weight_decay=0.01))

    def validate(self) -> None:
        super().validate()
        s = self.substitution
        for name in ("p_start", "p_end"):
            if not 0.0 <= getattr(s, name) <= 1.0:
                raise InputError(f"config substitution.{name}: expected a probability, got {getattr(s, name)}")
        if s.decay_steps < 0:
            raise InputError(f"config substitution.decay_steps: expected >= 0, got {s.decay_steps}")


class AlignStage(NoisePredictionStage):
    name = "align"
    config_class = AlignConfig

    def build(self) -> None:
        from asuka.models.aligner import AsukaAligner
        from asuka.models.mae import MAEPrior

        cfg = self.config
        self.mae = self.freeze(load_model(MAEPrior, cfg.mae, what="config mae", seed=cfg.seed))
        self.frozen_unet = self.freeze(load_backbone_part(cfg.backbone, "unet", seed=cfg.seed + 1))
        self.vae = self.freeze(load_backbone_part(cfg.backbone, "vae", seed=cfg.seed + 2))
        self.scheduler = noise_scheduler(cfg.backbone)
        if cfg.gradient_checkpointing:
            self.frozen_unet.enable_gradient_checkpointing()
        aligner = load_model(AsukaAligner, cfg.aligner, what="config aligner", seed=cfg.seed + 3,
                             **self._aligner_dims(cfg.aligner))
        problems = []
        if aligner.config.in_dim != self.mae.config.decoder_embed_dim:
            problems.append(f"aligner in_dim {aligner.config.in_dim} != MAE prior width "
                            f"{self.mae.config.decoder_embed_dim}")
        if aligner.config.dim != self.frozen_unet.config.cross_attention_dim:
            problems.append(f"aligner dim {aligner.config.dim} != UNet cross_attention_dim "
                            f"{self.frozen_unet.config.cross_attention_dim}")
        if problems:
            raise InputError("align stage: " + "; ".join(problems))
        self.models["aligner"] = aligner

    def _aligner_dims(self, source: str) -> dict:
        # a fresh aligner takes its widths from the MAE and the UNet it sits between
        from asuka.models.aligner import PRESETS

        if source not in PRESETS:
            return {}
        return {"in_dim": self.mae.config.decoder_embed_dim, "dim": self.frozen_unet.config.cross_attention_dim,
                **self.config.aligner_config}

    def dataset_transform(self):
        return AddMask.from_config(self.config.masks)

    def unet(self):
        return self.frozen_unet

    def condition(self, batch, step, generator):
        image, mask = batch["image"], batch["mask"]
        p = self.config.substitution.p(step)
        substitute = torch.rand(image.shape[0], generator=generator, device=image.device) < p
        prior_mask = torch.where(substitute[:, None, None, None], torch.zeros_like(mask), mask)
        with torch.no_grad():
            prior = self.mae.prior(image.to(self.weight_dtype), prior_mask.to(self.weight_dtype))
        cond = self.models["aligner"](prior)
        return cond, {"p": p, "substituted": substitute.float().mean()}

    def export(self, models, out_dir: Path) -> list[Path]:
        path = Path(out_dir) / "aligner"
        models["aligner"].save_pretrained(path)
        return [path]
