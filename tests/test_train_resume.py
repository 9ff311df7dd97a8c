"""Exact resume: a run interrupted after a checkpoint and resumed logs the same losses, step for
step, as the uninterrupted run, and exports the same weights (CPU, so bit for bit)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from asuka.training import get_stage, load_config, train
from asuka.training.checkpoint import list_checkpoints
from asuka.training.logs import read_metrics


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume_photos")
    rng = np.random.default_rng(1)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (36 + 4 * i, 44, 3), dtype=np.uint8)).save(root / f"i{i}.png")
    return root


def _args(stage: str, out: Path, root: Path, *extra: str) -> list[str]:
    base = {"mae": ["model=tiny"], "decoder": ["backbone.preset=tiny", "loss.perceptual=off"]}[stage]
    return [f"output_dir={out}", f"data.root={root}", "data.resolution=32", "data.num_workers=0",
            "batch_size=2", "log_every=1", "masks.kind=paper_train", *base, *extra]


def _config(stage, out, root, *extra):
    return load_config(get_stage(stage).config_class, [], _args(stage, out, root, *extra), stage=stage)


def _same_run(a: Path, b: Path, component: str) -> None:
    ra, rb = read_metrics(a), read_metrics(b)
    assert [r["step"] for r in rb] == [r["step"] for r in ra]
    for x, y in zip(ra, rb):
        assert {k: v for k, v in x.items() if k != "samples_per_s"} == \
               {k: v for k, v in y.items() if k != "samples_per_s"}, x["step"]
    wa = load_file(str(a / "export" / component / "diffusion_pytorch_model.safetensors"))
    wb = load_file(str(b / "export" / component / "diffusion_pytorch_model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_mae_resume_with_accumulation_ema_and_schedule(images, tmp_path):
    extra = ["max_steps=8", "checkpoint_every=3", "grad_accum=2", "ema.enabled=true", "ema.decay=0.9",
             "optim.schedule=cosine", "optim.warmup_steps=2", "optim.lr=1e-3"]
    stage = get_stage("mae")
    full = train(stage, _config("mae", tmp_path / "full", images, *extra))
    assert full.step == 8
    part = train(stage, _config("mae", tmp_path / "part", images, *extra), stop_after=5)
    assert part.step == 5 and not part.exported  # "killed" after step 5, last checkpoint at 3
    assert [s for s, _ in list_checkpoints(tmp_path / "part")] == [3]
    # resumed with more loader workers: the data stream does not depend on them
    resumed = train(stage, _config("mae", tmp_path / "part", images, *extra, "data.num_workers=2"))
    assert resumed.step == 8
    _same_run(tmp_path / "full", tmp_path / "part", "mae")


def test_decoder_resume_with_gan_and_two_optimizers(images, tmp_path):
    extra = ["max_steps=6", "checkpoint_every=2", "loss.gan_start=1", "optim.lr=1e-3", "disc_optim.lr=1e-3"]
    stage = get_stage("decoder")
    train(stage, _config("decoder", tmp_path / "full", images, *extra))
    train(stage, _config("decoder", tmp_path / "part", images, *extra), stop_after=3)
    train(stage, _config("decoder", tmp_path / "part", images, *extra))
    rows = read_metrics(tmp_path / "full")
    assert rows[0]["d_loss"] == 0.0 and all(r["d_loss"] > 0 and r["gan_weight"] > 0 for r in rows[1:])
    _same_run(tmp_path / "full", tmp_path / "part", "decoder")


def test_resume_after_kill_9(images, tmp_path):
    """A real ``kill -9`` of ``asuka train`` right after its first checkpoint, then a resume."""
    extra = ["max_steps=40", "checkpoint_every=4", "optim.lr=1e-3"]
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    code = "import torch, sys; torch.set_num_threads(1); from asuka.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, "train", "mae", "--threads", "1", *_args("mae", killed, images, *extra)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not list_checkpoints(killed) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "export").exists()
    assert list_checkpoints(killed)[-1][0] < 40

    train(get_stage("mae"), _config("mae", killed, images, *extra))  # resume=auto
    train(get_stage("mae"), _config("mae", tmp_path / "full", images, *extra))
    _same_run(tmp_path / "full", killed, "mae")
