"""Feature-extraction throughput and the evaluator's memory, on images generated on the fly.

Prints, for the chosen feature network:

* feature-extraction throughput in images/s at ``--size`` (512 by default), network only;
* for each ``--n`` (default 1,000 and 10,000 images), in a fresh process each: the evaluation
  rate of :class:`asuka.metrics.InpaintingEvaluator` (features of gt and composite + pixel
  metrics), the peak RSS, and the RSS growth per 1,000 images while streaming (expected: the
  kept features, 2 x 2048 float32 = 16 KiB per image, i.e. 16 MB per 1,000 images).

Images are smooth random pictures and rectangular holes made batch by batch from a seed; none
is ever kept, so the figures show what the evaluator itself holds.

    python benchmarks/bench_features.py                       # 1,000 and 10,000 images, TF-2015 Inception
    python benchmarks/bench_features.py --n 100 400 --device cpu --threads 2
    python benchmarks/bench_features.py --features none       # pixel metrics only (no network)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def _rss_mb() -> float:
    """Current resident set size in MB (Linux /proc; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return _peak_rss_mb()


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def _batch(index: int, batch_size: int, size: int, device):
    """A reproducible batch: smooth random gt, a prediction with noise, rectangular holes."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(index)
    gt = F.interpolate(torch.rand(batch_size, 3, 8, 8, generator=g) * 2 - 1, size=(size, size),
                       mode="bicubic", align_corners=False).clamp(-1, 1)
    pred = (gt + 0.2 * torch.randn(gt.shape, generator=g)).clamp(-1, 1)
    mask = torch.zeros(batch_size, 1, size, size)
    for i in range(batch_size):
        y, x = torch.randint(0, size // 2, (2,), generator=g).tolist()
        mask[i, :, y:y + size // 3, x:x + size // 3] = 1
    return pred.to(device), gt.to(device), mask.to(device)


def _extractor(args, device):
    if args.features == "none":
        return None
    from asuka.metrics import load_feature_extractor

    return load_feature_extractor(args.features, random_weights=args.features == "torchvision", device=device)


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(args) -> float:
    """Images/s of the feature network alone (first batch excluded as warm-up)."""
    import torch

    device = _device(args.device)
    net = _extractor(args, device)
    if net is None:
        return float("nan")
    pred, _, _ = _batch(0, args.batch_size, args.size, device)
    with torch.no_grad():
        net(pred)
        _sync(device)
        start = time.perf_counter()
        for _ in range(args.throughput_batches):
            net(pred)
        _sync(device)
    return args.throughput_batches * args.batch_size / (time.perf_counter() - start)


def child(n: int, args) -> dict:
    """Stream ``n`` images through the evaluator; report rate and memory (run in a fresh process)."""
    import torch

    from asuka.metrics import InpaintingEvaluator

    device = _device(args.device)
    evaluator = InpaintingEvaluator(feature_extractor=_extractor(args, device), ids=False,
                                    pixel_metrics=not args.no_pixel_metrics, device=device)
    batches = (n + args.batch_size - 1) // args.batch_size
    samples = []  # (images so far, RSS MB)
    start = time.perf_counter()
    done = 0
    for b in range(batches):
        size = min(args.batch_size, n - done)
        evaluator.update(*_batch(b + 1, size, args.size, device))
        done += size
        if b == 0 or (b + 1) % max(1, batches // 10) == 0 or b == batches - 1:
            samples.append((done, _rss_mb()))
    _sync(device)
    elapsed = time.perf_counter() - start
    stream_peak = _peak_rss_mb()
    t0 = time.perf_counter()
    if not args.no_compute:
        evaluator.compute()
    compute_s = time.perf_counter() - t0
    # growth per 1,000 images over the second half of the run (imports and allocator warm-up excluded)
    (n0, r0), (n1, r1) = samples[len(samples) // 2], samples[-1]
    growth = (r1 - r0) / (n1 - n0) * 1000 if n1 > n0 else float("nan")
    feature_mb = sum(a.nbytes for a in evaluator._real + evaluator._fake) / 2**20
    return {"n": n, "images_per_s": n / elapsed, "stream_peak_rss_mb": stream_peak,
            "peak_rss_mb": _peak_rss_mb(), "rss_growth_mb_per_1000": growth, "features_mb": feature_mb,
            "compute_s": compute_s, "device": str(device)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 10000], help="image counts (default 1000 10000)")
    parser.add_argument("--size", type=int, default=512, help="image side (default 512)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--features", choices=("tf2015", "torchvision", "none"), default="tf2015",
                        help="feature network (torchvision: random weights; none: pixel metrics only)")
    parser.add_argument("--no-pixel-metrics", action="store_true", help="features only")
    parser.add_argument("--no-compute", action="store_true", help="skip the final FID (2048x2048 sqrtm)")
    parser.add_argument("--throughput-batches", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: asuka.threads' choice)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # show each row as soon as its run ends

    import torch

    from asuka.threads import set_threads

    set_threads(args.threads)
    if args.child is not None:
        print(json.dumps(child(args.child, args)))
        return 0

    rate = throughput(args)
    print(f"features={args.features} size={args.size} batch={args.batch_size} device={_device(args.device)} "
          f"threads={torch.get_num_threads()}")
    print(f"feature extraction: {rate:.1f} images/s (network only)")
    print(f"{'images':>8} {'eval img/s':>10} {'peak RSS MB':>12} {'stream peak':>12} "
          f"{'RSS MB/1000 img':>16} {'features MB':>12} {'compute s':>10}")
    passthrough = [a for a in (argv if argv is not None else sys.argv[1:])]
    for n in args.n:
        cmd = [sys.executable, os.path.abspath(__file__), *passthrough, "--child", str(n)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return proc.returncode
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{r['n']:>8} {r['images_per_s']:>10.1f} {r['peak_rss_mb']:>12.0f} {r['stream_peak_rss_mb']:>12.0f} "
              f"{r['rss_growth_mb_per_1000']:>16.1f} {r['features_mb']:>12.1f} {r['compute_s']:>10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
