"""Where the networks of a training run come from: presets, ``save_pretrained`` folders,
official release files, SD-1.5 style backbone folders or hub ids.

A *source* string is one of

* a preset name of the model class (``"full"``, ``"tiny"``): random initialisation;
* a folder written by ``save_pretrained`` (``config.json`` + safetensors), e.g. an earlier
  run's ``export/mae``;
* a file of the official release (``mae_300.pth``, ``asuka_alignment_clip.pt``,
  ``asuka_decoder.ckpt``), converted with the class's ``from_release``.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch

from asuka.errors import CheckpointError, InputError

#: The SD-1.5 inpainting backbone on the hub (diffusers layout).
SD15_INPAINT = "stable-diffusion-v1-5/stable-diffusion-inpainting"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def load_model(cls, source: str, *, what: str, seed: int = 0, **preset_overrides) -> torch.nn.Module:
    """``cls`` (an ASUKA model class) from a preset name, a ``save_pretrained`` folder or a release file.

    Random initialisation from a preset draws from ``seed`` (not the global RNG), so the
    initial weights of a run are a function of its config. ``preset_overrides`` replace preset
    fields, or are passed to ``from_release`` for a release file (e.g. the head counts of an MAE
    that is not ViT-B/16); a folder carries its own config and takes none.
    """
    presets = getattr(sys.modules[cls.__module__], "PRESETS", {})  # presets live with the class
    if source in presets:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls.from_preset(source, **preset_overrides)
    path = Path(source)
    if path.is_file() and preset_overrides:  # a release file: fields it cannot tell (MAE head counts)
        return cls.from_release(str(path), **preset_overrides)
    if preset_overrides:
        raise InputError(f"{what}: config fields {sorted(preset_overrides)} only apply to a preset "
                         f"({', '.join(sorted(presets))}) or a release file, got the folder {source!r}")
    if path.is_dir():
        try:
            return cls.from_pretrained(str(path))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{what}: cannot load {cls.__name__} from {path}: {_first_line(exc)}") from None
    if path.is_file():
        return cls.from_release(str(path))
    raise InputError(f"{what}: expected a preset ({', '.join(sorted(presets))}), a save_pretrained folder "
                     f"or a release file, got {source!r} (no such file or folder)")


#: FLUX.1-Fill-dev on the hub (diffusers layout: transformer/, vae/, scheduler/, text encoders).
FLUX_FILL = "black-forest-labs/FLUX.1-Fill-dev"
BACKBONE_KINDS = ("sd15", "flux")


@dataclasses.dataclass
class BackboneConfig:
    """The frozen backbone: ``kind: sd15`` (9-channel inpainting UNet + KL VAE + DDPM noise
    schedule, the paper's) or ``kind: flux`` (FLUX.1-Fill's transformer + 16-channel VAE +
    flow-matching schedule, the release's).

    ``pretrained``: a diffusers folder or hub id with ``unet/`` (sd15) or ``transformer/`` (flux),
    ``vae/`` and ``scheduler/``; ``None`` = the kind's public one (SD-1.5-inpainting,
    FLUX.1-Fill-dev); ``unet`` / ``transformer`` / ``vae``: folders that override the one part
    (e.g. ``runs/vae/export/vae``); ``preset``: ``tiny`` (the test backbones of
    :mod:`asuka.architectures`) or, for sd15, ``sd15`` (SD-1.5's architecture with random weights, for
    throughput measurements) instead of weights. ``local_files_only``: never contact the hub.
    """

    kind: str = "sd15"
    pretrained: str | None = SD15_INPAINT
    unet: str | None = None
    transformer: str | None = None
    vae: str | None = None
    preset: str | None = None
    local_files_only: bool = False

    def validate(self) -> None:
        if self.kind not in BACKBONE_KINDS:
            raise InputError(f"config backbone.kind: expected one of {', '.join(BACKBONE_KINDS)}, got {self.kind!r}")
        if self.kind == "flux" and self.unet is not None:
            raise InputError("config backbone.unet: a flux backbone has a transformer, not a UNet; "
                             "use backbone.transformer")
        if self.kind == "sd15" and self.transformer is not None:
            raise InputError("config backbone.transformer: only for backbone.kind=flux")

    @property
    def is_flux(self) -> bool:
        return self.kind == "flux"

    @property
    def source(self) -> str | None:
        """Where the weights come from: ``pretrained``, with the SD default swapped for FLUX's."""
        if self.kind == "flux" and self.pretrained == SD15_INPAINT:
            return FLUX_FILL
        return self.pretrained


