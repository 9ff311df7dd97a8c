"""torch thread count: asuka's default (``asuka.threads``) against each fixed setting, on a busy machine.

Each setting runs in a fresh process (as a command would): import asuka, choose the threads
(``auto`` = what every command does without ``--threads``), load the shipped model and time
``--calls`` pipeline calls on a 512 x 512 photo (crop mode, ``--steps`` steps) after one
warm-up call. Settings alternate in order from round to round. By default ``--busy 2``
processes spin on the CPU for the whole measurement (the target case of issue 11: two
competing busy processes on a 2-core machine); ``--busy 0`` measures the machine as it is.

    python benchmarks/bench_threads.py                      # auto vs 1, 2, ... threads, 2 busy processes
    python benchmarks/bench_threads.py --busy 0 --rounds 3  # without the competing processes

Prints the median seconds per call for each setting and ``auto / best fixed setting``
(issue 11's target: <= 1.2 under two busy processes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
try:  # the folder holding the asuka package this script imports (the clone's root, or src/)
    import asuka as _asuka

    PACKAGE_PARENT = str(Path(_asuka.__file__).resolve().parents[1])
except (ImportError, TypeError):  # not importable, or an empty namespace package
    PACKAGE_PARENT = str(ROOT)


def worker(setting: str, steps: int, calls: int) -> None:
    from asuka import threads

    threads.mark()  # as asuka.cli.main does, before the heavy imports
    import numpy as np
    import PIL.Image
    import torch

    import asuka

    used = threads.set_threads(None if setting == "auto" else int(setting))
    pipe = asuka.load_pipeline(device="cpu", dtype="float32")
    pipe.set_progress_bar_config(disable=True)
    image = PIL.Image.open(ROOT / "examples" / "astronaut.png").convert("RGB").resize((512, 512))
    mask = np.zeros((512, 512), np.uint8)
    mask[200:300, 180:330] = 255

    def call():
        pipe(image, mask, num_inference_steps=steps, generator=torch.Generator().manual_seed(0),
             padding_mask_crop=64)

    call()  # warm-up
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    print(json.dumps({"setting": setting, "threads": used, "seconds": times}))


def spin() -> None:
    while True:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--busy", type=int, default=2, help="competing busy processes (default 2)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds over all settings (default 3)")
    ap.add_argument("--calls", type=int, default=3, help="timed calls per process (default 3)")
    ap.add_argument("--steps", type=int, default=20, help="denoising steps per call (default 20)")
    ap.add_argument("--settings", default=None,
                    help="comma-separated settings (default: auto and 1..allowed CPUs)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        worker(args.worker, args.steps, args.calls)
        return

    from asuka.threads import allowed_cpus

    cpus = allowed_cpus()
    settings = args.settings.split(",") if args.settings else ["auto"] + [str(n) for n in range(1, cpus + 1)]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = PACKAGE_PARENT + os.pathsep + env.get("PYTHONPATH", "")
    print(f"allowed CPUs: {cpus}; competing busy processes: {args.busy}; load average before: "
          f"{os.getloadavg()[0]:.2f}; {args.steps} steps, {args.calls} timed calls per process")
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    results: dict[str, list[float]] = {s: [] for s in settings}
    chosen: dict[str, set] = {s: set() for s in settings}
    try:
        for r in range(args.rounds):
            order = settings[r % len(settings):] + settings[:r % len(settings)]
            for setting in order:
                proc = subprocess.run([sys.executable, __file__, "--worker", setting, "--steps", str(args.steps),
                                       "--calls", str(args.calls)], capture_output=True, text=True, env=env)
                if proc.returncode != 0:
                    raise SystemExit(f"worker {setting} failed:\n{proc.stderr[-2000:]}")
                out = json.loads(proc.stdout.strip().splitlines()[-1])
                results[setting] += out["seconds"]
                chosen[setting].add(out["threads"])
                print(f"  round {r + 1} {setting:>4}: threads={out['threads']} "
                      f"{statistics.median(out['seconds']):.3f} s/call", flush=True)
    finally:
        for p in spinners:
            p.kill()
    medians = {s: statistics.median(v) for s, v in results.items()}
    fixed = {s: m for s, m in medians.items() if s != "auto"}
    print("\nsetting  threads  median s/call")
    for s in settings:
        print(f"{s:>7}  {','.join(map(str, sorted(chosen[s]))):>7}  {medians[s]:.3f}")
    if "auto" in medians and fixed:
        best = min(fixed, key=fixed.get)
        print(f"auto / best fixed ({best} threads): {medians['auto'] / fixed[best]:.2f}  (target <= 1.2)")


if __name__ == "__main__":
    main()
