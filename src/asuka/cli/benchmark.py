"""``asuka build-benchmark`` (a MISATO-style benchmark from an image folder) and
``asuka run-benchmark`` (inpaint a benchmark with a model)."""

from __future__ import annotations

import argparse

from asuka.cli.common import (HelpFormatter, add_blend_options, add_crop_options, add_model_options,
                              add_threads_option, crop_margin, examples, resolve_model)


def register(subparsers) -> None:
    b = subparsers.add_parser(
        "build-benchmark",
        help="build a MISATO-style benchmark (CLIP clusters, evaluation masks) from an image folder",
        description="Embed every image (CLIP, or precomputed embeddings), cluster with bisecting "
        "k-means into K clusters, keep the image nearest each centre, centre-crop and resize it, and "
        "draw a mask from the evaluation mix. Writes OUT/<size>/image/NNNN.png, OUT/<size>/mask/NNNN.png "
        "(255 = hole; 00NNNN.png at 1024) and OUT/<size>/manifest.json. Build each domain with its own "
        "--start-index (MISATO: 0, 500, 1000, 1500).",
        formatter_class=HelpFormatter,
        epilog=examples("asuka build-benchmark --images photos/ -o my_bench --clusters 500 --size 512",
                        "asuka build-benchmark --images photos/ -o my_bench --embeddings clip.npy --seed 1"),
    )
    b.add_argument("--images", required=True, metavar="DIR", help="source image folder (searched recursively)")
    b.add_argument("-o", "--output", required=True, metavar="OUT", help="benchmark root folder")
    b.add_argument("--clusters", type=int, default=500, metavar="K", help="number of images to keep")
    b.add_argument("--size", type=int, default=512, help="output side in pixels")
    b.add_argument("--seed", type=int, default=0, help="seed of the clustering and the masks")
    src = b.add_mutually_exclusive_group()
    src.add_argument("--embeddings", metavar="FILE",
                     help=".npy (N, D) in sorted file order, or .npz with 'embeddings' and 'names'")
    src.add_argument("--embedder", metavar="SPEC", default=None,
                     help="open_clip:ARCH/PRETRAINED (default open_clip:ViT-B-32/laion2b_s34b_b79k) or "
                     "transformers:MODEL (e.g. transformers:openai/clip-vit-base-patch32 or a local folder)")
    b.add_argument("--coco-annotations", metavar="JSON",
                   help="COCO instances file: remove the chosen images' annotated objects from the holes")
    b.add_argument("--object-dilation", type=int, default=3, metavar="PX",
                   help="grow removed objects by this many output pixels")
    b.add_argument("--mix", default="misato-eval", help="mask mix")
    b.add_argument("--shapes", metavar="COCO.json|DIR", help="object shapes for the mask mix")
    b.add_argument("--start-index", type=int, default=0, help="number of the first output image")
    b.add_argument("--batch-size", type=int, default=32, help="embedding batch size")
    b.add_argument("--device", default="cpu", help="device of the embedder")
    b.add_argument("--overwrite", action="store_true", help="replace existing output files")
    add_threads_option(b)
    b.set_defaults(func=run_build)

    r = subparsers.add_parser(
        "run-benchmark",
        help="inpaint every image of a benchmark (MISATO layout or image/mask folders) with a model",
        description="Inpaint every image of the benchmark DIR with the mask of the same file stem and write "
        "OUT/<stem>.png. DIR is images/ + masks/, or the MISATO layout (DIR/512/image + DIR/512/mask, or "
        "DIR/image + DIR/mask); any names are matched by stem as in `asuka inpaint --images --masks` "
        "(MISATO's 00NNNN masks too). Resumable, shardable (accelerate launch), one seed per stem; crop "
        "mode as in `asuka inpaint` unless --full-image.",
        formatter_class=HelpFormatter,
        epilog=examples("asuka run-benchmark --data MISATO -o results/asuka",
                        "asuka run-benchmark --data my_bench --model my-asuka -o results/mine --steps 25",
                        "asuka run-benchmark --data MISATO --resolution 1024 --full-image -o results/1024",
                        "accelerate launch --multi_gpu --num_processes 8 -m asuka run-benchmark "
                        "--model M --data D -o OUT"),
    )
    add_model_options(r)
    r.add_argument("--data", required=True, metavar="DIR", help="benchmark folder (see above)")
    r.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    r.add_argument("--steps", type=int, default=None,
                   help="denoising steps (default: the model's own default_steps, else 50)")
    r.add_argument("--seed", type=int, default=42, help="run seed (each image: sha256(seed/stem))")
    add_crop_options(r)
    r.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    r.add_argument("--batch-size", type=int, default=1, help="images per pipeline call")
    r.add_argument("--resolution", type=int, default=None, choices=(512, 1024),
                   help="MISATO resolution folder")
    r.add_argument("--condition", choices=("prior", "null"), default="prior",
                   help="prior: ASUKA; null: the SD baseline (empty condition)")
    r.add_argument("--decoder", choices=("asuka", "vae"), default=None,
                   help="decoder (default: ASUKA's when the model has one, else the VAE's)")
    r.add_argument("--no-composite", action="store_true",
                   help="keep the model's output everywhere (default: paste the known pixels back)")
    add_blend_options(r)
    r.set_defaults(func=run_run)


def run_build(args: argparse.Namespace) -> int:
    from asuka.data.build import build_benchmark

    manifest = build_benchmark(
        args.images, args.output, clusters=args.clusters, size=args.size, seed=args.seed,
        embeddings=args.embeddings, embedder=args.embedder, coco_annotations=args.coco_annotations,
        mix=args.mix, shapes=args.shapes, start_index=args.start_index, object_dilation=args.object_dilation,
        batch_size=args.batch_size, device=args.device, overwrite=args.overwrite, progress=True,
    )
    build = manifest["builds"][-1]
    new = [e for e in manifest["entries"]
           if build["start_index"] <= int(e["name"]) < build["start_index"] + build["clusters"]]
    ratios = [e["ratio"] for e in new]
    print(f"wrote {len(new)} image/mask pairs ({args.size} px) from {build['n_images']} images to "
          f"{args.output}/{args.size}; hole ratio mean {sum(ratios) / len(ratios):.3f}, "
          f"min {min(ratios):.3f}, max {max(ratios):.3f}")
    return 0


def run_run(args: argparse.Namespace) -> int:
    from asuka.runner import print_to_stderr, run_benchmark

    margin = crop_margin(args)
    summary = run_benchmark(
        resolve_model(args.model), args.data, args.output, steps=args.steps, seed=args.seed,
        resolution=args.resolution, crop_margin=margin, composite=not args.no_composite,
        poisson_blend=args.poisson_blend, condition=args.condition, decoder=args.decoder, batch_size=args.batch_size,
        device=args.device, dtype=args.dtype, overwrite=args.overwrite, log=print_to_stderr, progress=True,
    )
    if summary.failed:
        print_to_stderr(f"error: {len(summary.failed)} of {summary.assigned} image(s) of process "
                        f"{summary.process_index} failed; they are left unfinished (rerun to retry)")
        return 1
    return 0


run = run_build
