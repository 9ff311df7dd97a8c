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
