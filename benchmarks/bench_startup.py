"""Start-up and large photos, end to end: ``asuka inpaint`` with the shipped default model.

Measures, in fresh processes (as a user runs the command), alternating three cases:

* a 512 x 512 photo (PNG) with a hole in the middle -- the start-up figure (issue 11's
  target: <= 4 s on an idle 2-core machine);
* a 4000 x 3000 photo (JPEG, as cameras write them) with a ~2% hole, written as PNG --
  ``time(4000x3000) / time(512x512)`` (target <= 1.3) and its extra peak memory over the
  512 x 512 run (target <= 300 MB);
* the 512 x 512 run through ``asuka.cli.main`` in a plain ``python -c`` process -- the same
  command without the entry point's garbage-collector handling
  (:mod:`asuka.cli.startup`), i.e. what the command cost before it: the same-moment baseline.

Then where the time of one 512 x 512 run goes (``--phases`` runs, median): a child process
makes the CLI's calls in the CLI's order (the entry point's gc handling, the imports, the
model load, reading the inputs and the recipe, the pipeline call, the PNG write) and reports
wall and CPU time per phase; interpreter start-up and exit are what the parent sees before
the first and after the last mark. CPU time is what to compare on a machine shared with
other jobs.

Then what the imports cost (``python -X importtime``, self time summed by top-level package,
for ``import asuka.pipeline`` with the collector paused, as the command has it) and, in this
process, the PNG writer at zlib level 1 (what ``asuka.io.save_image`` uses) against PIL's
default 6 on the 4000 x 3000 output.

    python benchmarks/bench_startup.py [--runs 3] [--phases 3] [--threads N]

It measures whatever the pipeline does (crop mode is the CLI's default).
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL.Image

ROOT = Path(__file__).resolve().parents[1]
try:  # the folder holding the asuka package this script imports (the clone's root, or src/)
    import asuka as _asuka

    PACKAGE_PARENT = str(Path(_asuka.__file__).resolve().parents[1])
except (ImportError, TypeError):  # not importable, or an empty namespace package
    PACKAGE_PARENT = str(ROOT)


def make_inputs(folder: Path) -> dict[str, tuple[Path, Path]]:
    photo = PIL.Image.open(ROOT / "examples" / "astronaut.png").convert("RGB")
    small = photo.resize((512, 512), PIL.Image.BICUBIC)
    small_mask = np.zeros((512, 512), np.uint8)
    small_mask[200:300, 190:320] = 255  # 5% of the image
    large = photo.resize((4000, 3000), PIL.Image.BICUBIC)
    large_mask = np.zeros((3000, 4000), np.uint8)
    large_mask[1300:1700, 1700:2300] = 255  # 400 x 600 = 2% of the image
    paths = {"512x512": (folder / "small.png", folder / "small_mask.png"),
             "4000x3000": (folder / "large.jpg", folder / "large_mask.png")}
    small.save(paths["512x512"][0])
    PIL.Image.fromarray(small_mask).save(paths["512x512"][1])
    large.save(paths["4000x3000"][0], quality=95)
    PIL.Image.fromarray(large_mask).save(paths["4000x3000"][1])
    return paths


#: the command through asuka.cli.main, without the entry point's gc handling (asuka.cli.startup)
PLAIN_MAIN = "import sys; from asuka.cli import main; sys.exit(main(sys.argv[1:]))"


def run_cli(image: Path, mask: Path, out: Path, threads: int | None, *,
            plain_main: bool = False) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS in MB) of one ``asuka inpaint`` process."""
    entry = ["-c", PLAIN_MAIN] if plain_main else ["-m", "asuka"]
    cmd = [sys.executable, *entry, "inpaint", str(image), str(mask), "-o", str(out)]
    if threads:
        cmd += ["--threads", str(threads)]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = PACKAGE_PARENT + os.pathsep + env.get("PYTHONPATH", "")
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"asuka inpaint failed:\n{err[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


# The CLI's calls in its order (asuka.cli.console -> asuka.cli.inpaint.run), with a mark after each phase.
PHASES_CHILD = r"""
import json, sys, time
marks = [("start", time.time(), time.process_time())]
def mark(name):
    marks.append((name, time.time(), time.process_time()))
from pathlib import Path
from asuka import threads
from asuka.cli import startup
threads.mark()
startup.hold()
import asuka.cli, asuka.cli.inpaint as cli_inpaint
mark("CLI modules (argparse, stdlib)")
import torch
mark("import torch")
import diffusers
mark("import diffusers (torch._dynamo, sympy, torch.distributed)")
import asuka.pipeline
mark("import diffusers' models, asuka.pipeline")
from asuka import io, provenance
image_path, mask_path, out_path, n_threads = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
model = cli_inpaint.resolve_model(None)
threads.set_threads(int(n_threads) if n_threads != "auto" else None)
pipe = asuka.pipeline.load_pipeline(model, device="auto", dtype="auto")
pipe.set_progress_bar_config(disable=False)
startup.release()
mark("load the model")
image, mask = cli_inpaint._read_pair(Path(image_path), Path(mask_path), False)
steps = pipe.default_num_inference_steps  # what the CLI uses without --steps
recipe = provenance.recipe(pipe, model, steps=steps, seed=42, decoder=None, condition="prior", watermark=False,
                           condition_weight=pipe.default_condition_weight, guidance_scale=pipe.default_guidance_scale,
                           prompt=None, crop_margin=64, composite=True, feather=None)
mark("read the inputs, recipe (model hash)")
result = pipe(image, mask, num_inference_steps=steps, generator=torch.Generator().manual_seed(42),
              output_type="pil").images[0]
mark(f"pipeline call ({steps} step{'s' if steps != 1 else ''})")
io.save_image(result, out_path, recipe=recipe)
mark("write the PNG")
print(json.dumps(marks))
sys.stdout.flush()
startup.at_exit()
"""


