"""Stage ``align``: train the alignment module on the frozen MAE and the frozen backbone.

Loss: the backbone's denoising loss with the aligned MAE prior as the condition
(:mod:`~asuka.training.stages._diffusion`):

* ``backbone.kind: sd15`` -- the inpainting UNet's noise-prediction loss, condition
  ``aligner(prior)`` as ``encoder_hidden_states``;
* ``backbone.kind: flux`` -- FLUX-Fill's flow-matching loss on the frozen transformer; two
  aligners are trained together, ``aligner`` (the clip branch: its mean over tokens is the pooled
  projection) and ``t5_aligner`` (the T5 tokens), through :func:`asuka.flux.flux_condition`, the
  function the pipeline calls. ``condition_weight`` is its null interpolation; training uses the
  aligned prior itself (1.0); the release's 0.5 is an inference-time setting.

Misalignment substitution (both kinds): with probability ``p`` (per sample) the MAE prior of
the *unmasked* image (the "reconstructed" prior, all-zero mask) replaces the prior of the
masked image; ``p`` goes linearly from ``p_start`` to ``p_end`` over the first
``decay_steps`` steps, then stays (paper: 1.0 -> 0.1 over 2,000 steps). The MAE sees its
own resolution (256; :meth:`MAEPrior.prior` resizes), the backbone ``data.resolution``.

``timestep_range`` (sd15; :class:`~asuka.training.stages._diffusion.DenoisingConfig`): the
timesteps of the loss, e.g. ``[999, 999]`` to align the prior for the one DDIM step from zero SNR
that a one-step pipeline makes -- the call where the condition, besides the hole's surroundings,
is all the UNet has to go on.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from asuka.errors import InputError
from asuka.flux import DEFAULT_GUIDANCE, flux_condition
from asuka.training.components import BackboneConfig, load_backbone_part, load_model, noise_scheduler
from asuka.training.config import DataConfig, OptimConfig
from asuka.training.data import AddMask
from asuka.training.stages._diffusion import DenoisingConfig, NoisePredictionStage


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
class AlignConfig(DenoisingConfig):
    """``mae``: the fine-tuned MAE (a ``save_pretrained`` folder such as ``runs/mae/export/mae``,
    the release's ``mae_300.pth``, or a preset for tests). ``aligner``: the aligner's start
    (a preset: random init, widths from the MAE and the backbone; or a folder to continue; for
    flux the clip branch); ``t5_aligner``: the same for flux's T5 branch (unused for sd15);
    ``aligner_config``: preset fields to replace in both (e.g. ``{num_blocks: 2}``).
    ``gradient_checkpointing``: recompute the frozen backbone's activations in the backward pass
    (less memory, ~30% slower). Flux only: ``guidance`` (the distilled guidance value given to the
    transformer, 30 as at inference), ``condition_weight`` (see the module doc),
    ``null_condition_dir``: a folder with the release's null conditions ``vec.pt`` and
    ``txt_256.pt`` (at the top or under ``ckpt/``), stored in the exported aligners (else zeros)."""

    mae: str = "full"
    aligner: str = "full"
    t5_aligner: str = "full"
    aligner_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    backbone: BackboneConfig = dataclasses.field(default_factory=BackboneConfig)
    substitution: SubstitutionConfig = dataclasses.field(default_factory=SubstitutionConfig)
    gradient_checkpointing: bool = False
    guidance: float = DEFAULT_GUIDANCE
    condition_weight: float = 1.0
    null_condition_dir: str | None = None
    data: DataConfig = dataclasses.field(default_factory=lambda: DataConfig(resolution=512))
    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(lr=1e-4, weight_decay=0.01))

    def validate(self) -> None:
        super().validate()
        self.backbone.validate()
        s = self.substitution
        for name in ("p_start", "p_end"):
            if not 0.0 <= getattr(s, name) <= 1.0:
                raise InputError(f"config substitution.{name}: expected a probability, got {getattr(s, name)}")
        if s.decay_steps < 0:
            raise InputError(f"config substitution.decay_steps: expected >= 0, got {s.decay_steps}")
        if self.backbone.is_flux and self.timestep_range is not None:
            raise InputError("config timestep_range: only for an sd15 backbone (a flux backbone is trained "
                             "over flow times, shifted as its inference schedule)")
        if self.backbone.is_flux and self.data.resolution % 16:
            raise InputError(f"config data.resolution: a flux backbone needs a multiple of 16, "
                             f"got {self.data.resolution}")


class FluxAligners(nn.Module):
    """The clip and t5 aligners of the flux backbone as one trained module (one optimizer, EMA,
    checkpoint entry and DDP wrapper). ``forward(prior)`` -> ``(pooled, txt)``."""

    def __init__(self, clip_aligner, t5_aligner, condition_weight: float):
        super().__init__()
        self.clip_aligner, self.t5_aligner, self.condition_weight = clip_aligner, t5_aligner, condition_weight

    def forward(self, prior: torch.Tensor):
        return flux_condition(prior, self.clip_aligner, self.t5_aligner, condition_weight=self.condition_weight)


class AlignStage(NoisePredictionStage):
    name = "align"
    config_class = AlignConfig

    def build(self) -> None:
        from asuka.models.aligner import AsukaAligner
        from asuka.models.mae import MAEPrior

        cfg = self.config
        self.mae = self.freeze(load_model(MAEPrior, cfg.mae, what="config mae", seed=cfg.seed))
        self.frozen_unet = self.freeze(load_backbone_part(cfg.backbone, "model", seed=cfg.seed + 1))
        self.vae = self.freeze(load_backbone_part(cfg.backbone, "vae", seed=cfg.seed + 2))
        self.scheduler = noise_scheduler(cfg.backbone)
        if cfg.gradient_checkpointing:
            self.frozen_unet.enable_gradient_checkpointing()
        backbone_cfg = self.frozen_unet.config
        # (model name, config source, our name, backbone width the aligner must reach, its name)
        if cfg.backbone.is_flux:
            branches = [("aligner", cfg.aligner, "clip_aligner", backbone_cfg.pooled_projection_dim,
                         "pooled_projection_dim"),
                        ("t5_aligner", cfg.t5_aligner, "t5_aligner", backbone_cfg.joint_attention_dim,
                         "joint_attention_dim")]
        else:
            branches = [("aligner", cfg.aligner, "aligner", backbone_cfg.cross_attention_dim, "cross_attention_dim")]
        aligners, problems = {}, []
        for i, (key, source, name, width, field) in enumerate(branches):
            aligner = load_model(AsukaAligner, source, what=f"config {key}", seed=cfg.seed + 3 + i,
                                 **self._aligner_dims(source, width))
            if aligner.config.in_dim != self.mae.config.decoder_embed_dim:
                problems.append(f"{key} in_dim {aligner.config.in_dim} != MAE prior width "
                                f"{self.mae.config.decoder_embed_dim}")
            if aligner.config.dim != width:
                problems.append(f"{key} dim {aligner.config.dim} != the backbone's {field} {width}")
            aligners[name] = aligner
        if problems:
            raise InputError("align stage: " + "; ".join(problems))
        if cfg.backbone.is_flux:
            if cfg.null_condition_dir is not None:
                self._set_release_nulls(aligners, cfg.null_condition_dir)
            self.models["aligners"] = FluxAligners(aligners["clip_aligner"], aligners["t5_aligner"],
                                                   cfg.condition_weight)
        else:
            self.models["aligner"] = aligners["aligner"]
            self.timestep_bounds()  # a timestep_range past the schedule fails here

    @staticmethod
    def _set_release_nulls(aligners: dict, folder: str) -> None:
        from asuka.pipeline_flux import read_null_tensor, release_file

        clip, t5 = aligners["clip_aligner"], aligners["t5_aligner"]
        clip.set_null_condition(read_null_tensor(release_file(folder, "vec.pt", {}), (1, clip.config.dim)))
        t5.set_null_condition(read_null_tensor(release_file(folder, "txt_256.pt", {}), (1, None, t5.config.dim)))

    def _aligner_dims(self, source: str, width: int) -> dict:
        # a fresh aligner takes its widths from the MAE and the backbone it sits between
        from asuka.models.aligner import PRESETS

        if source not in PRESETS:
            return {}
        return {"in_dim": self.mae.config.decoder_embed_dim, "dim": width, **self.config.aligner_config}

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
        model = self.models["aligners" if self.config.backbone.is_flux else "aligner"]
        return model(prior), {"p": p, "substituted": substitute.float().mean()}

    def export(self, models, out_dir: Path) -> list[Path]:
        if "aligners" in models:  # flux: the pipeline's clip_aligner/ and t5_aligner/
            pair = models["aligners"]
            parts = {"clip_aligner": pair.clip_aligner, "t5_aligner": pair.t5_aligner}
        else:
            parts = {"aligner": models["aligner"]}
        paths = []
        for name, model in parts.items():
            model.save_pretrained(Path(out_dir) / name)
            paths.append(Path(out_dir) / name)
        return paths
