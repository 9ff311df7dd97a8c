"""The ``asuka`` process entry point (asuka.cli.console) and its garbage-collector handling
(asuka.cli.startup): collection is paused while a command starts, resumes before the work,
the output is the same as asuka.cli.main's, and in-process calls of main leave gc alone."""

import gc
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from asuka.cli import console, main, startup


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from asuka.testing import tiny_pipeline

    path = tmp_path_factory.mktemp("model") / "tiny"
    tiny_pipeline(0).save_pretrained(path)
    return str(path)


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    PIL.Image.fromarray((rng.random((48, 64, 3)) * 255).astype(np.uint8)).save(tmp_path / "img.png")
    mask = np.zeros((48, 64), np.uint8)
    mask[10:30, 20:44] = 255
    PIL.Image.fromarray(mask).save(tmp_path / "mask.png")
    return tmp_path


@pytest.fixture
def gc_restored():
    """console() freezes the objects of the process it runs in: undo that for the test process."""
    assert gc.isenabled()
    yield
    gc.unfreeze()
    gc.enable()


def _argv(files, out, model):
    return ["inpaint", str(files / "img.png"), str(files / "mask.png"), "-o", str(out), "--model", model,
            "--steps", "2", "--device", "cpu", "--threads", "1"]


def _spy(monkeypatch, seen):
    """Record whether gc is on while the model loads and while the pipeline runs."""
    import asuka.pipeline
    from asuka.pipeline import AsukaInpaintPipeline

    load, call = asuka.pipeline.load_pipeline, AsukaInpaintPipeline.__call__

    def spy_load(*args, **kwargs):
        seen["load"] = gc.isenabled()
        return load(*args, **kwargs)

    def spy_call(self, *args, **kwargs):
        seen["call"] = (gc.isenabled(), gc.get_freeze_count())
        return call(self, *args, **kwargs)

    monkeypatch.setattr(asuka.pipeline, "load_pipeline", spy_load)
    monkeypatch.setattr(AsukaInpaintPipeline, "__call__", spy_call)


def test_console_pauses_gc_during_start_up_only_and_writes_what_main_writes(files, model, monkeypatch,
                                                                          gc_restored):
    seen = {}
    _spy(monkeypatch, seen)
    assert main(_argv(files, files / "main.png", model)) == 0
    assert seen == {"load": True, "call": (True, 0)}  # in-process main: gc untouched
    assert gc.get_freeze_count() == 0

    assert console(_argv(files, files / "console.png", model)) == 0
    enabled, frozen = seen["call"]
    assert seen["load"] is False  # paused while importing and loading
    assert enabled and frozen > 0  # on again for the work; the start-up objects frozen
    assert gc.isenabled()
    with PIL.Image.open(files / "main.png") as a, PIL.Image.open(files / "console.png") as b:
        assert np.array_equal(np.asarray(a), np.asarray(b)) and a.text == b.text


def test_console_turns_gc_back_on_after_an_error_and_for_other_commands(files, monkeypatch, gc_restored, capsys):
    # fails after the inputs are checked, before inpaint's own release(): main's finally releases
    assert console(["inpaint", str(files / "img.png"), str(files / "mask.png"), "-o", str(files / "o.png"),
                    "--model", str(files / "no-such-model")]) == 2
    assert gc.isenabled() and "asuka: error:" in capsys.readouterr().err
    gc.unfreeze()

    # a command that does not release itself is released before it starts: it runs with gc on
    import asuka.cli.masks as masks

    seen = []
    monkeypatch.setattr(masks, "run", lambda args: seen.append(gc.isenabled()) or 0)
    assert console(["masks", "--mix", "x", "--n", "1", "-o", str(files / "m")]) == 0
    assert seen == [True] and gc.isenabled()


def test_hold_and_release_are_no_ops_when_gc_is_off(gc_restored):
    gc.disable()
    startup.hold()
    startup.release()
    assert not gc.isenabled() and gc.get_freeze_count() == 0


def test_asuka_process_runs_and_exits_cleanly(files, model):
    """The real entry point in a fresh process: exit code 0, the file written, nothing on stderr
    but the progress bar (no warning or traceback at exit)."""
    import asuka

    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(Path(asuka.__file__).resolve().parents[1]))
    proc = subprocess.run([sys.executable, "-m", "asuka", *_argv(files, files / "p.png", model)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert proc.stdout.strip() == f"wrote {files / 'p.png'}"
    with PIL.Image.open(files / "p.png") as img:
        assert img.size == (64, 48)
