#!/usr/bin/env python
"""Assemble the shipped small ASUKA from the training runs of ``scripts/train_small.sh``.

* ``--out`` (default ``RUNS/asuka-small``; ``src/asuka/pretrained/asuka-small`` ships it): the pipeline folder (``AsukaInpaintPipeline.save_pretrained``:
  ``model_index.json``, ``mae/``, ``aligner/``, ``unet/``, ``vae/``, ``scheduler/``, ``decoder/``,
  safetensors weights), plus ``training/`` -- the resolved config each stage ran with and its
  ``metrics.csv`` (the record of what was trained). ``MODEL_CARD.md`` is written by hand.
* ``--ablations-out`` (default ``RUNS/asuka-small-ablations``): ``aligner-linear/`` (no transformer blocks) and
  ``decoder-noaug/`` (decoder trained without colour / latent augmentation), used by
  ``scripts/small_model_report.py``.

The pipeline is loaded back from the written folder and run once on a random input, so a
broken folder fails here, not on a user's machine.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("vae", "vae_finetune", "mae", "unet", "align", "decoder", "align_linear", "decoder_noaug",
          "unet_onestep", "align_onestep", "unet_continue", "align_linear_onestep")


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default=str(ROOT / "runs/asuka-small-128"))
    p.add_argument("--out", default=None, help="pipeline folder to write (default RUNS/asuka-small; "
                   "src/asuka/pretrained/asuka-small to ship it)")
    p.add_argument("--ablations-out", default=None,
                   help="default RUNS/asuka-small-ablations (src/asuka/pretrained/asuka-small-ablations to ship)")
    p.add_argument("--default-steps", type=int, default=None,
                   help="the denoising steps the folder asks for when a call gives none (model_index.json "
                   "default_steps; chosen on validation photos, see MODEL_CARD.md); default: the pipeline's 50")
    p.add_argument("--default-resolution", type=int, default=None,
                   help="crop mode's working side in px when a call gives none (model_index.json "
                   "default_resolution; chosen on validation photos, see MODEL_CARD.md); default: the "
                   "UNet's training size")
    p.add_argument("--default-poisson-blend", type=float, default=None, metavar="FADE",
                   help="Poisson seam blending's fade in working px when a call gives none (model_index.json "
                   "default_poisson_blend; chosen on validation photos, see MODEL_CARD.md); default: none")
    args = p.parse_args(argv)
    if args.default_steps is not None and args.default_steps < 1:
        sys.exit(f"--default-steps must be >= 1, got {args.default_steps}")
    args.out = args.out or str(Path(args.runs) / "asuka-small")
    args.ablations_out = args.ablations_out or str(Path(args.runs) / "asuka-small-ablations")
    torch.set_num_threads(1)

    from asuka import AsukaAligner, MaskConditionedDecoder
    from asuka.errors import InputError
    from asuka.pipeline import load_pipeline
    from asuka.training.export import write_model_index

    runs, out, abl_out = Path(args.runs), Path(args.out), Path(args.ablations_out)
    model = runs / "model"
    if not write_model_index(model):
        sys.exit(f"{model}: not every component is there yet (mae, aligner, unet, vae, scheduler)")
    pipe = load_pipeline(model, device="cpu", dtype="float32")
    if pipe.decoder is None:
        sys.exit(f"{model}: no decoder/ (train the decoder stage first)")
    try:
        pipe.register_defaults(args.default_steps, args.default_resolution, args.default_poisson_blend)
    except InputError as exc:
        sys.exit(f"--default-steps / --default-resolution / --default-poisson-blend: {exc}")
    card = (out / "MODEL_CARD.md").read_text() if (out / "MODEL_CARD.md").is_file() else None
    if out.exists():
        shutil.rmtree(out)
    pipe.save_pretrained(out, safe_serialization=True)
    if card is not None:
        (out / "MODEL_CARD.md").write_text(card)
    record = out / "training"
    record.mkdir()
    for stage in STAGES:
        run = runs / stage
        for name in ("config.yaml", "metrics.csv"):
            if (run / name).is_file():
                shutil.copy(run / name, record / f"{stage}.{name.split('.')[-1]}")

    if abl_out.exists():
        shutil.rmtree(abl_out)
    AsukaAligner.from_pretrained(runs / "ablations/linear/aligner").save_pretrained(abl_out / "aligner-linear")
    MaskConditionedDecoder.from_pretrained(runs / "ablations/noaug/decoder").save_pretrained(abl_out / "decoder-noaug")

    # load back what was written and run it once
    again = load_pipeline(out, device="cpu", dtype="float32")
    again.set_progress_bar_config(disable=True)
    size = again.working_resolution
    image = torch.rand(1, 3, size, size) * 2 - 1
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1
    res = again(image, mask, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert res.images.shape == (1, 3, size, size) and torch.isfinite(res.images).all()
    assert again.default_num_inference_steps == (args.default_steps or 50)
    assert again.working_resolution == (args.default_resolution or again.native_resolution)
    assert again.seam_fade() == args.default_poisson_blend
    for folder in (out, abl_out):
        print(f"{folder}: {folder_size(folder) / 2**20:.2f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
