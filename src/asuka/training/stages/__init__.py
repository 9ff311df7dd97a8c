"""The training stages, by command name (``asuka train <name>``)."""

from __future__ import annotations

import importlib

from asuka.errors import InputError

#: stage name -> (module, class)
STAGES = {
    "mae": ("asuka.training.stages.mae", "MAEStage"),
    "align": ("asuka.training.stages.align", "AlignStage"),
    "decoder": ("asuka.training.stages.decoder", "DecoderStage"),
    "vae": ("asuka.training.stages.vae", "VAEStage"),
    "unet": ("asuka.training.stages.unet", "UNetStage"),
}


def get_stage(name: str):
    """The :class:`~asuka.training.stage.Stage` subclass of stage ``name``."""
    if name not in STAGES:
        raise InputError(f"training stage: expected one of {', '.join(STAGES)}, got {name!r}")
    module, cls = STAGES[name]
    return getattr(importlib.import_module(module), cls)