def run_phases(image: Path, mask: Path, out: Path, threads: int | None) -> list[tuple[str, float, float]]:
    """(phase, wall seconds, CPU seconds) of one run of :data:`PHASES_CHILD`; the first phase is
    the interpreter's start-up (wall only) and the last its exit (wall only)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = PACKAGE_PARENT + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-c", PHASES_CHILD, str(image), str(mask), str(out), str(threads or "auto")]
    start = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    end = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"the phase run failed:\n{proc.stderr[-2000:]}")
    marks = json.loads(proc.stdout.strip().splitlines()[-1])
    phases = [("interpreter start-up", marks[0][1] - start, float("nan"))]
    for (_, wall0, cpu0), (name, wall1, cpu1) in zip(marks, marks[1:]):
        phases.append((name, wall1 - wall0, cpu1 - cpu0))
    phases.append(("interpreter exit", end - marks[-1][1], float("nan")))
    return phases


def import_costs(top: int = 12) -> list[tuple[str, float]]:
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # with the collector paused, as the asuka command imports (asuka.cli.startup): a collection
    # would otherwise be counted as the self time of whichever module it happened in
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import gc; gc.disable(); import asuka.pipeline"],
                          capture_output=True, text=True, env=env)
    costs = collections.Counter()
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _, name = line[len("import time:"):].split("|")
        name = name.strip()
        parts = name.split(".")
        key = ".".join(parts[:2]) if parts[0] == "torch" and len(parts) > 1 and parts[1] in (
            "_dynamo", "fx", "distributed", "_inductor") else parts[0]
        costs[key] += int(self_us) / 1e6
    total = sum(costs.values())
    return [("(all)", total)] + costs.most_common(top)


def png_write_times(image: PIL.Image.Image, rounds: int = 3) -> dict[int, float]:
    times: dict[int, list[float]] = {1: [], 6: []}
    for _ in range(rounds):
        for level in (1, 6):
            buffer = io.BytesIO()
            start = time.perf_counter()
            image.save(buffer, format="PNG", compress_level=level)
            times[level].append(time.perf_counter() - start)
    return {level: statistics.median(v) for level, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="runs of each case (alternating; default 3)")
    ap.add_argument("--phases", type=int, default=3, help="runs of the per-phase breakdown (default 3; 0: none)")
    ap.add_argument("--threads", type=int, default=None, help="pass --threads N to asuka inpaint")
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inputs = make_inputs(tmp)
        run_cli(*inputs["512x512"], tmp / "warm.png", args.threads)  # page cache and .pyc files
        cases = {case: (inputs[case], False) for case in inputs}
        cases["512x512 via main"] = (inputs["512x512"], True)
        results = {case: [] for case in cases}
        for r in range(args.runs):
            for case in (list(cases) if r % 2 == 0 else list(reversed(cases))):
                (image, mask), plain = cases[case]
                results[case].append(run_cli(image, mask, tmp / f"out_{case.replace(' ', '_')}.png", args.threads,
                                             plain_main=plain))
        phase_runs = [run_phases(*inputs["512x512"], tmp / "phases.png", args.threads) for _ in range(args.phases)]
        large_out = PIL.Image.open(tmp / "out_4000x3000.png")
        large_out.load()
        png = png_write_times(large_out)
    med = {case: tuple(statistics.median(run[i] for run in v) for i in range(3)) for case, v in results.items()}
    print(f"\nasuka inpaint, shipped model, end to end (median of {args.runs}, load average now "
          f"{os.getloadavg()[0]:.2f}):")
    for case, (wall, cpu, rss) in med.items():
        print(f"  {case:>16}: {wall:6.2f} s   CPU {cpu:6.2f} s   peak RSS {rss:7.0f} MB")
    print(f"  4000x3000 / 512x512 time: {med['4000x3000'][0] / med['512x512'][0]:.2f}  (target <= 1.3)")
    print(f"  4000x3000 extra peak memory: {med['4000x3000'][2] - med['512x512'][2]:.0f} MB  (target <= 300)")
    print(f"  512x512 via asuka.cli.main (no gc handling) / asuka: wall "
          f"{med['512x512 via main'][0] / med['512x512'][0]:.2f}, CPU {med['512x512 via main'][1] / med['512x512'][1]:.2f}")
    if phase_runs:
        print(f"\nwhere a 512x512 run's time goes (median of {len(phase_runs)}; wall / CPU seconds):")
        total_wall = total_cpu = 0.0
        for i, (name, _, _) in enumerate(phase_runs[0]):
            wall = statistics.median(run[i][1] for run in phase_runs)
            cpu = statistics.median(run[i][2] for run in phase_runs)
            total_wall += wall
            total_cpu += 0.0 if cpu != cpu else cpu
            cpu_text = "    -" if cpu != cpu else f"{cpu:5.2f}"
            print(f"  {wall:5.2f} / {cpu_text}  {name}")
        print(f"  {total_wall:5.2f} / {total_cpu:5.2f}  total (CPU without interpreter start-up and exit)")
    print(f"\nPNG write of the 4000x3000 output: level 1 {png[1]:.2f} s, PIL default 6 {png[6]:.2f} s "
          f"({png[6] / png[1]:.1f}x)")
    print("\nimport asuka.pipeline, self time by package (-X importtime):")
    for name, seconds in import_costs():
        print(f"  {seconds:6.2f} s  {name}")


if __name__ == "__main__":
    main()
