"""Training every ASUKA stage with one loop.

* :mod:`asuka.training.config` -- config dataclasses, YAML files, ``key=value`` overrides;
* :mod:`asuka.training.loop` -- the accelerate training loop (:func:`train`, :func:`export_run`);
* :mod:`asuka.training.stages` -- ``mae``, ``align``, ``decoder`` (the three ASUKA stages) and
  ``vae``, ``unet`` (a small backbone from scratch);
* :mod:`asuka.training.latent_aug` -- the offline latent augmentation for the decoder stage.

Python use::

    from asuka.training import load_config, get_stage, train
    stage = get_stage("mae")
    config = load_config(stage.config_class, ["configs/mae_tiny.yaml"], ["max_steps=100"], stage="mae")
    train(stage, config)
"""

from asuka.training.config import load_config, save_config
from asuka.training.loop import export_run, train
from asuka.training.stages import STAGES, get_stage

__all__ = ["STAGES", "export_run", "get_stage", "load_config", "save_config", "train"]
