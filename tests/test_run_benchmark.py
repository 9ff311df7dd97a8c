"""asuka.runner / `asuka run-benchmark`: a tiny pipeline over 32-64 px benchmarks the tests write."""

import copy
import json
import threading

import numpy as np
import PIL.Image
import pytest

from asuka.errors import CheckpointError, InputError
from asuka.runner import (MANIFEST_NAME, image_seed, open_benchmark, output_path, run_benchmark,
                          shard, write_png_atomic)
from asuka.testing import tiny_pipeline

STEPS = 2
# Stems and sizes (h, w) of the paired benchmark: mixed sizes, so batches hold several shapes.
ITEMS = {"a": (32, 32), "b": (48, 64), "c": (32, 32), "d": (64, 48), "e": (32, 32)}



@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(0)


def _write_pair(image_path, mask_path, h, w, seed):
    rng = np.random.default_rng(seed)
    image_path.parent.mkdir(parents=True, exist_ok=True)
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(image_path)
    mask = np.zeros((h, w), np.uint8)
    top, left = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
    mask[top:top + h // 3, left:left + w // 3] = 255
    PIL.Image.fromarray(mask).save(mask_path)


@pytest.fixture(scope="module")
def paired(tmp_path_factory):
    root = tmp_path_factory.mktemp("paired")
    for k, (stem, (h, w)) in enumerate(ITEMS.items()):
        _write_pair(root / "images" / f"{stem}.png", root / "masks" / f"{stem}.png", h, w, k)
    return root


@pytest.fixture(scope="module")
def full_run(pipe, paired, tmp_path_factory):
    """The reference: one process, batch size 1, every item in one go."""
    out = tmp_path_factory.mktemp("full")
    summary = run_benchmark(pipe, paired, out, steps=STEPS, seed=3, process_index=0, num_processes=1)
    return out, summary


def _pngs(folder):
    """name -> pixels (the metadata holds the model's name, which differs between runs)."""
    return {p.name: np.asarray(PIL.Image.open(p)).tobytes() for p in sorted(folder.glob("*.png"))}


def _mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


# ------------------------------------------------------------------ outputs
def test_outputs_named_sized_composited_and_manifest(full_run, paired):
    out, summary = full_run
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{s}.png" for s in ITEMS] + [MANIFEST_NAME])
    assert (summary.total, summary.pending, summary.assigned, summary.written, summary.failed) == (5, 5, 5, 5, [])
    for stem, (h, w) in ITEMS.items():
        result = np.asarray(PIL.Image.open(out / f"{stem}.png"))
        source = np.asarray(PIL.Image.open(paired / "images" / f"{stem}.png"))
        hole = np.asarray(PIL.Image.open(paired / "masks" / f"{stem}.png")) >= 128
        assert result.shape == (h, w, 3)
        # Composited: the known pixels are the input's, the hole is generated.
        np.testing.assert_array_equal(result[~hole], source[~hole])
        assert np.abs(result[hole].astype(int) - source[hole]).mean() > 5
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    s = manifest["settings"]
    assert (s["steps"], s["seed"], s["layout"], s["resolution"], s["composite"]) == (STEPS, 3, "paired", None, True)
    assert s["data"] == str(paired.resolve()) and manifest["items"] == 5
    assert {"asuka", "torch", "diffusers", "python"} <= set(manifest["versions"])


def test_seed_changes_the_outputs_and_each_item_has_its_own(pipe, paired, full_run, tmp_path):
    run_benchmark(pipe, paired, tmp_path, steps=STEPS, seed=4, process_index=0, num_processes=1)
    ref = _pngs(full_run[0])
    assert all(_pngs(tmp_path)[name] != ref[name] for name in ref)
    assert image_seed(3, "a") != image_seed(3, "c") and image_seed(3, "a") != image_seed(4, "a")
    assert image_seed(3, "a") == image_seed(3, "a") < 2**63


def test_no_composite_changes_the_known_pixels(pipe, paired, tmp_path):
    run_benchmark(pipe, paired, tmp_path, steps=STEPS, seed=3, composite=False, process_index=0, num_processes=1)
    result = np.asarray(PIL.Image.open(tmp_path / "a.png"))
    source = np.asarray(PIL.Image.open(paired / "images" / "a.png"))
    hole = np.asarray(PIL.Image.open(paired / "masks" / "a.png")) >= 128
    assert np.abs(result[~hole].astype(int) - source[~hole]).max() > 0


# ------------------------------------------------------------------ resumption
def test_second_run_skips_everything(pipe, paired, full_run):
    out, _ = full_run
    before = _mtimes(out)
    summary = run_benchmark(pipe, paired, out, steps=STEPS, seed=3, process_index=0, num_processes=1)
    assert (summary.pending, summary.assigned, summary.written) == (0, 0, 0)
    assert _mtimes(out) == before


def test_killed_run_resumed_equals_full_run(pipe, paired, full_run, tmp_path, monkeypatch):
    import asuka.runner as runner

    original, calls = runner._inpaint_batch, []

    def dies_on_third_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the run is killed here
        return original(*args, **kwargs)

    monkeypatch.setattr(runner, "_inpaint_batch", dies_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(pipe, paired, tmp_path, steps=STEPS, seed=3, process_index=0, num_processes=1)
    monkeypatch.setattr(runner, "_inpaint_batch", original)
    assert sorted(_pngs(tmp_path)) == ["a.png", "b.png"]
    # A write killed half-way leaves only a temporary file, which is neither skipped nor kept.
    (tmp_path / ".c.x.png.partial").write_bytes(b"\x89PNG truncated")

    # Resume with another batch size: results must not depend on batching or on what ran before.
    summary = run_benchmark(pipe, paired, tmp_path, steps=STEPS, seed=3, batch_size=2,
                            process_index=0, num_processes=1)
    assert (summary.pending, summary.written) == (3, 3)
    assert _pngs(tmp_path) == _pngs(full_run[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(_pngs(full_run[0])) + [MANIFEST_NAME]


def test_write_png_atomic_leaves_nothing_on_failure(tmp_path):
    class Broken:
        def save(self, f, format, **options):
            f.write(b"\x89PNG half")
            raise OSError("disk full")

    with pytest.raises(InputError, match="disk full"):
        write_png_atomic(Broken(), tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []
    write_png_atomic(PIL.Image.new("RGB", (4, 4)), tmp_path / "x.png")
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


# ------------------------------------------------------------------ sharding
@pytest.mark.parametrize("n, k", [(5, 2), (5, 3), (2, 4), (0, 2), (7, 1)])
def test_shard_is_a_contiguous_balanced_partition(n, k):
    items = list(range(n))
    parts = [shard(items, i, k) for i in range(k)]
    assert sum(parts, []) == items
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert [len(p) for p in parts] == sorted((len(p) for p in parts), reverse=True)


def _run_processes(pipes, data, out, num_processes, **kwargs):
    """Simulate `accelerate launch` with threads: one pipeline copy each, a shared barrier."""
    barrier = threading.Barrier(num_processes, timeout=120)
    summaries, errors = [None] * num_processes, []

    def worker(i):
        try:
            summaries[i] = run_benchmark(pipes[i], data, out, steps=STEPS, seed=3, process_index=i,
                                         num_processes=num_processes, barrier=barrier.wait, **kwargs)
        except BaseException as exc:  # noqa: BLE001 -- re-raised in the test thread
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(num_processes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return summaries


def test_two_processes_equal_one_and_split_the_unfinished_items(pipe, paired, full_run, tmp_path):
    pipes = [pipe, copy.deepcopy(pipe)]  # a scheduler is stateful: one pipeline per "process"
    summaries = _run_processes(pipes, paired, tmp_path, 2)
    assert [s.assigned for s in summaries] == [3, 2] and sum(s.written for s in summaries) == 5
    assert _pngs(tmp_path) == _pngs(full_run[0])
    # Resume with 2 missing outputs: the *unfinished* items are split, one each.
    for stem in ("a", "e"):
        output_path(tmp_path, stem).unlink()
    summaries = _run_processes(pipes, paired, tmp_path, 2, batch_size=2)
    assert [(s.pending, s.assigned, s.written) for s in summaries] == [(2, 1, 1), (2, 1, 1)]
    assert _pngs(tmp_path) == _pngs(full_run[0])


def test_several_processes_need_a_barrier(pipe, paired, tmp_path):
    with pytest.raises(InputError, match="barrier"):
        run_benchmark(pipe, paired, tmp_path, steps=STEPS, process_index=0, num_processes=2)
    with pytest.raises(InputError, match="process_index must be in 0..1"):
        run_benchmark(pipe, paired, tmp_path, steps=STEPS, process_index=2, num_processes=2, barrier=lambda: None)


# ------------------------------------------------------------------ the manifest
def test_mismatched_manifest_is_refused_unless_overwrite(pipe, paired, full_run, tmp_path):
    out = tmp_path / "run"
    run_benchmark(pipe, paired, out, steps=STEPS, seed=3, process_index=0, num_processes=1)
    manifest_before = (out / MANIFEST_NAME).read_bytes()
    mtimes = _mtimes(out)
    with pytest.raises(InputError) as info:
        run_benchmark(pipe, paired, out, steps=STEPS + 1, seed=3, process_index=0, num_processes=1)
    message = str(info.value)
    assert "steps: 2 in run.json, 3 now" in message and "--overwrite" in message and "\n" not in message
    with pytest.raises(InputError, match="seed: 3 in run.json, 5 now"):
        run_benchmark(pipe, paired, out, steps=STEPS, seed=5, process_index=0, num_processes=1)
    assert (out / MANIFEST_NAME).read_bytes() == manifest_before and _mtimes(out) == mtimes

    # --overwrite: the old outputs are deleted and redone with the new settings.
    summary = run_benchmark(pipe, paired, out, steps=STEPS, seed=5, overwrite=True, process_index=0, num_processes=1)
    assert summary.written == 5
    assert json.loads((out / MANIFEST_NAME).read_text())["settings"]["seed"] == 5
    assert all(_pngs(out)[n] != b for n, b in _pngs(full_run[0]).items())


def test_outputs_without_manifest_are_refused(pipe, paired, tmp_path):
    PIL.Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    with pytest.raises(InputError, match=r"holds 1 of the 5 outputs but no run.json"):
        run_benchmark(pipe, paired, tmp_path, steps=STEPS, process_index=0, num_processes=1)
    (tmp_path / MANIFEST_NAME).write_text("[1, 2]")
    with pytest.raises(InputError, match="not a run manifest"):
        run_benchmark(pipe, paired, tmp_path, steps=STEPS, process_index=0, num_processes=1)


# ------------------------------------------------------------------ layouts and bad input
def test_misato_1024_layout(pipe, tmp_path):
    root = tmp_path / "misato"
    for k in range(3):
        _write_pair(root / "1024" / "image" / f"{k:04d}.png", root / "1024" / "mask" / f"00{k:04d}.png", 32, 32, k)
    _write_pair(root / "512" / "image" / "0000.png", root / "512" / "mask" / "0000.png", 32, 32, 9)
    bench = open_benchmark(root, 1024)
    assert (bench.layout, bench.resolution, bench.names) == ("misato", 1024, ["0000", "0001", "0002"])
    summary = run_benchmark(pipe, root, tmp_path / "out", steps=STEPS, resolution=1024,
                            process_index=0, num_processes=1)
    assert summary.written == 3 and _pngs(tmp_path / "out").keys() == {"0000.png", "0001.png", "0002.png"}
    assert json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())["settings"]["resolution"] == 1024


def test_bad_input_gives_one_line_errors(pipe, paired, tmp_path):
    def one_line(exc_info):
        assert "\n" not in str(exc_info.value)
        return str(exc_info.value)

    with pytest.raises(InputError) as info:
        run_benchmark(pipe, tmp_path / "nowhere", tmp_path / "out", process_index=0, num_processes=1)
    assert "benchmark folder not found" in one_line(info)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError) as info:
        run_benchmark(pipe, tmp_path / "empty", tmp_path / "out", process_index=0, num_processes=1)
    assert "images/ + masks/" in one_line(info)
    (tmp_path / "model").mkdir()
    with pytest.raises(CheckpointError) as info:
        run_benchmark(tmp_path / "model", paired, tmp_path / "out", process_index=0, num_processes=1)
    assert "no model_index.json" in one_line(info)
    with pytest.raises(CheckpointError, match="no such folder"):
        run_benchmark(str(tmp_path / "missing-model"), paired, tmp_path / "out", process_index=0, num_processes=1)
    with pytest.raises(InputError, match="is the benchmark's input folder"):
        run_benchmark(pipe, paired, paired / "images", process_index=0, num_processes=1)
    with pytest.raises(InputError, match="paired folder"):
        run_benchmark(pipe, paired, tmp_path / "out", resolution=512, process_index=0, num_processes=1)
    with pytest.raises(InputError, match="steps must be an integer >= 1"):
        run_benchmark(pipe, paired, tmp_path / "out", steps=0, process_index=0, num_processes=1)
    assert not (tmp_path / "out").exists()  # nothing written by a refused run


def test_unreadable_item_is_reported_and_left_unfinished(pipe, paired, tmp_path):
    data = tmp_path / "data"
    for sub in ("images", "masks"):
        (data / sub).mkdir(parents=True)
        for stem in ("a", "c"):
            (data / sub / f"{stem}.png").write_bytes((paired / sub / f"{stem}.png").read_bytes())
    (data / "images" / "c.png").write_bytes(b"not a png")
    summary = run_benchmark(pipe, data, tmp_path / "out", steps=STEPS, process_index=0, num_processes=1)
    assert summary.written == 1 and [name for name, _ in summary.failed] == ["c"]
    assert "cannot read image" in summary.failed[0][1]
    assert _pngs(tmp_path / "out").keys() == {"a.png"}


# ------------------------------------------------------------------ the command line
def test_cli_run_benchmark_with_a_saved_model(pipe, paired, full_run, tmp_path, capsys):
    from asuka.cli import main

    pipe.save_pretrained(tmp_path / "model")
    out = tmp_path / "out"
    argv = ["run-benchmark", "--model", str(tmp_path / "model"), "--data", str(paired), "-o", str(out),
            "--steps", str(STEPS), "--seed", "3", "--device", "cpu", "--batch-size", "2"]
    assert main(argv) == 0
    # Same model, settings and seed as the in-memory reference run: the same bytes.
    assert _pngs(out) == _pngs(full_run[0])
    settings = json.loads((out / MANIFEST_NAME).read_text())["settings"]
    assert settings["model"] == str((tmp_path / "model").resolve()) and settings["dtype"] == "float32"
    assert "5 of 5 outputs" in capsys.readouterr().err

    assert main(argv[:-4] + ["--steps", "3"]) == 2  # other settings than run.json
    err = capsys.readouterr().err.strip()
    assert err.startswith("asuka: error: output folder") and "steps: 2 in run.json, 3 now" in err and "\n" not in err


def test_seam_blending_follows_the_folder_is_recorded_and_fixes_the_run(paired, full_run, tmp_path, capsys):
    """A folder's default_poisson_blend is used and recorded in run.json and the recipes; a run
    without blending records nothing (older run.json files stay resumable); resuming with other
    blending is refused; --no-poisson-blend gives the unblended outputs."""
    from asuka import provenance
    from asuka.cli import main
    from asuka.pipeline import AsukaInpaintPipeline
    from asuka.testing import tiny_components

    AsukaInpaintPipeline(**tiny_components(0), default_poisson_blend=2).save_pretrained(tmp_path / "model")
    base = ["run-benchmark", "--model", str(tmp_path / "model"), "--data", str(paired), "--steps", str(STEPS),
            "--seed", "3", "--device", "cpu"]
    blended, plain = tmp_path / "blended", tmp_path / "plain"
    assert main(base + ["-o", str(blended)]) == 0
    assert main(base + ["-o", str(plain), "--no-poisson-blend"]) == 0
    assert json.loads((blended / MANIFEST_NAME).read_text())["settings"]["poisson_blend"] == 2.0
    assert "poisson_blend" not in json.loads((plain / MANIFEST_NAME).read_text())["settings"]
    assert provenance.read_recipe(PIL.Image.open(blended / "a.png"))["poisson_blend"] == 2.0
    assert _pngs(plain) == _pngs(full_run[0])  # the same tiny model, unblended: the reference run's bytes
    assert all(_pngs(blended)[n] != b for n, b in _pngs(plain).items())
    capsys.readouterr()
    assert main(base + ["-o", str(blended), "--poisson-blend", "4"]) == 2
    assert "poisson_blend: 2.0 in run.json, 4.0 now" in capsys.readouterr().err


@pytest.mark.parametrize("model, data, expected", [
    ("empty-model", "paired", "no model_index.json"),
    ("model", "nowhere", "benchmark folder not found"),
])
def test_cli_bad_input_is_one_line(paired, tmp_path, capsys, model, data, expected):
    from asuka.cli import main

    (tmp_path / "empty-model").mkdir()
    data = paired if data == "paired" else tmp_path / data
    assert main(["run-benchmark", "--model", str(tmp_path / model), "--data", str(data),
                 "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("asuka: error:") and expected in err and err.count("\n") == 1


def test_image_mask_folders_with_any_names_pair_by_stem(pipe, tmp_path):
    # DIR/image + DIR/mask with non-MISATO names and other extensions: matched by stem.
    root = tmp_path / "bench"
    _write_pair(root / "image" / "beach.png", root / "mask" / "beach.png", 32, 48, 0)
    _write_pair(root / "image" / "room.png", root / "mask" / "room.png", 48, 32, 1)
    PIL.Image.open(root / "image" / "room.png").save(root / "image" / "room.jpg", quality=95)
    (root / "image" / "room.png").unlink()
    summary = run_benchmark(pipe, root, tmp_path / "out", steps=STEPS, seed=0, process_index=0, num_processes=1)
    assert summary.written == 2
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["beach.png", "room.png"]
    from asuka.provenance import read_recipe

    recipe = read_recipe(PIL.Image.open(tmp_path / "out" / "beach.png"))
    assert recipe["seed"] == image_seed(0, "beach") and recipe["crop_margin"] == 64 and recipe["steps"] == STEPS


def test_crop_mode_is_recorded_and_full_image_differs_on_a_large_image(pipe, tmp_path):
    # A 128 x 160 image with a small hole: crop mode (working resolution 64) and the whole
    # image give different fills but the same known pixels.
    root = tmp_path / "bench"
    _write_pair(root / "images" / "big.png", root / "masks" / "big.png", 128, 160, 2)
    outs = {}
    for margin in (8, None):
        out = tmp_path / f"out_{margin}"
        run_benchmark(pipe, root, out, steps=STEPS, seed=0, crop_margin=margin, process_index=0, num_processes=1)
        assert json.loads((out / MANIFEST_NAME).read_text())["settings"]["crop_margin"] == margin
        outs[margin] = np.asarray(PIL.Image.open(out / "big.png"))
    known = np.asarray(PIL.Image.open(root / "masks" / "big.png")) < 128
    image = np.asarray(PIL.Image.open(root / "images" / "big.png"))
    assert all(np.array_equal(o[known], image[known]) for o in outs.values())
    assert not np.array_equal(outs[8], outs[None])
    with pytest.raises(InputError, match="crop_margin"):
        run_benchmark(pipe, root, tmp_path / "bad", steps=STEPS, crop_margin=-1, process_index=0, num_processes=1)
