#!/usr/bin/env python
"""Training throughput (samples/s) of every stage, through the real training loop.

Each (stage, size) runs ``asuka.training.train`` for ``warmup + steps`` optimizer steps on a
folder of random images (random weights everywhere: presets, or SD-1.5's architecture for the
backbone) and reports the mean samples/s of the timed steps as logged by the loop -- data
loading, masks, augmentation, forward, backward and optimizer included.

Sizes:
  tiny   the test configs (32 px, tiny presets);
  small  the small ASUKA of configs/small/ (64 px), trainable on a CPU;
  full   the paper's: MAE ViT-B/16 at 256, aligner 512 -> 768 on SD-1.5-inpainting's UNet and
         VAE at 512, the decoder on SD-1.5's VAE at 256 (vae/unet have no full size: they are
         the small backbone's stages).

    python benchmarks/bench_training.py                          # tiny + small, all stages, CPU
    python benchmarks/bench_training.py --size full --stages mae decoder --steps 2
    python benchmarks/bench_training.py --size tiny small full --device cuda --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("mae", "align", "decoder", "vae", "unet")

TINY_UNET = ["unet.block_out_channels=[32, 64]", "unet.down_block_types=[DownBlock2D, CrossAttnDownBlock2D]",
             "unet.up_block_types=[CrossAttnUpBlock2D, UpBlock2D]", "unet.layers_per_block=1",
             "unet.cross_attention_dim=32"]

# (stage, size) -> (resolution, overrides); batch sizes come from --batch or BATCH below
SETTINGS = {
    ("mae", "tiny"): (32, ["model=tiny"]),
    ("align", "tiny"): (32, ["mae=tiny", "aligner=tiny", "backbone.preset=tiny"]),
    ("decoder", "tiny"): (32, ["backbone.preset=tiny"]),
    ("vae", "tiny"): (32, ["vae.block_out_channels=[32, 64]", "vae.scaling_factor=1.0"]),
    ("unet", "tiny"): (32, ["backbone.preset=tiny", *TINY_UNET]),
    ("mae", "small"): (64, ["--config", "configs/small/mae.yaml"]),
    ("align", "small"): (64, ["--config", "configs/small/align.yaml", "mae=SMALL/mae", "backbone.pretrained=SMALL"]),
    ("decoder", "small"): (64, ["--config", "configs/small/decoder.yaml", "backbone.pretrained=SMALL",
                                "latent_aug.dir=null"]),
    ("vae", "small"): (64, ["--config", "configs/small/vae.yaml", "vae.scaling_factor=1.0"]),
    ("unet", "small"): (64, ["--config", "configs/small/unet.yaml", "backbone.vae=SMALL/vae"]),
    ("mae", "full"): (256, ["model=full"]),
    # gradient checkpointing through the frozen UNet keeps a CPU run within ~6 GB
    ("align", "full"): (512, ["mae=full", "aligner=full", "backbone.preset=sd15", "gradient_checkpointing=true"]),
    ("decoder", "full"): (256, ["backbone.preset=sd15"]),
}
BATCH = {"tiny": 4, "small": 16, "full": {"mae": 8, "align": 1, "decoder": 2}}


def _images(folder: Path, size: int, n: int = 16) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size + 8 * (i % 3), size + 8, 3), dtype=np.uint8)).save(
            folder / f"{i}.png")


def _small_backbone(tmp: Path) -> Path:
    """A random small backbone folder (vae/, unet/, scheduler/, mae/) from configs/small/, so the
    align and decoder stages have their frozen parts."""
    from asuka.training import get_stage, load_config, train

    model = tmp / "small_model"
    data = tmp / "img64"
    _images(data, 64)
    steps = ["max_steps=1", "batch_size=1", "data.num_workers=0", f"data.root={data}", f"export_dir={model}",
             "ema.enabled=false"]
    for stage, extra in (("vae", ["vae.scaling_factor=1.0"]), ("unet", [f"backbone.vae={model}/vae"]), ("mae", [])):
        cls = get_stage(stage)
        cfg = load_config(cls.config_class, [ROOT / f"configs/small/{stage}.yaml"],
                          [f"output_dir={tmp / ('bb_' + stage)}", *steps, *extra], stage=stage)
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            train(cls, cfg)
    return model


def measure(stage: str, size: str, *, steps: int, warmup: int, batch: int | None, device: str,
            workers: int, tmp: Path, small: Path | None) -> dict:
    from asuka.training import get_stage, load_config, train
    from asuka.training.logs import read_metrics

    resolution, overrides = SETTINGS[(stage, size)]
    files, rest, it = [], [], iter(overrides)
    for arg in it:
        if arg == "--config":
            files.append(ROOT / next(it))
        else:
            rest.append(arg.replace("SMALL", str(small)) if small else arg)
    if batch is None:
        batch = BATCH[size] if isinstance(BATCH[size], int) else BATCH[size][stage]
    data = tmp / f"img{resolution}"
    if not data.is_dir():
        _images(data, resolution)
    out = tmp / f"run_{stage}_{size}"
    shutil.rmtree(out, ignore_errors=True)
    cls = get_stage(stage)
    cfg = load_config(cls.config_class, files, [
        *rest, f"output_dir={out}", f"data.root={data}", f"data.resolution={resolution}",
        f"data.num_workers={workers}", f"batch_size={batch}", f"max_steps={warmup + steps}", "log_every=1",
        f"checkpoint_every={10**6}", "ema.enabled=false", "grad_accum=1", "resume=never",
        f"export_dir={out / 'export'}",
        *(["loss.perceptual=off"] if stage in ("vae", "decoder") else []),
        *(["mixed_precision=bf16"] if device == "cuda" and size == "full" else [])], stage=stage)
    start = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        train(cls, cfg)  # quiet: no progress bar, no export lines
    total = time.perf_counter() - start
    rows = read_metrics(out)[warmup:]
    sps = [r["samples_per_s"] for r in rows]
    return {"stage": stage, "size": size, "resolution": resolution, "batch": batch, "steps": len(rows),
            "samples_per_s": statistics.mean(sps), "s_per_step": batch / statistics.mean(sps),
            "wall_s_incl_build": round(total, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    p.add_argument("--size", nargs="+", default=["tiny", "small"], choices=["tiny", "small", "full"])
    p.add_argument("--steps", type=int, default=5, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed first steps")
    p.add_argument("--batch", type=int, default=None, help="per-step batch (default: per size and stage)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: asuka.threads' choice)")
    p.add_argument("--workers", type=int, default=0, help="data-loader workers")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from asuka.threads import set_threads

    args.threads = set_threads(args.threads)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    if device == "auto":
        device = "cpu"
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # accelerate picks the GPU whenever it sees one
    elif not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    where = torch.cuda.get_device_name(0) if device == "cuda" else f"{platform.processor() or 'CPU'}, {args.threads} threads"
    print(f"device: {device} ({where})")
    print(f"{'stage':8} {'size':6} {'res':>4} {'batch':>5} {'samples/s':>10} {'s/step':>8}")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_training_") as tmp:
        tmp = Path(tmp)
        small = _small_backbone(tmp) if "small" in args.size and {"align", "decoder"} & set(args.stages) else None
        for size in args.size:
            for stage in args.stages:
                if (stage, size) not in SETTINGS:
                    continue
                r = measure(stage, size, steps=args.steps, warmup=args.warmup, batch=args.batch, device=device,
                            workers=args.workers, tmp=tmp, small=small)
                r["device"] = where
                results.append(r)
                print(f"{stage:8} {size:6} {r['resolution']:>4} {r['batch']:>5} {r['samples_per_s']:>10.3g} "
                      f"{r['s_per_step']:>8.3g}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
