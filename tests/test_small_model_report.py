"""scripts/small_model_report.py's output cache: reused only for the model, inputs, settings and
code that made it."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report():
    spec = importlib.util.spec_from_file_location("small_model_report", ROOT / "scripts" / "small_model_report.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["small_model_report"] = mod
    spec.loader.exec_module(mod)
    return mod


def _args(tmp_path, model_bytes=b"weights"):
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "w.safetensors").write_bytes(model_bytes)
    evals = tmp_path / "eval"
    evals.mkdir(exist_ok=True)
    (evals / "a.png").write_bytes(b"png")
    return type("Args", (), {"model": str(model), "ablations": str(tmp_path / "none"), "eval_dir": str(evals),
                             "masks_per_photo": 2, "mask_seed": 7, "batch_size": 8})()


def test_the_cache_is_refused_for_another_model_or_settings(report, tmp_path):
    cache = tmp_path / "cache"
    defaults = {"steps": 1, "poisson_blend": None}
    key = report.cache_key(_args(tmp_path), defaults)
    report.open_cache(cache, key)
    out = report.cached(cache, "asuka_seed42", lambda: -torch.ones(1, 3, 4, 4))  # on the 8-bit grid
    torch.testing.assert_close(report.cached(cache, "asuka_seed42", lambda: torch.ones(1, 3, 4, 4)), out)
    report.open_cache(cache, report.cache_key(_args(tmp_path), defaults))  # the same: reused
    with pytest.raises(SystemExit, match="another model, inputs, settings or code"):
        report.open_cache(cache, report.cache_key(_args(tmp_path, b"other weights"), defaults))
    with pytest.raises(SystemExit, match="another model"):
        report.open_cache(cache, report.cache_key(_args(tmp_path), {**defaults, "poisson_blend": False}))
    (cache / "cache_key.json").unlink()
    with pytest.raises(SystemExit, match="without a record"):
        report.open_cache(cache, key)
    report.open_cache(None, key)  # no cache: nothing to check


def test_eval_masks_do_not_move_when_photos_are_added(report, tmp_path):
    """A photo's masks depend on its name, not on its place in the folder."""
    import numpy as np
    from PIL import Image

    folder = tmp_path / "eval"
    folder.mkdir()
    for name in ("m-photo", "z-photo"):
        Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(folder / f"{name}.png")
    _, before, names = report.load_eval_set(folder, 2, 7)
    Image.fromarray(np.full((64, 64, 3), 9, np.uint8)).save(folder / "a-photo.png")  # sorts first
    _, after, names_after = report.load_eval_set(folder, 2, 7)
    assert names_after[2:] == names == ["m-photo#0", "m-photo#1", "z-photo#0", "z-photo#1"]
    torch.testing.assert_close(after[2:], before)
    assert not torch.equal(before[0], before[2])  # different photos, different masks
