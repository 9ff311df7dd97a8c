"""The newcomer's path: the shipped model by name (asuka.registry), the thread count
(asuka.threads), output provenance (asuka.provenance) and the CLI options around them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from asuka import provenance, registry, threads
from asuka.cli import main
from asuka.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = registry.shipped_model_dir()
needs_shipped = pytest.mark.skipif(not (SHIPPED / "model_index.json").is_file(), reason=f"no shipped model at {SHIPPED}")


def _has_watermark_package() -> bool:
    import importlib.util

    return importlib.util.find_spec("imwatermark") is not None and importlib.util.find_spec("pywt") is not None


needs_watermark = pytest.mark.skipif(not _has_watermark_package(),
                                     reason="invisible-watermark / PyWavelets not installed (.[watermark])")


# ------------------------------------------------------------------ the shipped model by name
def test_resolve_model_names_default_paths_and_hub_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the clone's root
    assert registry.resolve_model(None) == str(SHIPPED)
    assert registry.resolve_model("asuka-small") == str(SHIPPED)
    assert registry.resolve_model("owner/name") == "owner/name"
    (tmp_path / "asuka-small").mkdir()  # a local folder of the same name wins
    assert registry.resolve_model("asuka-small") == "asuka-small"
    assert registry.model_label(SHIPPED) == "asuka-small"
    monkeypatch.setattr(registry, "shipped_model_dir", lambda name="asuka-small": tmp_path / "absent")
    with pytest.raises(InputError, match="not installed"):
        registry.resolve_model(None)


@needs_shipped
def test_load_pipeline_without_argument_from_another_directory(tmp_path):
    # A fresh process whose working directory is not the clone: the shipped model is found.
    code = ("import asuka; from asuka import AsukaInpaintPipeline as P; p = asuka.load_pipeline(device='cpu'); "
            "q = P.from_pretrained('asuka-small'); print(type(p).__name__, p.working_resolution, "
            "type(q.decoder).__name__)")
    import asuka

    env = dict(os.environ, PYTHONPATH=str(Path(asuka.__file__).resolve().parents[1]), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["AsukaInpaintPipeline", "256", "MaskConditionedDecoder"]


# ------------------------------------------------------------------ threads
def test_auto_threads_subtracts_busy_cpus(monkeypatch):
    monkeypatch.setattr(threads, "allowed_cpus", lambda: 4)
    for busy, expected in ((0.0, 4), (0.4, 4), (1.6, 2), (3.9, 1), (7.0, 1), (None, 4)):
        monkeypatch.setattr(threads, "busy_elsewhere", lambda b=busy: b)
        assert threads.auto_threads() == expected, busy


def test_busy_elsewhere_measures_a_window():
    threads.mark()
    busy = threads.busy_elsewhere()
    if busy is None:
        pytest.skip("/proc/stat not readable here")
    assert 0.0 <= busy <= len(os.sched_getaffinity(0)) + 0.5


def test_allowed_cpus_honours_affinity_and_quota(monkeypatch):
    monkeypatch.setattr(threads, "_affinity", lambda: {0, 1, 2, 3})
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda: None)
    assert threads.allowed_cpus() == 4
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda: 1.5)
    assert threads.allowed_cpus() == 1
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda: 0.2)
    assert threads.allowed_cpus() == 1


def test_set_threads_explicit_and_refused(monkeypatch):
    import torch

    before = torch.get_num_threads()
    try:
        assert threads.set_threads(1) == 1 and torch.get_num_threads() == 1
        for bad in (0, -2, 1.5, True):
            with pytest.raises(InputError, match="--threads"):
                threads.set_threads(bad)
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert threads.set_threads(None) == torch.get_num_threads()  # the user's OMP_NUM_THREADS stands
    finally:
        torch.set_num_threads(before)


def test_every_torch_command_has_one_threads_option():
    from asuka.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    for name in ("inpaint", "serve", "run-benchmark", "build-benchmark", "evaluate", "make-latent-aug"):
        assert any(a.dest == "threads" for a in sub[name]._actions), name
    train = next(a for a in sub["train"]._actions if a.dest == "stage").choices
    assert all(any(a.dest == "threads" for a in p._actions) for p in train.values())


def test_every_subcommand_help_has_an_example(capsys):
    from asuka.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    for name, parser in sub.items():
        text = parser.format_help()
        assert "examples:\n  asuka " in text or "examples:\n  accelerate " in text, name
    train = next(a for a in sub["train"]._actions if a.dest == "stage").choices
    for name, parser in train.items():
        text = parser.format_help()
        assert "examples:\n  asuka train" in text and "%%" not in text, name


# ------------------------------------------------------------------ provenance
def _recipe():
    return {"generator": "asuka 0.1.0", "model": "asuka-small", "model_hash": "0123456789abcdef", "steps": 2,
            "seed": 7, "condition": "prior", "variant": "sd15", "synthetic": True, "note": "ü"}


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
def test_recipe_round_trip_in_every_format(tmp_path, suffix):
    from asuka import io

    image = PIL.Image.fromarray((np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8))
    path = io.save_image(image, tmp_path / f"out{suffix}", recipe=_recipe())
    assert provenance.read_recipe(PIL.Image.open(path)) == _recipe()
    assert provenance.read_recipe(PIL.Image.open(io.save_image(image, tmp_path / f"plain{suffix}"))) is None
    assert provenance.read_recipe(PIL.Image.open(__import__("io").BytesIO(
        provenance.encode_image(image, recipe=_recipe(), fmt=io.output_format(path))))) == _recipe()


def test_model_hash_follows_weights_not_docs(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "_HASH_CACHE", tmp_path / "cache.json")
    root = tmp_path / "m"
    (root / "unet").mkdir(parents=True)
    (root / "model_index.json").write_text("{}")
    (root / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"a" * 100)
    first = provenance.model_hash(root)
    (root / "MODEL_CARD.md").write_text("docs")
    assert provenance.model_hash(root) == first and len(first) == 16
    (root / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"b" * 100)
    assert provenance.model_hash(root) != first
    assert provenance.model_hash(tmp_path / "no-model") is None


@needs_watermark
def test_watermark_survives_jpeg_90_and_is_absent_otherwise(tmp_path):
    image = PIL.Image.open(ROOT / "examples" / "astronaut.png").convert("RGB").resize((384, 320))
    assert not provenance.has_watermark(image)
    marked = provenance.add_watermark(image)
    diff = np.abs(np.asarray(marked, np.int16) - np.asarray(image, np.int16))
    assert 0 < diff.mean() < 3  # every pixel may change, by a few levels
    marked.save(tmp_path / "marked.jpg", quality=90)
    assert provenance.has_watermark(PIL.Image.open(tmp_path / "marked.jpg"))
    with pytest.raises(InputError, match="256x256"):
        provenance.add_watermark(image.resize((100, 100)))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from asuka.testing import tiny_pipeline

    path = tmp_path_factory.mktemp("model") / "tiny"
    tiny_pipeline(0).save_pretrained(path)
    return str(path)


def _photo_and_hole(tmp_path, h=256, w=320):
    photo = (np.random.default_rng(2).random((h, w, 3)) * 255).astype(np.uint8)
    hole = np.zeros((h, w), np.uint8)
    hole[100:140, 120:180] = 255
    PIL.Image.fromarray(photo).save(tmp_path / "img.png")
    PIL.Image.fromarray(hole).save(tmp_path / "mask.png")
    return photo, hole > 0


def test_cli_output_carries_its_recipe_and_keeps_known_pixels(tmp_path, model, capsys):
    photo, hole = _photo_and_hole(tmp_path)
    argv = ["inpaint", str(tmp_path / "img.png"), str(tmp_path / "mask.png"), "-o", str(tmp_path / "out.jpg"),
            "--model", model, "--steps", "2", "--seed", "5", "--device", "cpu", "--threads", "1"]
    assert main(argv) == 0
    recipe = provenance.read_recipe(PIL.Image.open(tmp_path / "out.jpg"))
    assert recipe["steps"] == 2 and recipe["seed"] == 5 and recipe["condition"] == "prior"
    assert recipe["model"] == model and len(recipe["model_hash"]) == 16 and recipe["watermark"] is None
    assert recipe["generator"].startswith("asuka ") and recipe["synthetic"] is True
    assert main(argv[:4] + [str(tmp_path / "out.png")] + argv[5:]) == 0
    out = np.asarray(PIL.Image.open(tmp_path / "out.png"))
    assert np.array_equal(out[~hole], photo[~hole])  # without --watermark the known pixels are exact
    capsys.readouterr()
    assert main(["info", str(tmp_path / "out.png"), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["recipe"]["seed"] == 5 and found["watermark"] in (False, None)


@needs_watermark
def test_cli_watermark_is_announced_recorded_and_read_back(tmp_path, model, capsys):
    photo, hole = _photo_and_hole(tmp_path)
    out = tmp_path / "out.png"
    assert main(["inpaint", str(tmp_path / "img.png"), str(tmp_path / "mask.png"), "-o", str(out), "--model", model,
                 "--steps", "2", "--device", "cpu", "--watermark"]) == 0
    assert "changes every pixel slightly" in capsys.readouterr().err
    assert provenance.read_recipe(PIL.Image.open(out))["watermark"] == provenance.WATERMARK_METHOD
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "asuka (synthetic)" in text and "seed" in text


def test_info_without_argument_describes_the_shipped_model(capsys):
    if not (SHIPPED / "model_index.json").is_file():
        pytest.skip(f"no shipped model at {SHIPPED}")
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "AsukaInpaintPipeline" in out and "default steps: 1" in out


def _png(array) -> bytes:
    import io as _io

    buffer = _io.BytesIO()
    PIL.Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("watermark", [False, pytest.param(True, marks=needs_watermark)])
def test_server_answers_carry_the_recipe_and_the_optional_watermark(tmp_path, watermark):
    import io as _io

    from asuka.testing import tiny_pipeline
    from asuka.web import InpaintApp

    photo, hole = _photo_and_hole(tmp_path)
    app = InpaintApp(tiny_pipeline(0), model_name="tiny", default_steps=2, watermark=watermark, threads=1)
    try:
        result = app.run(app.prepare(_png(photo), _png(hole.astype(np.uint8) * 255), {"seed": "4"}))
    finally:
        app.close()
    assert app.info()["watermark"] is watermark
    answer = PIL.Image.open(_io.BytesIO(result.png))
    recipe = provenance.read_recipe(answer)
    assert recipe["seed"] == 4 and recipe["steps"] == 2 and recipe["model"] == "tiny"
    assert recipe["watermark"] == (provenance.WATERMARK_METHOD if watermark else None)
    out = np.asarray(answer.convert("RGB"))
    assert np.array_equal(out[~hole], photo[~hole]) != watermark
    if watermark:
        assert provenance.has_watermark(answer)


def test_a_missing_extra_is_one_line_naming_it(monkeypatch, capsys, tmp_path):
    import asuka.cli.info as info

    def missing(args):
        raise ModuleNotFoundError("No module named 'transformers'", name="transformers")

    monkeypatch.setattr(info, "run", missing)
    from asuka.cli import build_parser

    parser = build_parser()
    monkeypatch.setattr("asuka.cli.build_parser", lambda: parser)
    sub = next(a for a in parser._actions if a.dest == "command").choices
    sub["info"].set_defaults(func=missing)
    assert main(["info"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["asuka: error: `asuka info` needs the package transformers, which is not installed: "
                   "pip install 'asuka[text]' (see README, Install)"]


# ------------------------------------------------------------------ the model's default steps
def test_model_default_resolution_sets_crop_modes_working_side(tmp_path, capsys):
    """A folder's ``default_resolution`` (model_index.json) is crop mode's working side when a
    call gives none (``--resolution`` / ``resolution=`` win); the UNet's own size otherwise."""
    from asuka.cli.info import describe_folder, format_description
    from asuka.pipeline import AsukaInpaintPipeline, load_pipeline
    from asuka.testing import tiny_components

    folder = tmp_path / "upsized"
    AsukaInpaintPipeline(**tiny_components(0), default_resolution=96).save_pretrained(folder)
    assert json.loads((folder / "model_index.json").read_text())["default_resolution"] == 96
    pipe = load_pipeline(folder, device="cpu")
    assert (pipe.working_resolution, pipe.native_resolution) == (96, 64)
    assert "working resolution: 96 px" in format_description(describe_folder(str(folder)))
    for bad in (0, 95, 1.5, True):
        with pytest.raises(InputError, match="default_resolution must be None or a positive multiple of 2"):
            AsukaInpaintPipeline(**tiny_components(0), default_resolution=bad)

    sizes = []
    pipe.unet.register_forward_pre_hook(lambda module, args: sizes.append(tuple(args[0].shape[-2:])))
    photo, hole = _photo_and_hole(tmp_path)  # 256 x 320, hole 40 x 60: the crop region is resized
    pipe(photo, hole, num_inference_steps=1, padding_mask_crop=8, output_type="np")
    pipe(photo, hole, num_inference_steps=1, padding_mask_crop=8, resolution=64, output_type="np")
    assert max(sizes[0]) == 96 // 2 and max(sizes[1]) == 64 // 2  # latent side = working side / VAE factor
    out = tmp_path / "out.png"
    argv = ["inpaint", str(tmp_path / "img.png"), str(tmp_path / "mask.png"), "-o", str(out), "--model",
            str(folder), "--device", "cpu", "--threads", "1", "--steps", "1"]
    assert main(argv) == 0 and provenance.read_recipe(PIL.Image.open(out))["resolution"] == 96
    capsys.readouterr()


