"""``asuka inpaint`` in-process (asuka.cli.main) on a saved tiny pipeline; one subprocess run."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from asuka.cli import main

H, W = 48, 64




@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from asuka.testing import tiny_pipeline

    path = tmp_path_factory.mktemp("model") / "tiny"
    tiny_pipeline(0).save_pretrained(path)
    return str(path)


def _photo(seed=0, h=H, w=W):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def _hole(h=H, w=W):
    m = np.zeros((h, w), np.uint8)
    m[10:30, 20:44] = 255
    return m


@pytest.fixture
def files(tmp_path):
    PIL.Image.fromarray(_photo()).save(tmp_path / "img.png")
    PIL.Image.fromarray(_hole()).save(tmp_path / "mask.png")
    return tmp_path


def _inpaint(*argv, model=None, steps=True):
    args = ["inpaint", *map(str, argv)]
    if model:
        args += ["--model", model]
    if steps:
        args += ["--steps", "2", "--device", "cpu"]
    return main(args)


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("asuka: error: "), err
    assert "Traceback" not in "\n".join(err)
    for needle in needles:
        assert needle in err[-1], err[-1]


# ------------------------------------------------------------------ working runs
def test_single_image_keeps_size_and_known_pixels(files, model, capsys):
    assert _inpaint(files / "img.png", files / "mask.png", "-o", files / "out.png", model=model) == 0
    out = np.asarray(PIL.Image.open(files / "out.png"))
    assert out.shape == (H, W, 3)
    keep = _hole() == 0
    assert np.array_equal(out[keep], _photo()[keep])
    assert not np.array_equal(out[~keep], _photo()[~keep])
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("ext, fmt", [("jpg", "JPEG"), ("webp", "WEBP")])
def test_output_format_follows_extension(files, model, ext, fmt):
    assert _inpaint(files / "img.png", files / "mask.png", "-o", files / f"out.{ext}", model=model) == 0
    with PIL.Image.open(files / f"out.{ext}") as img:
        assert img.format == fmt and img.size == (W, H)


def test_crop_and_full_image_modes_and_options(files, model):
    big = _photo(1, 150, 200)
    PIL.Image.fromarray(big).save(files / "big.png")
    mask = np.zeros((150, 200), np.uint8)
    mask[70:80, 100:112] = 255
    PIL.Image.fromarray(mask).save(files / "bigmask.png")
    for extra in (["--crop-margin", "8"], ["--full-image"], ["--no-composite", "--decoder", "vae"],
                  ["--condition", "null", "--feather", "3", "--guidance-scale", "2"]):
        out = files / f"o{len(extra)}{extra[0]}.png"
        assert _inpaint(files / "big.png", files / "bigmask.png", "-o", out, *extra, model=model) == 0
        result = np.asarray(PIL.Image.open(out))
        assert result.shape == (150, 200, 3)
        if "--no-composite" not in extra and "--feather" not in extra:
            assert np.array_equal(result[mask == 0], big[mask == 0])


def test_folder_mode_matches_stems_skips_existing_and_overwrites(tmp_path, model, capsys):
    images, masks, out = tmp_path / "images", tmp_path / "masks", tmp_path / "out"
    images.mkdir(), masks.mkdir()
    for i, stem in enumerate(("a", "b")):
        PIL.Image.fromarray(_photo(i)).save(images / f"{stem}.jpg")
        PIL.Image.fromarray(_hole()).save(masks / f"{stem}.png")
    (masks / "unused.png").write_bytes(b"")  # masks without an image are ignored
    assert _inpaint("--images", images, "--masks", masks, "-o", out, model=model) == 0
    assert sorted(os.listdir(out)) == ["a.png", "b.png"]
    (out / "a.png").write_bytes(b"sentinel")
    assert _inpaint("--images", images, "--masks", masks, "-o", out, model=model) == 0
    assert "skipping 2 existing" in capsys.readouterr().err
    assert (out / "a.png").read_bytes() == b"sentinel"
    assert _inpaint("--images", images, "--masks", masks, "-o", out, "--overwrite", model=model) == 0
    assert PIL.Image.open(out / "a.png").size == (W, H)


def test_folder_mode_reports_bad_files_and_continues(tmp_path, model, capsys):
    images, masks, out = tmp_path / "images", tmp_path / "masks", tmp_path / "out"
    images.mkdir(), masks.mkdir()
    PIL.Image.fromarray(_photo()).save(images / "good.png")
    PIL.Image.fromarray(_hole()).save(masks / "good.png")
    (images / "broken.png").write_text("not an image")
    PIL.Image.fromarray(_hole()).save(masks / "broken.png")
    assert _inpaint("--images", images, "--masks", masks, "-o", out, model=model) == 1
    err = capsys.readouterr().err
    assert "broken.png: cannot read image" in err and "1 of 2 image(s) failed" in err
    assert "Traceback" not in err and os.listdir(out) == ["good.png"]


def test_folder_mode_missing_mask_is_an_error(tmp_path, model, capsys):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    PIL.Image.fromarray(_photo()).save(images / "a.png")
    assert _inpaint("--images", images, "--masks", masks, "-o", tmp_path / "out", model=model) == 2
    _one_line_error(capsys, "no mask", "a")


# ------------------------------------------------------------------ every kind of input
def test_image_modes_and_exif(tmp_path, model):
    mask = _hole()
    PIL.Image.fromarray(mask).save(tmp_path / "mask.png")
    cases = {
        "rgba.png": PIL.Image.fromarray(_photo()).convert("RGBA"),
        "gray.png": PIL.Image.fromarray(_photo()).convert("L"),
        "pal.png": PIL.Image.fromarray(_photo()).convert("P"),
        "cmyk.jpg": PIL.Image.fromarray(_photo()).convert("CMYK"),
        "deep.png": PIL.Image.fromarray(_photo()[..., 0].astype(np.uint16) * 257),
    }
    for name, img in cases.items():
        img.save(tmp_path / name)
        assert _inpaint(tmp_path / name, tmp_path / "mask.png", "-o", tmp_path / f"out_{name}.png", model=model) == 0
        assert PIL.Image.open(tmp_path / f"out_{name}.png").size == (W, H)
    # EXIF orientation 6: the stored W x H image is shown (and inpainted) as H x W
    exif = PIL.Image.Exif()
    exif[0x0112] = 6
    PIL.Image.fromarray(_photo(3, W, H)).save(tmp_path / "rot.jpg", exif=exif.tobytes())
    assert _inpaint(tmp_path / "rot.jpg", tmp_path / "mask.png", "-o", tmp_path / "rot.png", model=model) == 0
    assert PIL.Image.open(tmp_path / "rot.png").size == (W, H)


def test_alpha_mask_empty_mask_and_all_hole(files, model):
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[10:30, 20:44, 3] = 255  # black stroke on a transparent layer
    PIL.Image.fromarray(rgba).save(files / "alpha.png")
    assert _inpaint(files / "img.png", files / "alpha.png", "-o", files / "a.png", model=model) == 0
    out = np.asarray(PIL.Image.open(files / "a.png"))
    keep = _hole() == 0
    assert np.array_equal(out[keep], _photo()[keep]) and not np.array_equal(out[~keep], _photo()[~keep])

    PIL.Image.fromarray(np.zeros((H, W), np.uint8)).save(files / "empty.png")
    assert _inpaint(files / "img.png", files / "empty.png", "-o", files / "e.png", model=model) == 0
    assert np.array_equal(np.asarray(PIL.Image.open(files / "e.png")), _photo())

    PIL.Image.fromarray(np.full((H, W), 255, np.uint8)).save(files / "full.png")
    assert _inpaint(files / "img.png", files / "full.png", "-o", files / "f.png", model=model) == 0
    assert PIL.Image.open(files / "f.png").size == (W, H)


def test_mask_of_other_size_needs_resize_mask(files, model, capsys):
    PIL.Image.fromarray(_hole(24, 32)).save(files / "small.png")
    assert _inpaint(files / "img.png", files / "small.png", "-o", files / "o.png", model=model) == 2
    _one_line_error(capsys, "32x24 does not match the image size 64x48", "--resize-mask")
    assert not (files / "o.png").exists()
    assert _inpaint(files / "img.png", files / "small.png", "-o", files / "o.png", "--resize-mask", model=model) == 0
    assert PIL.Image.open(files / "o.png").size == (W, H)


# ------------------------------------------------------------------ bad input -> one line, exit 2
def test_missing_and_unreadable_files(files, model, capsys):
    assert _inpaint(files / "nope.png", files / "mask.png", "-o", files / "o.png", model=model) == 2
    _one_line_error(capsys, "file not found", "nope.png")
    (files / "junk.png").write_text("junk")
    assert _inpaint(files / "img.png", files / "junk.png", "-o", files / "o.png", model=model) == 2
    _one_line_error(capsys, "cannot read image", "junk.png")


def test_output_equal_to_input_is_refused(files, model, capsys):
    before = (files / "img.png").read_bytes()
    (files / "link.png").symlink_to(files / "img.png")
    for out in (files / "img.png", files / "." / "img.png", files / "link.png", files / "mask.png"):
        assert _inpaint(files / "img.png", files / "mask.png", "-o", out, model=model) == 2
        _one_line_error(capsys, "same file")
    assert (files / "img.png").read_bytes() == before


def test_unknown_extension_and_missing_model(files, model, capsys, monkeypatch):
    assert _inpaint(files / "img.png", files / "mask.png", "-o", files / "o.gif", model=model) == 2
    _one_line_error(capsys, "unsupported output extension '.gif'")
    # no --model and no shipped default (a package installed without asuka/pretrained)
    monkeypatch.setattr("asuka.registry.shipped_model_dir", lambda name="asuka-small": files / "no-default")
    assert _inpaint(files / "img.png", files / "mask.png", "-o", files / "o.png") == 2
    _one_line_error(capsys, "shipped model 'asuka-small' is not installed", "pipeline folder or hub id")
    assert _inpaint(files / "img.png", files / "mask.png", "-o", files / "o.png", model=str(files)) == 2
    _one_line_error(capsys, "not a pipeline folder")
    assert _inpaint(files / "img.png", files / "mask.png", "-o", files / "o.png",
                    model=str(files / "no-such-model")) == 2
    _one_line_error(capsys, "cannot load model")


def test_argument_mistakes(files, model, capsys):
    assert _inpaint(files / "img.png", "-o", files / "o.png", model=model) == 2
    _one_line_error(capsys, "both IMAGE and MASK")
    assert _inpaint(files / "img.png", files / "mask.png", "--images", files, "-o", files / "o.png", model=model) == 2
    _one_line_error(capsys, "not both")
    assert _inpaint(files / "img.png", files / "mask.png", "-o", files / "o.png", "--steps", "0", model=model,
                    steps=False) == 2
    _one_line_error(capsys, "--steps")


def test_subprocess_bad_input_has_no_traceback(files, model):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "asuka", "inpaint", str(files / "img.png"), str(files / "missing.png"),
         "-o", str(files / "o.png"), "--model", model],
        capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"asuka: error: file not found: {files / 'missing.png'}"]


def test_default_model_is_used_and_announced(files, model, capsys, monkeypatch):
    monkeypatch.setattr("asuka.registry.shipped_model_dir", lambda name="asuka-small": Path(model))
    assert _inpaint(files / "img.png", files / "mask.png", "-o", files / "o.png") == 0
    err = capsys.readouterr().err
    assert "small demonstration model" in err and "--model" in err and "asuka convert" in err
    assert PIL.Image.open(files / "o.png").size == (W, H)


def test_shipped_default_model_folder_loads():
    from asuka.cli.inpaint import default_model
    from asuka.pipeline import load_pipeline

    folder = default_model()
    if not (folder / "model_index.json").is_file():
        pytest.skip(f"no shipped model at {folder}")
    pipe = load_pipeline(folder, device="cpu", dtype="float32")
    assert pipe.decoder is not None and pipe.default_num_inference_steps == 1
    assert (pipe.native_resolution, pipe.working_resolution) == (128, 256)  # trained at 128, works at 256
