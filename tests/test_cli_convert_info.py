"""``asuka convert`` (release files / folders + SD backbone folder -> pipeline) and ``asuka info``."""

import json

import pytest
import torch

from asuka.cli import main
from asuka.pipeline import AsukaInpaintPipeline
from asuka.testing import tiny_components




@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """A tiny SD-1.5-inpainting backbone folder, MAE and decoder folders, a release-format aligner."""
    from asuka.models.aligner import _release_names

    root = tmp_path_factory.mktemp("parts")
    backbone = tiny_components(0, text_encoder=True, scheduler="pndm")
    for name in ("unet", "vae", "scheduler", "text_encoder", "tokenizer"):
        backbone[name].save_pretrained(root / "sd" / name)
    (root / "sd" / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionInpaintPipeline"}))
    ours = tiny_components(7)
    ours["mae"].save_pretrained(root / "mae")
    ours["decoder"].save_pretrained(root / "decoder")
    aligner = ours["aligner"]
    # the release's nn.Sequential layout: 0.*, {1..N}.linear1/linear2/norm.*, {N+1}.*
    state = aligner.state_dict()
    release = {rel: state[mine] for mine, rel in _release_names(aligner.config.num_blocks).items()}
    torch.save(release, root / "align.pt")
    return root, backbone, ours


def _convert(root, out, *extra):
    return main(["convert", "--mae", str(root / "mae"), "--aligner", str(root / "align.pt"),
                 "--backbone", str(root / "sd"), "-o", str(out), *extra])


def test_convert_builds_a_loadable_pipeline(parts, tmp_path, capsys):
    root, backbone, ours = parts
    assert _convert(root, tmp_path / "p", "--decoder", str(root / "decoder")) == 0
    assert "wrote" in capsys.readouterr().out
    pipe = AsukaInpaintPipeline.from_pretrained(tmp_path / "p")
    for name in ("mae", "decoder"):
        for p, q in zip(getattr(pipe, name).parameters(), ours[name].parameters()):
            assert torch.equal(p, q)
    assert torch.equal(pipe.aligner.proj_in.weight, ours["aligner"].proj_in.weight)
    assert torch.equal(next(pipe.unet.parameters()), next(backbone["unet"].parameters()))
    assert type(pipe.scheduler).__name__ == "PNDMScheduler" and pipe.text_encoder is None
    # the null condition became CLIP("") of the backbone's text encoder
    ids = backbone["tokenizer"]([""], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(pipe.aligner.null_condition, backbone["text_encoder"](ids)[0][0])
    pipe.set_progress_bar_config(disable=True)
    out = pipe(torch.zeros(1, 3, 64, 64), torch.ones(1, 1, 64, 64), 1, output_type="pt").images
    assert out.shape == (1, 3, 64, 64)


def test_convert_optional_parts_and_dtype(parts, tmp_path, capsys):
    root, _, _ = parts
    assert _convert(root, tmp_path / "p", "--text-encoder", "--dtype", "float16") == 0
    pipe = AsukaInpaintPipeline.from_pretrained(tmp_path / "p")
    assert pipe.decoder is None and pipe.text_encoder is not None and pipe.tokenizer is not None
    capsys.readouterr()
    assert main(["info", str(tmp_path / "p"), "--json"]) == 0
    described = json.loads(capsys.readouterr().out)["components"]
    for name in ("mae", "aligner", "unet", "vae", "text_encoder"):
        assert described[name]["dtypes"] == ["float16"], name


def test_convert_errors_are_one_line(parts, tmp_path, capsys):
    root, _, _ = parts
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert _convert(root, tmp_path / "full") == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert main(["convert", "--mae", str(tmp_path / "none.pth"), "--aligner", str(root / "align.pt"),
                 "--backbone", str(root / "sd"), "-o", str(tmp_path / "o")]) == 2
    assert "--mae: no such file" in capsys.readouterr().err
    assert main(["convert", "--mae", str(root / "mae"), "--aligner", str(root / "align.pt"),
                 "--backbone", str(tmp_path / "no-sd"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "cannot load unet" in err[-1]  # "loading backbone" note + the error


def test_convert_refuses_incompatible_release_files(parts, tmp_path, capsys):
    root, _, _ = parts
    from asuka.models.aligner import AsukaAligner, _release_names

    big = AsukaAligner.from_preset("tiny", dim=48)  # the UNet's cross_attention_dim is 32
    state = big.state_dict()
    wide = {rel: state[mine] for mine, rel in _release_names(big.config.num_blocks).items()}
    torch.save(wide, tmp_path / "wide.pt")
    assert main(["convert", "--mae", str(root / "mae"), "--aligner", str(tmp_path / "wide.pt"),
                 "--backbone", str(root / "sd"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("asuka: error: incompatible pipeline components") and "48" in err and "32" in err
    torch.save({"garbage": torch.zeros(2)}, tmp_path / "bad.pt")
    assert main(["convert", "--mae", str(root / "mae"), "--aligner", str(tmp_path / "bad.pt"),
                 "--backbone", str(root / "sd"), "-o", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("asuka: error: AsukaAligner")


def test_info_describes_components(parts, tmp_path, capsys):
    root, backbone, ours = parts
    assert _convert(root, tmp_path / "p", "--decoder", str(root / "decoder")) == 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "p")]) == 0
    text = capsys.readouterr().out
    for needle in ("AsukaInpaintPipeline", "asuka.MAEPrior", "asuka.AsukaAligner", "asuka.MaskConditionedDecoder",
                   "diffusers.UNet2DConditionModel", "diffusers.PNDMScheduler", "cross_attention_dim=32",
                   "null_tokens=77", "float32", "text_encoder  (none)", "total:"):
        assert needle in text, needle
    assert main(["info", str(tmp_path / "p"), "--json"]) == 0
    described = json.loads(capsys.readouterr().out)
    unet = described["components"]["unet"]
    assert unet["parameters"] == sum(p.numel() for p in backbone["unet"].parameters())
    assert unet["dtypes"] == ["float32"] and unet["bytes"] > 4 * unet["parameters"]
    loaded = AsukaInpaintPipeline.from_pretrained(tmp_path / "p")
    for name in ("mae", "aligner", "decoder"):  # safetensors hold the state dict (weights + saved buffers)
        expected = sum(t.numel() for t in getattr(loaded, name).state_dict().values())
        assert described["components"][name]["parameters"] == expected, name
    assert described["bytes"] >= sum(c.get("bytes", 0) for c in described["components"].values())


def test_info_errors(tmp_path, capsys):
    assert main(["info", str(tmp_path)]) == 2
    assert "no model_index.json" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "nope" / "deeper")]) == 2
    assert "not found" in capsys.readouterr().err
