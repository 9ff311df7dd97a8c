"""Run an :class:`~asuka.pipeline.AsukaInpaintPipeline` over a benchmark: one PNG per input.

    asuka run-benchmark --model M --data DIR -o OUT          # one process
    accelerate launch -m asuka run-benchmark ...             # one process per GPU / node

``DIR`` is either a paired folder (``DIR/images/`` + ``DIR/masks/``, matched by file stem, see
:class:`~asuka.data.misato.PairedFolderDataset`) or the MISATO layout
(``DIR/512/image`` + ``DIR/512/mask``, or ``DIR/image`` + ``DIR/mask`` for one resolution folder,
see :class:`~asuka.data.misato.MisatoDataset`). ``OUT/<stem>.png`` is written for every input
at the input's size, so ``asuka evaluate`` can match it to the ground truth by stem.

Properties a long (Places2-size) run relies on:

* **Resumable**: an existing ``OUT/<stem>.png`` is finished and skipped. Every PNG is written
  under a temporary name and renamed (:func:`write_png_atomic`), so a killed run never leaves a
  half-written file that a resumed run would take for finished.
* **Sharded**: the *unfinished* items are split into contiguous chunks by process index
  (:func:`shard`, the same split as accelerate's ``split_between_processes``), so a resumed run
  spreads the remaining work evenly over however many processes it has now.
* **Independent of sharding and resumption**: item ``stem`` is denoised from noise drawn with
  its own CPU generator seeded by :func:`image_seed` ``(seed, stem)``; nothing depends on which
  process runs it, on what ran before, or (the pipeline runs items with per-item generators
  exactly as single runs) on the batch it is in.
* **One run per folder**: ``OUT/run.json`` records the settings (model, data, steps, seed,
  ...) and package versions. A later run into the same folder with other settings is refused
  (its outputs would mix with the old ones) unless ``overwrite``, which deletes the old
  outputs first.

Process layout: under ``accelerate launch`` every process calls :func:`run_benchmark` with
the same arguments; the processes synchronise with barriers around the listing of unfinished
items (every process must see the same list before anyone adds to it). The output folder must
be on a file system all processes (all nodes) share.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from asuka.errors import CheckpointError, InputError

#: Name of the run manifest in the output folder.
MANIFEST_NAME = "run.json"
#: Format version of run.json.
MANIFEST_FORMAT = 1
#: Suffix of the temporary files :func:`write_png_atomic` renames into place.
PARTIAL_SUFFIX = ".partial"
#: A hub id: owner/name.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


# --------------------------------------------------------------------------------------------
# The benchmark: which items, where their outputs go
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Benchmark:
    """The items of a benchmark folder, in a fixed (sorted by stem) order.

    ``dataset[i]`` is the sample of ``names[i]``: ``{"image": (3, H, W) in [-1, 1],
    "mask": (1, H, W) in {0, 1}, "name": str, "domain": str}``.
    """

    layout: str  # "paired" or "misato"
    root: Path  # the folder given by the user
    image_dir: Path
    resolution: int | None  # MISATO resolution folder; None for a paired folder
    dataset: object  # MisatoDataset | PairedFolderDataset

    @property
    def names(self) -> list[str]:
        return list(self.dataset.names)


def open_benchmark(data: str | os.PathLike, resolution: int | None = 512) -> Benchmark:
    """Find the layout of ``data`` and list its image/mask pairs (nothing is decoded yet).

    ``data/images`` + ``data/masks`` -> paired folder (``resolution`` is not used); otherwise
    the MISATO layout at ``resolution`` (default 512: ``data/512/image`` + ``data/512/mask``, or
    ``data/image`` + ``data/mask``), where any set of ``NNNN.png`` pairs is accepted (a benchmark
    made with ``asuka build-benchmark``, or a subset of MISATO) and any other names are matched
    by file stem as ``asuka inpaint --images --masks`` matches them.
    Raises :class:`InputError` naming the folder and the expected layout.
    """
    from asuka.data.misato import MisatoDataset, PairedFolderDataset
    from asuka.io import IMAGE_SUFFIXES

    root = Path(data)
    if not root.exists():
        raise InputError(f"benchmark folder not found: {root}")
    if not root.is_dir():
        raise InputError(f"benchmark must be a folder (images/ + masks/, or the MISATO layout), got a file: {root}")
    if (root / "images").is_dir() or (root / "masks").is_dir():
        missing = [str(root / d) for d in ("images", "masks") if not (root / d).is_dir()]
        if missing:
            raise InputError(f"paired benchmark folder {root} lacks {', '.join(missing)} "
                             "(expected images/ and masks/ with matching file stems)")
        dataset = PairedFolderDataset(root / "images", root / "masks")
        return Benchmark("paired", root, root / "images", None, dataset)
    resolution = 512 if resolution is None else int(resolution)
    has_misato = (root / str(resolution) / "image").is_dir() or (root / "image").is_dir()
    if not has_misato:
        present = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise InputError(f"no benchmark found in {root}: expected images/ + masks/ (paired folder) or the MISATO "
                         f"layout {resolution}/image + {resolution}/mask; found folders: {', '.join(present) or 'none'}")
    base = root / str(resolution) if (root / str(resolution) / "image").is_dir() else root
    names = [p.stem for p in (base / "image").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    if names and all(re.fullmatch(r"\d{4,}", n) for n in names):
        dataset = MisatoDataset(root, resolution, strict=False)  # NNNN names: MISATO's 00NNNN masks too
    else:  # any other names: matched by stem, as `asuka inpaint --images --masks` does
        dataset = PairedFolderDataset(base / "image", base / "mask", resize_masks=True)
    return Benchmark("misato", root, base / "image", resolution, dataset)


def output_path(output: str | os.PathLike, name: str) -> Path:
    """Where item ``name``'s result goes: ``output/<name>.png``."""
    return Path(output) / f"{name}.png"


