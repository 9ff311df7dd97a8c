"""Export folders: each stage writes its component in the pipeline's layout
(``mae/``, ``aligner/``, ``decoder/``, ``unet/`` + ``scheduler/``, ``vae/``); stages that share
an ``export_dir`` build up one pipeline folder. Once it holds every component the pipeline
needs, ``model_index.json`` is written, so ``AsukaInpaintPipeline.from_pretrained(folder)``
loads the whole small ASUKA."""

from __future__ import annotations

import warnings
from pathlib import Path

REQUIRED = ("mae", "aligner", "unet", "vae", "scheduler")


def write_model_index(folder: str | Path) -> bool:
    """Write ``folder/model_index.json`` when ``folder`` has every required component (and
    they fit together); returns whether it did. Incompatible parts give a warning, not an error:
    the exported components themselves are fine."""
    folder = Path(folder)
    if not all((folder / name).is_dir() for name in REQUIRED):
        return False
    from asuka.errors import AsukaError
    from asuka.pipeline import AsukaInpaintPipeline

    decoder = folder / "decoder" if (folder / "decoder").is_dir() else None
    try:
        pipe = AsukaInpaintPipeline.from_sd_inpaint(folder, mae=folder / "mae", aligner=folder / "aligner",
                                                    decoder=decoder, null_from_text_encoder=False,
                                                    local_files_only=True)
    except (AsukaError, OSError, ValueError) as exc:
        warnings.warn(f"{folder}: components do not form a pipeline yet ({exc}); no model_index.json", stacklevel=2)
        return False
    pipe.save_config(folder)  # model_index.json only; the weights are already there
    return True
