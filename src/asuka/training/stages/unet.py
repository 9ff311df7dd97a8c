"""Stage ``unet``: a 9-channel latent inpainting UNet from scratch (for a small ASUKA).

Random masks and the standard noise-prediction loss, on the latents of a frozen KL VAE (e.g.
the ``vae`` stage's export). The cross-attention condition (``condition.kind``):

* ``null``: always the null condition (zeros, ``1 x cross_attention_dim`` -- what a default
  :class:`~asuka.models.aligner.AsukaAligner` returns from ``null()``); the UNet then never
  learns to read its cross-attention;
* ``lowres``: a "caption" of the whole, *unmasked* image, as SD-1.5 is trained on captions:
  the image at ``grid * cell`` px (area resize), one token per ``cell x cell`` pixel block
  (``3 cell^2`` values) -> Linear -> + learned position embedding -> LayerNorm, a
  :class:`LowResCaption` trained jointly with the UNet. With probability ``p_null`` per sample
  the tokens are replaced by zeros, which the UNet sees exactly as the 1-token null condition
  (bias-free keys and values of zeros: uniform attention over zero values). The caption
  encoder is training-only (kept in the run's checkpoints, not exported): at inference the
  UNet reads ``aligner(MAE prior)`` instead, and the ``align`` stage learns that mapping
  through this frozen UNet. Use ``grid`` = the MAE's tokens per side so both have one token per
  image block;
* ``prior``: the condition the pipeline gives at inference, ``aligner(MAE prior of the masked
  image)``, from a frozen MAE and aligner (``condition.mae``, ``condition.aligner``: folders, e.g.
  ``<pipeline>/mae`` and ``<pipeline>/aligner``), the aligner's null condition for ``p_null`` of
  the samples. For continuing a UNet (``unet.init``) after the ``align`` stage so that it reads
  the aligned prior it will be given, rather than the caption the aligner approximates.

``timestep_range`` (:class:`~asuka.training.stages._diffusion.DenoisingConfig`): ``[999, 999]``
continues a UNet run with one DDIM step as the regressor of the clean latents it is used as.

``schedule``: changes to the noise schedule (SD-1.5's unless the backbone folder has one), e.g.
``{prediction_type: v_prediction, rescale_betas_zero_snr: true, timestep_spacing: trailing}``
for a UNet that must give good estimates in a few steps (SD-2's v-parameterisation, with the
zero-terminal-SNR schedule and trailing timesteps of Lin et al. 2024); only
:data:`SCHEDULE_KEYS` may be changed.

Exports ``unet/`` and ``scheduler/`` (DDIM with the training noise schedule).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from asuka.errors import InputError
from asuka.training.components import BackboneConfig, load_backbone_part, load_model, load_part_folder, noise_scheduler
from asuka.training.config import DataConfig, OptimConfig
from asuka.training.data import AddMask
from asuka.training.stages._diffusion import DenoisingConfig, NoisePredictionStage


#: noise-schedule fields the ``schedule`` option may change, with their allowed values
SCHEDULE_KEYS = {"prediction_type": ("epsilon", "v_prediction"), "rescale_betas_zero_snr": (True, False),
                 "timestep_spacing": ("leading", "trailing", "linspace")}


@dataclasses.dataclass
class ConditionConfig:
    """The UNet's training condition (see the module docstring). ``kind``: ``null`` or
    ``lowres`` or ``prior``; ``grid``: tokens per side; ``cell``: pixels per token side of the
    low-resolution view (``grid * cell`` px in all); ``p_null``: probability of the null
    condition per sample; ``mae``, ``aligner``: the frozen MAE and aligner of ``prior``."""

    kind: str = "null"
    grid: int = 8
    cell: int = 2
    p_null: float = 0.2
    mae: str | None = None
    aligner: str | None = None


class LowResCaption(torch.nn.Module):
    """Tokens of a low-resolution view of the whole image: ``(B, 3, H, W)`` in [-1, 1] ->
    ``(B, grid^2, dim)``, row-major over the ``grid x grid`` blocks."""

    def __init__(self, dim: int, grid: int = 8, cell: int = 2):
        super().__init__()
        self.grid, self.cell = grid, cell
        self.proj = torch.nn.Linear(3 * cell * cell, dim)
        self.pos = torch.nn.Parameter(torch.randn(grid * grid, dim) * 0.02)
        self.norm = torch.nn.LayerNorm(dim)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        side = self.grid * self.cell
        view = torch.nn.functional.interpolate(image.float(), size=(side, side), mode="area")
        tokens = torch.nn.functional.unfold(view, kernel_size=self.cell, stride=self.cell)  # (B, 3c^2, g^2)
        return self.norm(self.proj(tokens.transpose(1, 2)) + self.pos)


@dataclasses.dataclass
class UNetModelConfig:
    """``UNet2DConditionModel`` fields (``in_channels`` = 2 x latent channels + 1 and
    ``out_channels`` = latent channels are taken from the VAE). ``init``: a ``save_pretrained``
    folder to start from instead of random weights."""

    init: str | None = None
    block_out_channels: tuple[int, ...] = (64, 128, 256)
    down_block_types: tuple[str, ...] = ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    up_block_types: tuple[str, ...] = ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")
    layers_per_block: int = 2
    cross_attention_dim: int = 256
    attention_head_dim: int = 8
    norm_num_groups: int = 32


@dataclasses.dataclass
class UNetConfig(DenoisingConfig):
    """``backbone``: where the frozen VAE comes from (``backbone.vae`` = a folder such as
    ``runs/vae/export/vae``; ``backbone.preset=tiny`` for tests); ``backbone.pretrained``
    also provides the noise schedule when it has a ``scheduler/`` folder."""

    unet: UNetModelConfig = dataclasses.field(default_factory=UNetModelConfig)
    condition: ConditionConfig = dataclasses.field(default_factory=ConditionConfig)
    schedule: dict = dataclasses.field(default_factory=dict)
    backbone: BackboneConfig = dataclasses.field(default_factory=lambda: BackboneConfig(pretrained=None))
    data: DataConfig = dataclasses.field(default_factory=lambda: DataConfig(resolution=128))
    optim: OptimConfig = dataclasses.field(
        default_factory=lambda: OptimConfig(lr=1e-4, weight_decay=0.01, schedule="constant_with_warmup",
                                            warmup_steps=500))

    def validate(self) -> None:
        super().validate()
        u = self.unet
        n = len(u.block_out_channels)
        if len(u.down_block_types) != n or len(u.up_block_types) != n:
            raise InputError(f"config unet: block_out_channels, down_block_types and up_block_types must have "
                             f"the same length, got {n}, {len(u.down_block_types)}, {len(u.up_block_types)}")
        c = self.condition
        if c.kind not in ("null", "lowres", "prior"):
            raise InputError(f"config condition.kind: expected 'null', 'lowres' or 'prior', got {c.kind!r}")
        if c.kind == "prior" and (not c.mae or not c.aligner):
            raise InputError("config condition: kind 'prior' needs condition.mae and condition.aligner "
                             "(folders, e.g. <pipeline>/mae and <pipeline>/aligner)")
        if c.grid < 1 or c.cell < 1:
            raise InputError(f"config condition: grid and cell must be >= 1, got {c.grid} and {c.cell}")
        if not 0.0 <= c.p_null <= 1.0:
            raise InputError(f"config condition.p_null: expected a probability, got {c.p_null}")
        for key, value in self.schedule.items():
            if key not in SCHEDULE_KEYS:
                raise InputError(f"config schedule: unknown key {key!r}; expected some of {', '.join(SCHEDULE_KEYS)}")
            if value not in SCHEDULE_KEYS[key]:
                raise InputError(f"config schedule.{key}: expected one of {SCHEDULE_KEYS[key]}, got {value!r}")


class UNetStage(NoisePredictionStage):
    name = "unet"
    config_class = UNetConfig

    def build(self) -> None:
        from diffusers import UNet2DConditionModel

        cfg = self.config
        self.vae = self.freeze(load_backbone_part(cfg.backbone, "vae", seed=cfg.seed + 2))
        self.scheduler = noise_scheduler(cfg.backbone)
        if cfg.schedule:
            self.scheduler = type(self.scheduler).from_config(self.scheduler.config, **cfg.schedule)
        z = self.vae.config.latent_channels
        u = cfg.unet
        if u.init is not None:
            unet = load_part_folder(UNet2DConditionModel, u.init, "unet", what="config unet.init")
            # the exported sample_size is the side the UNet was trained at (the pipeline's crop-mode
            # working size): it follows this run's resolution, not the one the init was trained at
            factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
            unet.register_to_config(sample_size=cfg.data.resolution // factor)
        else:
            factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                unet = UNet2DConditionModel(
                    sample_size=cfg.data.resolution // factor, in_channels=2 * z + 1, out_channels=z,
                    block_out_channels=tuple(u.block_out_channels), down_block_types=tuple(u.down_block_types),
                    up_block_types=tuple(u.up_block_types), layers_per_block=u.layers_per_block,
                    cross_attention_dim=u.cross_attention_dim, attention_head_dim=u.attention_head_dim,
                    norm_num_groups=u.norm_num_groups)
        if unet.config.in_channels != 2 * z + 1:
            raise InputError(f"unet stage: the UNet takes {unet.config.in_channels} input channels, expected "
                             f"{2 * z + 1} for a VAE with {z} latent channels")
        self.cross_dim = unet.config.cross_attention_dim
        self.models["unet"] = unet  # first: the EMA model
        self.timestep_bounds()  # a timestep_range past the schedule fails here
        if cfg.condition.kind == "lowres":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed + 5)
                self.models["caption"] = LowResCaption(self.cross_dim, cfg.condition.grid, cfg.condition.cell)
        elif cfg.condition.kind == "prior":
            self._build_prior_condition()

    def _build_prior_condition(self) -> None:
        from asuka.models.aligner import AsukaAligner
        from asuka.models.mae import MAEPrior

        c = self.config.condition
        self.mae = self.freeze(load_model(MAEPrior, c.mae, what="config condition.mae"))
        self.aligner = self.freeze(load_model(AsukaAligner, c.aligner, what="config condition.aligner"))
        problems = []
        if self.aligner.config.in_dim != self.mae.config.decoder_embed_dim:
            problems.append(f"aligner in_dim {self.aligner.config.in_dim} != MAE prior width "
                            f"{self.mae.config.decoder_embed_dim}")
        if self.aligner.config.dim != self.cross_dim:
            problems.append(f"aligner dim {self.aligner.config.dim} != the UNet's cross_attention_dim {self.cross_dim}")
        if problems:
            raise InputError("unet stage, condition prior: " + "; ".join(problems))

    def dataset_transform(self):
        return AddMask.from_config(self.config.masks)

    def unet(self):
        return self.models["unet"]

    def condition(self, batch, step, generator):
        image = batch["image"]
        b = image.shape[0]
        kind = self.config.condition.kind
        if kind == "null":
            # zeros: AsukaAligner's default null condition (1 token); the pipeline's "null" baseline
            return torch.zeros(b, 1, self.cross_dim, device=image.device), {}
        if kind == "lowres":
            tokens = self.models["caption"](image)
            null = torch.zeros_like(tokens)
        else:  # the pipeline's condition: the aligned prior of the masked image, or the aligner's null
            with torch.no_grad():
                tokens = self.aligner(self.mae.prior(image.to(self.weight_dtype), batch["mask"].to(self.weight_dtype)))
                null = self.aligner.null(b, tokens.shape[1]).to(tokens.dtype)
        drop = torch.rand(b, generator=generator, device=image.device) < self.config.condition.p_null
        tokens = torch.where(drop[:, None, None], null, tokens)
        return tokens, {"null": drop.float().mean()}

    def export(self, models, out_dir: Path) -> list[Path]:
        from diffusers import DDIMScheduler

        out_dir = Path(out_dir)
        models["unet"].save_pretrained(out_dir / "unet")
        DDIMScheduler.from_config(self.scheduler.config).save_pretrained(out_dir / "scheduler")
        return [out_dir / "unet", out_dir / "scheduler"]
