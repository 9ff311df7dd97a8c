"""``asuka masks``: write seeded masks from a generator or mixture as PNGs (255 = hole)."""

from __future__ import annotations

import argparse

from asuka.cli.common import ExamplesFormatter, examples


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "masks",
        help="generate masks (paper training mix, MISATO evaluation mix, or one generator)",
        description="Write N masks as PNGs (255 = hole, 0 = keep) plus manifest.json (generator, "
        "parameters, seed and hole ratio of each mask). Mask i depends only on (--seed, i), so "
        "runs can be resumed or sharded with --start.",
        formatter_class=ExamplesFormatter,
        epilog=examples("asuka masks --mix paper-train --n 10000 --size 256 --seed 0 -o masks/",
                        "asuka masks --mix misato-eval --n 2000 --size 512 -o eval_masks/",
                        "asuka masks --mix lama-thick --n 100 --size 384x512 --start 100 -o masks/"),
    )
    p.add_argument("--mix", required=True, metavar="NAME",
                   help="paper-train | misato-eval | a generator: lama-thin, lama-medium, lama-thick, "
                   "comod, mat-large, mat-small, object, rectangle, rectangle-complement")
    p.add_argument("--n", type=int, required=True, help="number of masks")
    p.add_argument("--size", default="512", metavar="S|HxW",
                   help="mask size: S for S x S, or HEIGHTxWIDTH (default 512)")
    p.add_argument("--seed", type=int, default=0, help="run seed (default 0)")
    p.add_argument("--start", type=int, default=0,
                   help="index of the first mask (for shards / resuming; default 0)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    p.add_argument("--shapes", default=None, metavar="COCO.json|DIR",
                   help="object shapes: COCO instances json or folder of binary shape images "
                   "(default: built-in synthetic shapes)")
    p.add_argument("--overwrite", action="store_true", help="replace existing mask files / manifest")
    p.set_defaults(func=run)


def parse_size(text: str) -> tuple[int, int]:
    """``"512"`` -> (512, 512); ``"256x384"`` -> (256, 384) as (height, width)."""
    from asuka.errors import InputError

    parts = str(text).lower().split("x")
    try:
        values = [int(v) for v in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values) < 8:
        raise InputError(f"--size must be S or HEIGHTxWIDTH with sides >= 8, got {text!r}")
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def run(args: argparse.Namespace) -> int:
    from asuka.masks.writer import write_masks

    height, width = parse_size(args.size)
    manifest = write_masks(args.output, mix=args.mix, n=args.n, height=height, width=width,
                           seed=args.seed, start=args.start, shapes=args.shapes,
                           overwrite=args.overwrite, progress=True)
    ratios = [m["ratio"] for m in manifest["masks"] if args.start <= m["index"] < args.start + args.n]
    print(f"wrote {len(ratios)} masks ({height}x{width}, mix {args.mix}, seed {args.seed}) to {args.output} "
          f"(manifest lists {manifest['count']}); hole ratio mean {sum(ratios) / len(ratios):.3f}, "
          f"min {min(ratios):.3f}, max {max(ratios):.3f}")
    return 0
