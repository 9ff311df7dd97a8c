"""Stage ``mae``: fine-tune the MAE prior for inpainting (MAE-FAR style).

Every token touching the hole is removed from the encoder and random extra tokens until
``mask_ratio`` (75%) of the tokens are gone (the adaptive masking of
:meth:`asuka.models.mae.MAEPrior.forward`); the loss is the pixel MSE on the removed area.
Start from random weights (a preset), one of our ``save_pretrained`` folders, or the
release's ``mae_300.pth``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from asuka.errors import InputError
from asuka.training.config import DataConfig, OptimConfig, TrainConfig
from asuka.training.data import AddMask
from asuka.training.stage import Stage, StepOutput


@dataclasses.dataclass
class MAEConfig(TrainConfig):
    """``model``: preset name (random init: ``full`` ViT-B/16, ``tiny``), a ``save_pretrained``
    folder, or the release's ``mae_300.pth``; ``model_config``: fields that replace the
    preset's (e.g. ``{image_size: 64, embed_dim: 192}``), or, for a release file, what its weights
    cannot tell (``{num_heads: 2, decoder_num_heads: 2}`` for an MAE other than ViT-B/16).
    ``mask_ratio``: fraction of tokens removed."""

    model: str = "full"
    model_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    mask_ratio: float = 0.75
    data: DataConfig = dataclasses.field(default_factory=lambda: DataConfig(resolution=256))
    # MAE's fine-tuning optimiser settings (AdamW, betas (0.9, 0.95), weight decay 0.05)
    optim: OptimConfig = dataclasses.field(
        default_factory=lambda: OptimConfig(lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05,
                                            schedule="cosine", warmup_steps=1000))

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.mask_ratio < 1.0:
            raise InputError(f"config mask_ratio: expected a value in [0, 1), got {self.mask_ratio}")


class MAEStage(Stage):
    name = "mae"
    config_class = MAEConfig

    def build(self) -> None:
        from asuka.models.mae import MAEPrior
        from asuka.training.components import load_model

        self.models["mae"] = load_model(MAEPrior, self.config.model, what="config model (MAE)",
                                        seed=self.config.seed, **self.config.model_config)

    def dataset_transform(self):
        return AddMask.from_config(self.config.masks)

    def loss(self, batch: dict, step: int, *, generator) -> StepOutput:
        out = self.models["mae"](batch["image"], batch["mask"], generator=generator,
                                 mask_ratio=self.config.mask_ratio)
        return StepOutput(out.loss, {"masked_tokens": out.token_mask.mean()})

    def export(self, models, out_dir: Path) -> list[Path]:
        path = Path(out_dir) / "mae"
        models["mae"].save_pretrained(path)
        return [path]
