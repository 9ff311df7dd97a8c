"""The FLUX variant from release-layout files: from_official, `asuka convert --flux`, and every CLI
command (inpaint, serve, info, run-benchmark) on a tiny FLUX pipeline folder."""

import argparse
import json
import threading

import numpy as np
import PIL.Image
import pytest
import torch
from test_aligner import release_state_dict as aligner_release_state_dict
from test_decoder import release_state_dict as decoder_release_state_dict
from test_mae import _release_state_dict as mae_release_state_dict

from asuka.cli import main
from asuka.errors import CheckpointError
from asuka.pipeline_flux import AsukaFluxFillPipeline
from asuka.testing import TINY_FLUX_JOINT_DIM, TINY_FLUX_POOLED_DIM, tiny_flux_components

H, W = 48, 64
TINY_MAE = dict(num_heads=2, decoder_num_heads=2, prior_layers=1)


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """A FLUX.1-Fill diffusers folder and an ASUKA release folder laid out as the release ships them."""
    root = tmp_path_factory.mktemp("official")
    parts = tiny_flux_components(0)
    for name in ("transformer", "vae", "scheduler"):
        parts[name].save_pretrained(root / "flux" / name)
    (root / "flux" / "model_index.json").write_text(json.dumps({"_class_name": "FluxFillPipeline"}))
    asuka = root / "asuka"
    (asuka / "ckpt").mkdir(parents=True)
    torch.save({"model": mae_release_state_dict()}, asuka / "mae_300.pth")
    torch.save(aligner_release_state_dict(in_dim=32, dim=TINY_FLUX_POOLED_DIM, head_dim=8, mlp_hidden=96),
               asuka / "asuka_alignment_clip.pt")
    torch.save(aligner_release_state_dict(in_dim=32, dim=TINY_FLUX_JOINT_DIM, head_dim=16, mlp_hidden=128, seed=1),
               asuka / "asuka_alignment_t5.pt")
    torch.save(decoder_release_state_dict(ch=32, ch_mult=(1, 1, 1, 1), z=16, post_quant_conv=False),
               asuka / "asuka_decoder.ckpt")
    g = torch.Generator().manual_seed(0)
    torch.save(torch.randn(1, TINY_FLUX_POOLED_DIM, generator=g), asuka / "ckpt" / "vec.pt")
    torch.save(torch.randn(1, 16, TINY_FLUX_JOINT_DIM, generator=g), asuka / "ckpt" / "txt_256.pt")
    return root


@pytest.fixture(scope="module")
def folder(official, tmp_path_factory):
    pipe = AsukaFluxFillPipeline.from_official(official / "flux", official / "asuka", mae_config=TINY_MAE)
    path = tmp_path_factory.mktemp("model") / "tiny-flux"
    pipe.save_pretrained(path)
    return path


def test_from_official_reads_every_release_file(official):
    pipe = AsukaFluxFillPipeline.from_official(official / "flux", official / "asuka", mae_config=TINY_MAE)
    vec = torch.load(official / "asuka" / "ckpt" / "vec.pt")
    assert torch.equal(pipe.clip_aligner.null_condition, vec)
    assert pipe.t5_aligner.null_condition.shape == (16, TINY_FLUX_JOINT_DIM)
    assert pipe.decoder.config.latent_channels == 16 and pipe.transformer.dtype == torch.float32
    assert not any("modulation" in k for k in pipe.t5_aligner.state_dict())
    no_decoder = AsukaFluxFillPipeline.from_official(official / "flux", official / "asuka", decoder=False,
                                                     mae_config=TINY_MAE)
    assert no_decoder.decoder is None
    with pytest.raises(CheckpointError, match="no mae_300.pth"):
        AsukaFluxFillPipeline.from_official(official / "flux", official / "flux", mae_config=TINY_MAE)
    with pytest.raises(CheckpointError, match="cannot load transformer"):
        AsukaFluxFillPipeline.from_official(official / "asuka", official / "asuka", mae_config=TINY_MAE)


def test_convert_flux_writes_a_self_contained_folder(official, tmp_path, capsys, monkeypatch):
    import asuka.pipeline_flux as pf

    original = pf.AsukaFluxFillPipeline.from_official.__func__
    # the tiny MAE's head counts (the release's ViT-B/16 needs none)
    monkeypatch.setattr(pf.AsukaFluxFillPipeline, "from_official",
                        classmethod(lambda cls, *a, **k: original(cls, *a, mae_config=TINY_MAE, **k)))
    out = tmp_path / "converted"
    assert main(["convert", "--flux", str(official / "flux"), "--asuka", str(official / "asuka"), "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "AsukaFluxFillPipeline" and index["t5_aligner"] == ["asuka", "AsukaAligner"]
    loaded = AsukaFluxFillPipeline.from_pretrained(out)
    assert loaded.decoder is not None and loaded.text_encoder is None
    assert main(["convert", "--flux", str(official / "flux"), "--mae", "x.pth", "-o", str(tmp_path / "b")]) == 2
    assert "SD-1.5 variant" in capsys.readouterr().err


def _files(tmp_path):
    rng = np.random.default_rng(0)
    PIL.Image.fromarray((rng.random((H, W, 3)) * 255).astype(np.uint8)).save(tmp_path / "img.png")
    mask = np.zeros((H, W), np.uint8)
    mask[10:30, 20:44] = 255
    PIL.Image.fromarray(mask).save(tmp_path / "mask.png")
    return tmp_path / "img.png", tmp_path / "mask.png"


def test_cli_inpaint_and_info_on_a_flux_folder(folder, tmp_path, capsys):
    image, mask = _files(tmp_path)
    out = tmp_path / "out.png"
    assert main(["inpaint", str(image), str(mask), "-o", str(out), "--model", str(folder), "--steps", "2",
                 "--device", "cpu"]) == 0
    result, original = np.asarray(PIL.Image.open(out)), np.asarray(PIL.Image.open(image))
    keep = np.asarray(PIL.Image.open(mask)) == 0
    assert result.shape == (H, W, 3) and np.array_equal(result[keep], original[keep])
    assert not np.array_equal(result[~keep], original[~keep])
    capsys.readouterr()
    assert main(["info", str(folder), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["pipeline"] == "AsukaFluxFillPipeline"
    assert info["components"]["transformer"]["config"]["in_channels"] == 384
    assert info["components"]["t5_aligner"]["config"]["dim"] == TINY_FLUX_JOINT_DIM


def test_cli_run_benchmark_on_a_flux_folder(folder, tmp_path, capsys):
    data = tmp_path / "bench"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for stem in ("a", "b"):
        image, mask = _files(tmp_path)
        image.rename(data / "images" / f"{stem}.png")
        mask.rename(data / "masks" / f"{stem}.png")
    out = tmp_path / "results"
    assert main(["run-benchmark", "--model", str(folder), "--data", str(data), "-o", str(out), "--steps", "2",
                 "--device", "cpu", "--batch-size", "2"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "b.png"]


def test_cli_serve_on_a_flux_folder(folder):
    from test_web import _decode, _photo, _hole, _png, _post_form

    from asuka.cli import serve

    parser = argparse.ArgumentParser(prog="asuka")
    serve.register(parser.add_subparsers())
    args = parser.parse_args(["serve", "--model", str(folder), "--port", "0", "--device", "cpu", "--steps", "2",
                              "--quiet"])
    server = serve.start(args)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        status, _, body = _post_form(server, image=_png(_photo()), mask=_png(_hole()))
        assert status == 200 and _decode(body).shape == (H, W, 3)
    finally:
        server.shutdown()
        server.server_close()