def test_model_default_steps_are_saved_and_used_wherever_no_steps_are_given(tmp_path, capsys):
    """A model folder's ``default_steps`` (model_index.json) is what the pipeline, ``asuka
    inpaint``, ``asuka run-benchmark`` and the server use when no steps are given; an explicit
    value wins; 50 for a folder without one."""
    from asuka.pipeline import AsukaInpaintPipeline, load_pipeline, model_default_steps
    from asuka.runner import run_benchmark
    from asuka.testing import tiny_components, tiny_pipeline
    from asuka.web import InpaintApp

    folder = tmp_path / "few-step"
    AsukaInpaintPipeline(**tiny_components(0), default_steps=3).save_pretrained(folder)
    assert json.loads((folder / "model_index.json").read_text())["default_steps"] == 3
    pipe = load_pipeline(folder, device="cpu")
    assert pipe.default_num_inference_steps == 3 == model_default_steps(folder)
    assert tiny_pipeline(0).default_num_inference_steps == 50
    with pytest.raises(InputError, match="default_steps"):
        AsukaInpaintPipeline(**tiny_components(0), default_steps=0)

    calls = []
    real = pipe.scheduler.set_timesteps
    pipe.scheduler.set_timesteps = lambda n, **kw: (calls.append(n), real(n, **kw))[1]
    photo, hole = _photo_and_hole(tmp_path)
    pipe(photo, hole, output_type="np")
    pipe(photo, hole, num_inference_steps=2, output_type="np")
    assert calls == [3, 2]

    out = tmp_path / "out.png"
    argv = ["inpaint", str(tmp_path / "img.png"), str(tmp_path / "mask.png"), "-o", str(out), "--model",
            str(folder), "--device", "cpu", "--threads", "1"]
    assert main(argv) == 0 and provenance.read_recipe(PIL.Image.open(out))["steps"] == 3
    assert main(argv + ["--steps", "2", "--overwrite"]) == 0
    assert provenance.read_recipe(PIL.Image.open(out))["steps"] == 2

    bench = tmp_path / "bench"
    (bench / "images").mkdir(parents=True)
    (bench / "masks").mkdir()
    PIL.Image.open(tmp_path / "img.png").save(bench / "images" / "a.png")
    PIL.Image.open(tmp_path / "mask.png").save(bench / "masks" / "a.png")
    run_benchmark(str(folder), bench, tmp_path / "results", device="cpu")
    assert json.loads((tmp_path / "results" / "run.json").read_text())["settings"]["steps"] == 3

    app = InpaintApp(pipe, model_name="few-step", threads=1)
    try:
        assert app.info()["default_steps"] == 3
    finally:
        app.close()
    capsys.readouterr()
