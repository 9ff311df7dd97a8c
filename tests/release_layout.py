"""Write checkpoints the way the release's training scripts write them, for the converter tests.

* MAE's ``main_finetune.py`` / ``misc.save_model``: ``{'model', 'optimizer', 'epoch', 'scaler', 'args'}``
  with ``args`` the script's ``argparse.Namespace``.
* PyTorch Lightning: ``state_dict`` next to ``epoch``, ``global_step``, ``pytorch-lightning_version``,
  ``optimizer_states``, ``lr_schedulers``, ``callbacks`` (keyed by the callback *class* before
  Lightning 1.5, by a string after), ``loops`` (1.5+), ``hparams_name`` and ``hyper_parameters``
  (an ``AttributeDict`` in some versions).

Lightning is not installed here, so stand-in modules of the same names are put in ``sys.modules``
while saving: the pickle then refers to exactly the names a real Lightning file refers to.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import types

import torch


def save_mae_script_checkpoint(path, state_dict: dict) -> None:
    """``mae_300.pth`` as MAE's fine-tuning script saves it."""
    first = next(iter(state_dict.values()))
    optimizer = torch.optim.AdamW([torch.nn.Parameter(first.clone())], lr=1e-3)
    args = argparse.Namespace(batch_size=64, epochs=300, model="mae_vit_base_patch16", input_size=256,
                              mask_ratio=0.75, norm_pix_loss=False, weight_decay=0.05, lr=None, blr=1.5e-4,
                              output_dir="./output_dir", device="cuda", seed=0, resume="", dist_url="env://",
                              distributed=True, world_size=8, gpu=0, rank=0)
    torch.save({"model": state_dict, "optimizer": optimizer.state_dict(), "epoch": 299,
                "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                           "growth_interval": 2000, "_growth_tracker": 17},
                "args": args}, path)


@contextlib.contextmanager
def _fake_lightning():
    attribute_dict = type("AttributeDict", (dict,), {"__module__": "pytorch_lightning.utilities.parsing"})
    model_checkpoint = type("ModelCheckpoint", (), {"__module__": "pytorch_lightning.callbacks.model_checkpoint"})
    modules = {}
    for name in ("pytorch_lightning", "pytorch_lightning.utilities", "pytorch_lightning.utilities.parsing",
                 "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint"):
        modules[name] = types.ModuleType(name)
    modules["pytorch_lightning.utilities.parsing"].AttributeDict = attribute_dict
    modules["pytorch_lightning.callbacks.model_checkpoint"].ModelCheckpoint = model_checkpoint
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield attribute_dict, model_checkpoint
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def save_lightning_checkpoint(path, state_dict: dict, *, old_callbacks: bool = True, extra: dict | None = None) -> None:
    """A Lightning ``.ckpt`` around ``state_dict`` (``old_callbacks``: Lightning < 1.5's class keys)."""
    first = next(iter(state_dict.values()))
    optimizer = torch.optim.Adam([torch.nn.Parameter(first.clone())], lr=4.5e-6, betas=(0.5, 0.9))
    with _fake_lightning() as (attribute_dict, model_checkpoint):
        callback_state = {"monitor": "val/rec_loss", "best_model_score": torch.tensor(0.0123),
                          "best_model_path": "logs/checkpoints/epoch=3-step=412154.ckpt", "current_score": None,
                          "dirpath": "logs/checkpoints"}
        ckpt = {
            "epoch": 3, "global_step": 412154, "pytorch-lightning_version": "1.4.2" if old_callbacks else "1.9.0",
            "state_dict": state_dict,
            "callbacks": {model_checkpoint: callback_state} if old_callbacks else
                         {"ModelCheckpoint{'monitor': 'val/rec_loss', 'mode': 'min'}": callback_state},
            "optimizer_states": [optimizer.state_dict(), optimizer.state_dict()],
            "lr_schedulers": [{"base_lrs": [4.5e-6], "last_epoch": 412154, "_step_count": 412155,
                               "lr_lambdas": [None]}],
            "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 4, "completed": 3}}}},
            "hparams_name": "kwargs",
            "hyper_parameters": attribute_dict(embed_dim=16, ckpt_path=None, ignore_keys=[], image_key="image",
                                               ddconfig={"z_channels": 16, "ch": 128, "ch_mult": [1, 2, 4, 4]}),
            **(extra or {}),
        }
        torch.save(ckpt, path)
