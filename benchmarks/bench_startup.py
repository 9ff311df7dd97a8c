"""Start-up and large photos, end to end: ``asuka inpaint`` with the shipped default model.

Measures, in fresh processes (as a user runs the command), alternating the two cases:

* a 512 x 512 photo (PNG) with a hole in the middle -- the start-up figure (issue 11's
  target: <= 4 s on an idle 2-core machine);
* a 4000 x 3000 photo (JPEG, as cameras write them) with a ~2% hole, written as PNG --
  ``time(4000x3000) / time(512x512)`` (target <= 1.3) and its extra peak memory over the
  512 x 512 run (target <= 300 MB).

Then, in this process, what the imports cost (``python -X importtime``, self time summed by
top-level package, for ``import asuka.pipeline``) and the PNG writer at zlib level 1 (what
``asuka.io.save_image`` uses) against PIL's default 6 on the 4000 x 3000 output.

    python benchmarks/bench_startup.py [--runs 3] [--threads N]

It measures whatever the pipeline does (crop mode is the CLI's default).
"""

from __future__ import annotations

import argparse
import collections
import io
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


def run_cli(image: Path, mask: Path, out: Path, threads: int | None) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one ``asuka inpaint`` process."""
    cmd = [sys.executable, "-m", "asuka", "inpaint", str(image), str(mask), "-o", str(out)]
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
    return wall, usage.ru_maxrss / 1024


def import_costs(top: int = 12) -> list[tuple[str, float]]:
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import asuka.pipeline"],
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
    ap.add_argument("--threads", type=int, default=None, help="pass --threads N to asuka inpaint")
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inputs = make_inputs(tmp)
        run_cli(*inputs["512x512"], tmp / "warm.png", args.threads)  # page cache and .pyc files
        results = {case: [] for case in inputs}
        for r in range(args.runs):
            for case in (inputs if r % 2 == 0 else reversed(list(inputs))):
                results[case].append(run_cli(*inputs[case], tmp / f"out_{case}.png", args.threads))
        large_out = PIL.Image.open(tmp / "out_4000x3000.png")
        large_out.load()
        png = png_write_times(large_out)
    med = {case: (statistics.median(w for w, _ in v), statistics.median(m for _, m in v))
           for case, v in results.items()}
    print(f"\nasuka inpaint, shipped model, end to end (median of {args.runs}, load average now "
          f"{os.getloadavg()[0]:.2f}):")
    for case, (wall, rss) in med.items():
        print(f"  {case:>9}: {wall:6.2f} s   peak RSS {rss:7.0f} MB")
    print(f"  4000x3000 / 512x512 time: {med['4000x3000'][0] / med['512x512'][0]:.2f}  (target <= 1.3)")
    print(f"  4000x3000 extra peak memory: {med['4000x3000'][1] - med['512x512'][1]:.0f} MB  (target <= 300)")
    print(f"\nPNG write of the 4000x3000 output: level 1 {png[1]:.2f} s, PIL default 6 {png[6]:.2f} s "
          f"({png[6] / png[1]:.1f}x)")
    print("\nimport asuka.pipeline, self time by package (-X importtime):")
    for name, seconds in import_costs():
        print(f"  {seconds:6.2f} s  {name}")


if __name__ == "__main__":
    main()