def finished(output: str | os.PathLike, names: Sequence[str]) -> list[bool]:
    """Whether each item already has its output (written atomically, so existing = complete)."""
    return [output_path(output, n).is_file() for n in names]


def shard(items: Sequence, process_index: int, num_processes: int) -> list:
    """Process ``process_index``'s contiguous share of ``items`` (the first ``len % n`` processes
    get one more), as ``accelerate.PartialState.split_between_processes`` splits a list."""
    if not 0 <= process_index < num_processes:
        raise InputError(f"process_index must be in 0..{num_processes - 1}, got {process_index}")
    per_process, extra = divmod(len(items), num_processes)
    start = process_index * per_process + min(process_index, extra)
    return list(items[start:start + per_process + (1 if process_index < extra else 0)])


def image_seed(seed: int, name: str) -> int:
    """The noise seed of item ``name`` in a run with ``seed``: 63 bits of SHA-256("seed/name").

    A hash (not ``seed + index``) so the seed survives any re-ordering, subsetting or sharding
    of the benchmark, and neighbouring run seeds do not share noise between items.
    """
    digest = hashlib.sha256(f"{int(seed)}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def write_png_atomic(image, path: str | os.PathLike, recipe: dict | None = None) -> Path:
    """Write a PIL image as PNG to ``path`` (with its ``recipe`` as metadata) via a temporary
    file in the same folder + ``os.replace`` (:func:`asuka.io.save_image`).

    The file appears under its final name only once complete (and flushed to disk), so an
    existing output always is a finished one.
    """
    from asuka.io import save_image

    return save_image(image, Path(path).with_suffix(".png"), recipe=recipe)


def _remove_partials(output: Path) -> None:
    # Temporary files of a killed run; only called before any process starts writing.
    for p in output.glob(".*" + PARTIAL_SUFFIX):
        p.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# The run manifest
# --------------------------------------------------------------------------------------------
def model_id(model) -> str:
    """How a model is named in run.json: a local folder as its absolute path, a hub id as
    given, an in-memory pipeline by its ``name_or_path`` (or its class name)."""
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        return str(path.resolve()) if path.exists() else str(model)
    name = getattr(getattr(model, "config", None), "_name_or_path", None)
    return str(name) if name else f"<in-memory {type(model).__name__}>"


def check_model_source(model: str | os.PathLike) -> None:
    """Refuse a model argument that cannot be a pipeline: a folder without ``model_index.json``,
    a file, or a path that does not exist and is not a hub id (``owner/name``)."""
    source = str(model)
    path = Path(source)
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise CheckpointError(f"model {source}: not a pipeline folder (no model_index.json); make one with "
                                  "`asuka convert` or AsukaInpaintPipeline.save_pretrained")
    elif path.exists():
        raise CheckpointError(f"model {source}: expected a pipeline folder (with model_index.json) or a hub id, "
                              "got a file")
    elif not _HUB_ID.fullmatch(source) or source.startswith("."):
        raise CheckpointError(f"model {source}: no such folder, and not a hub id of the form owner/name")


def versions() -> dict[str, str]:
    """Versions of what produced the outputs (recorded, not compared on resume)."""
    import diffusers
    import torch

    import asuka

    return {"asuka": asuka.__version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "python": platform.python_version()}


def read_manifest(output: str | os.PathLike) -> dict | None:
    """``output/run.json`` as a dict, or None when there is none."""
    path = Path(output) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the run manifest {path}: {exc}; remove it or use --overwrite") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("settings"), dict):
        raise InputError(f"{path} is not a run manifest written by asuka run-benchmark (no 'settings'); "
                         "choose another output folder or use --overwrite")
    return manifest


def check_manifest(output: str | os.PathLike, settings: dict, names: Sequence[str]) -> dict | None:
    """Refuse to add to ``output`` when its run.json has other settings, or when it holds
    outputs of the benchmark but no run.json (settings unknown). Returns the existing manifest."""
    output = Path(output)
    existing = read_manifest(output)
    if existing is None:
        done = sum(finished(output, names))
        if done:
            raise InputError(f"output folder {output} already holds {done} of the {len(names)} outputs but no "
                             f"{MANIFEST_NAME}, so their settings are unknown; use --overwrite to redo them or "
                             "choose an empty folder")
        return None
    old = existing["settings"]
    diffs = [f"{k}: {old.get(k)!r} in {MANIFEST_NAME}, {settings.get(k)!r} now"
             for k in sorted(set(old) | set(settings)) if old.get(k) != settings.get(k)]
    if diffs:
        raise InputError(f"output folder {output} holds a run with other settings ({'; '.join(diffs)}); "
                         "resume with the same settings, choose another folder, or use --overwrite to "
                         "delete its outputs and start over")
    return existing


def write_manifest(output: str | os.PathLike, settings: dict, count: int) -> dict:
    """Write ``output/run.json`` (atomically): settings, item count, versions, creation time."""
    manifest = {"format": MANIFEST_FORMAT, "tool": "asuka run-benchmark", "settings": settings,
                "items": int(count), "versions": versions(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path = Path(output) / MANIFEST_NAME
    tmp = path.with_name(f".{MANIFEST_NAME}{PARTIAL_SUFFIX}")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, path)
    return manifest


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------
@dataclass
class RunSummary:
    """What one process did. ``total``: items in the benchmark; ``pending``: unfinished when the
    run started (all processes); ``assigned``: this process's share; ``written``: outputs it
    wrote; ``failed``: ``(name, message)`` of items it could not read (left unfinished)."""

    output: Path
    total: int
    pending: int
    assigned: int
    written: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    process_index: int = 0
    num_processes: int = 1


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def run_benchmark(
    model,
    data: str | os.PathLike,
    output: str | os.PathLike,
    *,
    steps: int | None = None,
    seed: int = 0,
    resolution: int | None = None,
    crop_margin: int | None = 64,
    composite: bool = True,
    poisson_blend: float | bool | None = None,
    condition: str = "prior",
    decoder: str | None = None,
    batch_size: int = 1,
    device: str = "auto",
    dtype: str = "auto",
    overwrite: bool = False,
    process_index: int | None = None,
    num_processes: int | None = None,
    barrier: Callable[[], None] | None = None,
    log: Callable[[str], None] | None = None,
    progress: bool = False,
) -> RunSummary:
    """Inpaint every unfinished item of the benchmark ``data`` into ``output/<stem>.png``.

    Args:
        model: pipeline folder or hub id (loaded with :func:`asuka.pipeline.load_pipeline`
            on ``device`` in ``dtype``), or an :class:`AsukaInpaintPipeline` instance (used as is).
        data: benchmark folder, see :func:`open_benchmark`.
        output: output folder (created); also holds ``run.json``.
        steps: denoising steps (default: the model's, see
            :func:`~asuka.pipeline_base.model_default_steps`). seed: run seed; item ``stem`` uses :func:`image_seed` ``(seed, stem)``.
        resolution: MISATO resolution folder (512 or 1024; default 512); must be None for a
            paired folder.
        crop_margin: crop mode as in ``asuka inpaint`` (the pipeline's ``padding_mask_crop``):
            work on a region around the hole at the model's resolution and paste it back; None
            inpaints each image whole, at its own size.
        composite: paste the known pixels back (default); False keeps the model's output everywhere.
        poisson_blend: the seam blending (:mod:`asuka.seams`), as the pipeline's argument: None
            follows the model folder's ``default_poisson_blend``; the fade used is part of the
            run's settings (absent when there is none).
        condition, decoder: the pipeline's ``condition`` (``"prior"`` = ASUKA, ``"null"`` = the
            SD baseline) and ``decoder`` (``"asuka"`` / ``"vae"``; None = the model's default).
        batch_size: items per pipeline call (results do not depend on it).
        device, dtype: for a model loaded by name ("auto": CUDA / float16 when available; under
            ``accelerate launch`` "auto" is the process's own GPU).
        overwrite: delete this benchmark's existing outputs and run.json first and start over.
        process_index, num_processes: this process's place among the processes sharing the run;
            default: from ``accelerate.PartialState`` (1 process unless launched by accelerate).
        barrier: called where all processes must meet; default: the accelerate state's
            ``wait_for_everyone``. Required when ``process_index`` / ``num_processes`` are given
            explicitly with ``num_processes > 1``.
        log: receives one-line messages: progress (main process) and unreadable items (any process).
        progress: show a progress bar (main process only).

    Returns:
        :class:`RunSummary` of this process. Items that cannot be read are reported there and
        left unfinished (a later run retries them); anything else (a model error) is raised.
    """
    if steps is not None:
        steps = _check_int("steps", steps, 1)
    batch_size = _check_int("batch_size", batch_size, 1)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be an integer >= 0, got {seed!r}")
    if crop_margin is not None:
        crop_margin = _check_int("crop_margin", crop_margin, 0)
    _check_pipeline_options(None, condition, decoder)
    say = log or (lambda message: None)

    # 1. The benchmark and the output folder (checked before anything slow happens).
    if resolution is not None and (root := Path(data)).is_dir() and (root / "images").is_dir():
        raise InputError(f"resolution selects a MISATO resolution folder, but {data} is a paired folder "
                         "(images/ + masks/); leave it out")
    bench = open_benchmark(data, resolution)
    names = bench.names
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise InputError(f"output must be a folder, got a file: {output}")
    for inputs in (bench.image_dir, Path(bench.dataset.mask_paths[0]).parent):
        if output.exists() and os.path.samefile(output, inputs):
            raise InputError(f"output folder {output} is the benchmark's input folder {inputs}; choose another one")
    if isinstance(model, (str, os.PathLike)):
        check_model_source(model)
    # The model's own defaults where none are given (its model_index.json: default_steps, else 50;
    # default_poisson_blend, else no seam blending).
    from asuka.pipeline_base import blend_record, folder_default_steps, model_index, resolve_seam_fade

    folder = model_index(model) if isinstance(model, (str, os.PathLike)) else model.config
    if steps is None:
        steps = folder_default_steps(folder)
    fade = resolve_seam_fade(poisson_blend, folder.get("default_poisson_blend"))
    blend = blend_record(fade)  # what the pipeline is given: explicit, as recorded

    # 2. Which process this is, and how the processes meet.
    process_index, num_processes, barrier, device = _topology(process_index, num_processes, barrier, device)
    main = process_index == 0

    # 3. The settings that fix the outputs; refuse to mix them with another run's.
    if isinstance(model, (str, os.PathLike)):
        from asuka.pipeline_base import pipeline_class, resolve_device, resolve_dtype

        cuda_dtype = pipeline_class(model).cuda_dtype  # float16 for SD-1.5, bfloat16 for FLUX
        dtype_name = str(resolve_dtype(dtype, resolve_device(device), cuda_dtype)).removeprefix("torch.")
    else:
        backbone = getattr(model, "unet", None) or model.transformer
        dtype_name = str(backbone.dtype).removeprefix("torch.")
    settings = {
        "model": model_id(model), "data": str(bench.root.resolve()), "layout": bench.layout,
        "resolution": bench.resolution, "steps": steps, "seed": seed, "seed_rule": "sha256(seed/stem)",
        "composite": bool(composite), "condition": condition, "decoder": decoder, "dtype": dtype_name,
        "crop_margin": crop_margin,
        **({} if fade is None else {"poisson_blend": fade}),  # absent when off: older runs stay resumable
    }
    if not overwrite:
        check_manifest(output, settings, names)

    # 4. The model (before anything is written: a model that fails to load leaves no trace).
    if isinstance(model, (str, os.PathLike)):
        from asuka.pipeline import load_pipeline

        if main:
            say(f"loading {model} on {device} ({dtype_name})")
        pipe = load_pipeline(model, device=device, dtype=dtype)
    else:
        pipe = model
    pipe.set_progress_bar_config(disable=True)
    _check_pipeline_options(pipe, condition, decoder)
    from asuka.provenance import recipe

    base_recipe = recipe(pipe, model_id(model) if isinstance(model, (str, os.PathLike)) else settings["model"],
                         steps=steps, seed=None, condition=condition, decoder=decoder,
                         crop_margin=crop_margin, poisson_blend=blend,
                         seed_rule="sha256(seed/stem)", run_seed=seed)

    # 5. The main process prepares the folder; then every process lists the unfinished items
    #    *before* anyone writes, so all of them split the same list.
    if main:
        output.mkdir(parents=True, exist_ok=True)
        _remove_partials(output)
        if overwrite:
            for name in names:
                output_path(output, name).unlink(missing_ok=True)
            (output / MANIFEST_NAME).unlink(missing_ok=True)
        existing = read_manifest(output)
        if existing is None:
            write_manifest(output, settings, len(names))
        elif existing.get("versions") != versions():
            say(f"note: {output / MANIFEST_NAME} was written with {existing.get('versions')}; resuming with "
                f"{versions()} (outputs may differ in the last bits)")
    barrier()
    pending = [n for n, done in zip(names, finished(output, names)) if not done]
    barrier()
    mine = shard(pending, process_index, num_processes)
    summary = RunSummary(output=output, total=len(names), pending=len(pending), assigned=len(mine),
                         process_index=process_index, num_processes=num_processes)
    if main:
        say(f"{bench.layout} benchmark {bench.root}: {len(names)} items, {len(names) - len(pending)} finished, "
            f"{len(pending)} to do over {num_processes} process(es)")

    # 6. Inpaint this process's share, batch by batch.
    _inpaint_share(pipe, bench, mine, output, summary, batch_size=batch_size, say=say,
                   progress=progress and main, steps=steps, seed=seed, composite=composite,
                   poisson_blend=blend, condition=condition, decoder=decoder,
                   crop_margin=crop_margin, recipe=base_recipe)
    barrier()
    if main:
        done = sum(finished(output, names))
        say(f"{done} of {len(names)} outputs in {output}")
    return summary


def _topology(process_index, num_processes, barrier, device: str):
    """``(process_index, num_processes, barrier, device)``: as given (checked), or from accelerate.

    Under ``accelerate launch`` a ``device`` of ``"auto"`` becomes the process's own GPU.
    """
    if process_index is None and num_processes is None:
        import torch
        from accelerate import PartialState

        # Without cpu=True, accelerate treats processes launched on a machine without GPUs as
        # independent single processes (each would then run the whole benchmark).
        state = PartialState(cpu=device == "cpu" or not torch.cuda.is_available())
        launched = int(os.environ.get("WORLD_SIZE", "1"))
        if launched != state.num_processes:
            raise InputError(f"launched as {launched} processes (WORLD_SIZE) but accelerate set up "
                             f"{state.num_processes}; check the accelerate launch options")
        if device == "auto" and state.device.type != "cpu":
            device = str(state.device)
        return state.process_index, state.num_processes, barrier or state.wait_for_everyone, device
    if process_index is None or num_processes is None:
        raise InputError("give both process_index and num_processes, or neither (accelerate decides)")
    num_processes = _check_int("num_processes", num_processes, 1)
    if not 0 <= process_index < num_processes:
        raise InputError(f"process_index must be in 0..{num_processes - 1}, got {process_index}")
    if barrier is None:
        if num_processes > 1:
            raise InputError("with several processes, pass barrier= (a function all processes call to meet)")
        barrier = _no_barrier
    return process_index, num_processes, barrier, device


def _no_barrier() -> None:
    """One process: nothing to wait for."""


def _check_pipeline_options(pipe, condition: str, decoder: str | None) -> None:
    """Refuse options that would fail on every item (``pipe=None``: only the values)."""
    if condition not in ("prior", "null"):
        raise InputError(f"condition must be 'prior' (ASUKA) or 'null' (the SD baseline), got {condition!r}")
    if decoder not in (None, "asuka", "vae"):
        raise InputError(f"decoder must be 'asuka', 'vae' or None (the model's default), got {decoder!r}")
    if pipe is not None and decoder == "asuka" and getattr(pipe, "decoder", None) is None:
        raise InputError("decoder='asuka' but the model has no ASUKA decoder; use decoder='vae'")


def _inpaint_share(pipe, bench: Benchmark, names: list[str], output: Path, summary: RunSummary, *,
                   batch_size: int, say, progress: bool, **options) -> None:
    """Inpaint ``names`` in batches, counting written and failed items in ``summary``."""
    index_of = {n: i for i, n in enumerate(bench.names)}
    bar = None
    if progress and names:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(names), desc="run-benchmark", unit="image")
    for start in range(0, len(names), batch_size):
        chunk, batch = names[start:start + batch_size], []
        for name in chunk:
            try:
                batch.append(bench.dataset[index_of[name]])
            except InputError as exc:
                summary.failed.append((name, str(exc)))
                say(f"error: {name}: {exc}")
        try:
            summary.written += _inpaint_batch(pipe, batch, output, **options)
        except InputError:
            # The options were checked up front, so this is about an item (e.g. an image too small
            # for the model): it should not cost the others. Retry them one by one.
            for sample in batch:
                try:
                    summary.written += _inpaint_batch(pipe, [sample], output, **options)
                except InputError as exc:
                    summary.failed.append((sample["name"], str(exc)))
                    say(f"error: {sample['name']}: {exc}")
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()


def _inpaint_batch(pipe, batch: list[dict], output: Path, *, steps, seed, composite, poisson_blend, condition,
                   decoder, crop_margin, recipe) -> int:
    """Run one pipeline call on ``batch`` (samples of :class:`Benchmark`), write the PNGs."""
    import torch

    if not batch:
        return 0

    # CPU generators: the same noise on any device, and per item, so batching changes nothing.
    generators = [torch.Generator().manual_seed(image_seed(seed, s["name"])) for s in batch]
    images = pipe([s["image"] for s in batch], [s["mask"] for s in batch], steps, generator=generators,
                  condition=condition, decoder=decoder, composite=composite, padding_mask_crop=crop_margin,
                  poisson_blend=poisson_blend, output_type="pil").images
    for sample, image in zip(batch, images):
        write_png_atomic(image, output_path(output, sample["name"]),
                         recipe=dict(recipe, seed=image_seed(seed, sample["name"])))
    return len(batch)


def print_to_stderr(message: str) -> None:
    """The CLI's ``log``: one line on stderr."""
    print(f"asuka: {message}", file=sys.stderr, flush=True)
