"""``asuka masks``: PNG polarity, manifest, overwrite refusal, per-index reproducibility."""

import json

import numpy as np
from PIL import Image

from asuka.cli import main
from asuka.masks import get_mixture, rng_for


def _png(path):
    return np.asarray(Image.open(path))


def test_masks_cli_writes_pngs_and_manifest(tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["masks", "--mix", "paper-train", "--n", "6", "--size", "64", "--seed", "5", "-o", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == [f"{i:04d}.png" for i in range(6)]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 5 and manifest["size"] == [64, 64] and manifest["count"] == 6
    mix = get_mixture("paper-train")
    for entry in manifest["masks"]:
        png = _png(out / entry["file"])
        assert png.dtype == np.uint8 and set(np.unique(png)) <= {0, 255}
        draw = mix.sample(64, 64, rng_for(5, entry["index"]))  # reproducible from (seed, index)
        assert np.array_equal(png == 255, draw.mask == 1)  # polarity: 255 = hole
        assert entry["generator"] == draw.generator
        assert abs(entry["ratio"] - (png == 255).mean()) < 1e-6
        assert 0.1 <= entry["ratio"] <= 0.75
    assert "wrote 6 masks" in capsys.readouterr().out


def test_masks_cli_refuses_overwrite_and_merges_shards(tmp_path, capsys):
    out = tmp_path / "m"
    args = ["masks", "--mix", "comod", "--size", "32x48", "--seed", "1", "-o", str(out)]
    assert main(args + ["--n", "3"]) == 0
    first = _png(out / "0001.png")
    assert first.shape == (32, 48)
    before = (out / "0000.png").stat().st_mtime_ns
    assert main(args + ["--n", "3"]) == 2
    assert "already exist" in capsys.readouterr().err
    assert (out / "0000.png").stat().st_mtime_ns == before
    # a second shard continues the same run and merges into the manifest
    assert main(args + ["--n", "2", "--start", "3"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [m["index"] for m in manifest["masks"]] == [0, 1, 2, 3, 4]
    # a one-shot run of 5 gives the same files as the two shards
    whole = tmp_path / "whole"
    assert main(["masks", "--mix", "comod", "--size", "32x48", "--seed", "1", "-o", str(whole), "--n", "5"]) == 0
    for i in range(5):
        assert np.array_equal(_png(out / f"{i:04d}.png"), _png(whole / f"{i:04d}.png"))
    # another run into the same folder is refused, unless --overwrite
    other = ["masks", "--mix", "rectangle", "--size", "32", "--seed", "2", "-o", str(out), "--n", "1", "--start", "9"]
    assert main(other) == 2
    assert "belongs to another run" in capsys.readouterr().err
    assert main(other + ["--overwrite"]) == 0
    assert json.loads((out / "manifest.json").read_text())["mix"] == "rectangle"


def test_masks_cli_errors(tmp_path, capsys):
    assert main(["masks", "--mix", "nope", "--n", "1", "-o", str(tmp_path / "x")]) == 2
    assert "unknown mask mix" in capsys.readouterr().err
    assert main(["masks", "--mix", "comod", "--n", "1", "--size", "12y", "-o", str(tmp_path / "x")]) == 2
    assert "--size" in capsys.readouterr().err
    assert main(["masks", "--mix", "object", "--n", "1", "--shapes", str(tmp_path / "no.json"),
                 "-o", str(tmp_path / "x")]) == 2
    assert "not found" in capsys.readouterr().err
