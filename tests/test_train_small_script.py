"""scripts/train_small.sh refuses contradictory continuation modes before it trains or writes
anything (exit 2, one line naming the variables)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_small.sh"
MODES = ("ONESTEP_STEPS", "ALIGN_ONESTEP_STEPS", "UNET_CONTINUE_STEPS", "LINEAR_ONESTEP_STEPS")

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def run(tmp_path, **env):
    full = {k: v for k, v in os.environ.items() if k not in MODES + ("REUSE", "REUSE_COMMIT")}
    full.update(RUNS=str(tmp_path / "runs"), **env)
    return subprocess.run(["bash", str(SCRIPT)], env=full, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("mode", MODES)
def test_a_continuation_mode_needs_a_model_to_continue(tmp_path, mode):
    proc = run(tmp_path, **{mode: "10"})
    assert proc.returncode == 2
    assert "REUSE" in proc.stderr and mode in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_two_continuation_modes_are_refused(tmp_path):
    proc = run(tmp_path, REUSE=str(tmp_path / "model"), ALIGN_ONESTEP_STEPS="10", LINEAR_ONESTEP_STEPS="10")
    assert proc.returncode == 2
    assert "give one of them" in proc.stderr
    assert not (tmp_path / "runs").exists()


CONTINUED = {  # mode: (stage, folder copied as its init, relative to the REUSE folder, init name)
    "UNET_CONTINUE_STEPS": ("unet_continue", "model/unet", "unet_init"),
    "ONESTEP_STEPS": ("unet_onestep", "model/unet", "unet_init"),
    "ALIGN_ONESTEP_STEPS": ("align_onestep", "model/aligner", "aligner_init"),
    "LINEAR_ONESTEP_STEPS": ("align_linear_onestep", "model-ablations/aligner-linear", "aligner_linear_init"),
}


@pytest.mark.parametrize("mode", sorted(CONTINUED))
def test_a_continuation_mode_trains_its_stage_from_a_copy_of_the_right_part(tmp_path, mode):
    name, part, init = CONTINUED[mode]
    for folder in ("model/vae", "model/unet", "model/scheduler", "model/mae", "model/aligner", "model/decoder",
                   "model-ablations/aligner-linear", "model-ablations/decoder-noaug", "init/unet"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "which").write_text(folder)
    (tmp_path / "model" / "model_index.json").write_text("{}")
    (tmp_path / "init" / "unet" / "config.json").write_text("{}")  # no extraction from git history
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "asuka"  # records its arguments instead of training
    fake.write_text('#!/bin/sh\necho "$@" >> "$RUNS/calls"\n')
    fake.chmod(0o755)
    run(tmp_path, **{mode: "7", "REUSE": str(tmp_path / "model"), "INIT": str(tmp_path / "init"),
                     "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "NICE": "0"})
    runs = tmp_path / "runs"
    calls = (runs / "calls").read_text().splitlines()
    assert len(calls) == 1 and f"output_dir={runs / name}" in calls[0] and "max_steps=7" in calls[0]
    assert (runs / init / "which").read_text() == part  # what the stage starts from
    assert (runs / f"{name}.done").exists()
