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


@dataclasses.dataclass
class BackboneConfig:
    """The frozen SD-style backbone (9-channel inpainting UNet + KL VAE + noise schedule).

    ``pretrained``: a diffusers folder or hub id with ``unet/``, ``vae/`` (and ``scheduler/``);
    ``unet`` / ``vae``: folders that override the one part (e.g. ``runs/vae/export/vae``);
    ``preset``: ``tiny`` (the test backbone of :mod:`asuka.testing`) or ``sd15`` (SD-1.5's
    architecture with random weights, for throughput measurements) instead of weights.
    ``local_files_only``: never contact the hub (set it on offline machines).
    """

    pretrained: str | None = SD15_INPAINT
    unet: str | None = None
    vae: str | None = None
    preset: str | None = None
    local_files_only: bool = False


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


def _random_backbone(preset: str, part: str, seed: int):
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from asuka import testing

    configs = {
        "tiny": (testing.tiny_unet_config, testing.tiny_vae_config),
        "sd15": (testing.sd15_unet_config, testing.sd15_vae_config),
    }
    if preset not in configs:
        raise InputError(f"backbone.preset: expected one of {', '.join(configs)}, got {preset!r}")
    unet_cfg, vae_cfg = configs[preset]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if part == "unet":
            return UNet2DConditionModel(**unet_cfg())
        return AutoencoderKL(**vae_cfg())


def load_backbone_part(config: BackboneConfig, part: str, *, seed: int = 0):
    """The backbone's ``"unet"`` (``UNet2DConditionModel``) or ``"vae"`` (``AutoencoderKL``)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    cls = {"unet": UNet2DConditionModel, "vae": AutoencoderKL}[part]
    what = f"backbone {part}"
    override = getattr(config, part)
    if override is not None:
        if override in ("tiny", "sd15"):
            return _random_backbone(override, part, seed)
        return load_part_folder(cls, override, part, what=what, local_files_only=config.local_files_only)
    if config.preset is not None:
        return _random_backbone(config.preset, part, seed)
    if config.pretrained is None:
        raise InputError(f"config backbone: set backbone.pretrained, backbone.{part} or backbone.preset")
    return _from_pretrained(cls, config.pretrained, part, what, config.local_files_only)


def noise_scheduler(config: BackboneConfig):
    """A ``DDPMScheduler`` with the backbone's training noise schedule (SD-1.5's when the
    backbone has no ``scheduler/`` folder or is a preset)."""
    from diffusers import DDPMScheduler

    from asuka.testing import sd15_scheduler_config

    if config.preset is None and config.pretrained is not None:
        try:
            cfg = DDPMScheduler.load_config(config.pretrained, subfolder="scheduler",
                                            local_files_only=config.local_files_only)
            return DDPMScheduler.from_config(cfg)
        except (OSError, ValueError):
            pass  # no scheduler folder: SD-1.5's schedule
    return DDPMScheduler.from_config(sd15_scheduler_config())