def _from_pretrained(cls, source: str, subfolder: str | None, what: str, local_files_only: bool):
    kwargs = {"local_files_only": local_files_only}
    if subfolder is not None:
        kwargs["subfolder"] = subfolder
    try:
        return cls.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        where = f"{source}/{subfolder}" if subfolder else source
        raise CheckpointError(f"{what}: cannot load {cls.__name__} from {where}: {_first_line(exc)}") from None


def load_part_folder(cls, source: str, part: str, *, what: str, local_files_only: bool = False):
    """``cls`` (a diffusers model) from ``source/part`` when that exists (a pipeline or export
    folder), else from ``source`` itself (the component's own folder or a hub id with it)."""
    sub = part if Path(source, part, "config.json").is_file() else None
    return _from_pretrained(cls, source, sub, what, local_files_only)


def _random_backbone(kind: str, preset: str, part: str, seed: int):
    from diffusers import AutoencoderKL, FluxTransformer2DModel, UNet2DConditionModel

    from asuka import architectures

    configs = {
        ("sd15", "tiny"): (architectures.tiny_unet_config, architectures.tiny_vae_config),
        ("sd15", "sd15"): (architectures.sd15_unet_config, architectures.sd15_vae_config),
        ("flux", "tiny"): (architectures.tiny_flux_transformer_config, architectures.tiny_flux_vae_config),
    }
    if (kind, preset) not in configs:
        names = [p for k, p in configs if k == kind]
        raise InputError(f"backbone.preset: expected one of {', '.join(names)} for kind {kind}, got {preset!r}")
    model_cfg, vae_cfg = configs[kind, preset]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if part == "vae":
            return AutoencoderKL(**vae_cfg())
        return (FluxTransformer2DModel if kind == "flux" else UNet2DConditionModel)(**model_cfg())


def load_backbone_part(config: BackboneConfig, part: str, *, seed: int = 0):
    """The backbone's ``"unet"`` (``UNet2DConditionModel``), ``"transformer"``
    (``FluxTransformer2DModel``) or ``"vae"`` (``AutoencoderKL``); ``"model"`` is the kind's
    denoiser (the UNet or the transformer)."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel, UNet2DConditionModel

    config.validate()
    if part == "model":
        part = "transformer" if config.is_flux else "unet"
    if (part == "unet" and config.is_flux) or (part == "transformer" and not config.is_flux):
        raise InputError(f"backbone: a {config.kind} backbone has no {part}")
    cls = {"unet": UNet2DConditionModel, "transformer": FluxTransformer2DModel, "vae": AutoencoderKL}[part]
    what = f"backbone {part}"
    override = getattr(config, part)
    if override is not None:
        if override in ("tiny", "sd15"):
            return _random_backbone(config.kind, override, part, seed)
        return load_part_folder(cls, override, part, what=what, local_files_only=config.local_files_only)
    if config.preset is not None:
        return _random_backbone(config.kind, config.preset, part, seed)
    if config.source is None:
        raise InputError(f"config backbone: set backbone.pretrained, backbone.{part} or backbone.preset")
    return _from_pretrained(cls, config.source, part, what, config.local_files_only)


def noise_scheduler(config: BackboneConfig):
    """The backbone's training noise schedule: a ``DDPMScheduler`` for sd15 (SD-1.5's when the
    backbone has no ``scheduler/`` folder or is a preset), a ``FlowMatchEulerDiscreteScheduler``
    for flux (FLUX.1-Fill-dev's config in those cases)."""
    from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler

    from asuka.architectures import flux_scheduler_config, sd15_scheduler_config

    cls, default = ((FlowMatchEulerDiscreteScheduler, flux_scheduler_config) if config.is_flux
                    else (DDPMScheduler, sd15_scheduler_config))
    if config.preset is None and config.source is not None:
        try:
            cfg = cls.load_config(config.source, subfolder="scheduler", local_files_only=config.local_files_only)
            return cls.from_config(cfg)
        except (OSError, ValueError):
            pass  # no scheduler folder: the kind's public schedule
    return cls.from_config(default())
