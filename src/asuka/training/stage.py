"""The interface between the generic training loop and one training stage.

A stage builds its networks (trainable and frozen), says how a dataset sample is made
(mask, latent augmentation, ...), computes the loss of a batch, and exports what it trained
in the ``save_pretrained`` layout the pipeline loads. The loop (:mod:`asuka.training.loop`)
does everything else: devices, mixed precision, DDP, accumulation, optimizers, EMA,
checkpoints, resume, logs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from asuka.training.config import OptimConfig, TrainConfig


@dataclasses.dataclass
class StepOutput:
    """What :meth:`Stage.loss` returns: ``loss`` (scalar, the one backward pass of the step)
    and ``logs`` (scalars to record; the same keys every step)."""

    loss: torch.Tensor
    logs: dict[str, torch.Tensor | float]


class Stage:
    """Base class; a subclass sets ``name`` and ``config_class`` and fills the methods below."""

    name: str = ""
    config_class: type[TrainConfig] = TrainConfig
    #: DDP must be told when some trainable parameters get no gradient in a step.
    find_unused_parameters: bool = False

    def __init__(self, config: TrainConfig, *, device: torch.device, weight_dtype: torch.dtype):
        self.config = config
        self.device = device
        self.weight_dtype = weight_dtype  # dtype of the frozen networks (fp16/bf16 under mixed precision)
        #: trainable networks by name; the loop replaces them by their DDP-wrapped versions
        self.models: dict[str, torch.nn.Module] = {}

    # -- construction -------------------------------------------------------------------
    def build(self) -> None:
        """Create ``self.models`` (trainable, fp32, on CPU) and the frozen networks (on
        ``self.device`` in ``self.weight_dtype``, ``eval()``, ``requires_grad_(False)``)."""
        raise NotImplementedError

    def optimizer_groups(self) -> dict[str, tuple[list[str], OptimConfig]]:
        """Optimizer name -> (names of the models it updates, its settings). One AdamW each."""
        return {"main": (list(self.models), self.config.optim)}

    def ema_model(self) -> str | None:
        """Name of the model whose weights get an EMA (when ``ema.enabled``)."""
        return next(iter(self.models))

    # -- data ---------------------------------------------------------------------------
    def dataset_transform(self):
        """A picklable ``transform(sample, rng) -> sample`` applied after cropping (or None)."""
        return None

    def crop_override(self):
        """A picklable ``crop_override(id, rng) -> CropBox | None`` (or None)."""
        return None

    # -- training -----------------------------------------------------------------------
    def loss(self, batch: dict, step: int, *, generator: torch.Generator) -> StepOutput:
        """The loss of one micro-batch. ``step`` counts the optimizer steps done before this
        one (0 for the first); every random draw uses ``generator`` (on ``self.device``)."""
        raise NotImplementedError

    # -- export -------------------------------------------------------------------------
    def export(self, models: dict[str, torch.nn.Module], out_dir: Path) -> list[Path]:
        """Save the trained networks (``models``: unwrapped, EMA weights applied) with
        ``save_pretrained`` under ``out_dir/<pipeline component name>``; return the folders."""
        raise NotImplementedError

    # -- helpers for subclasses -----------------------------------------------------------
    def freeze(self, module: torch.nn.Module) -> torch.nn.Module:
        """Move a frozen network to the device and the frozen dtype, eval mode, no gradients."""
        module.to(self.device)
        if next(module.parameters()).dtype != self.weight_dtype:  # diffusers warns on any dtype cast
            module.to(self.weight_dtype)
        return module.eval().requires_grad_(False)
