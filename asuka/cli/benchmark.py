"""``asuka build-benchmark`` (a MISATO-style benchmark from an image folder) and
``asuka run-benchmark`` (inpaint a benchmark with a model)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    b = subparsers.add_parser(
        "build-benchmark",
        help="build a MISATO-style benchmark (CLIP clusters, evaluation masks) from an image folder",
        description="Embed every image (CLIP, or precomputed embeddings), cluster with bisecting "
        "k-means into K clusters, keep the image nearest each centre, centre-crop and resize it, and "
        "draw a mask from the evaluation mix. Writes OUT/<size>/image/NNNN.png, OUT/<size>/mask/NNNN.png "
        "(255 = hole; 00NNNN.png at 1024) and OUT/<size>/manifest.json. Build each domain with its own "
        "--start-index (MISATO: 0, 500, 1000, 1500).",
    )
    b.add_argument("--images", required=True, metavar="DIR", help="source image folder (searched recursively)")
    b.add_argument("-o", "--output", required=True, metavar="OUT", help="benchmark root folder")
    b.add_argument("--clusters", type=int, default=500, metavar="K", help="number of images to keep (default 500)")
    b.add_argument("--size", type=int, default=512, help="output side in pixels (default 512)")
    b.add_argument("--seed", type=int, default=0, help="seed of the clustering and the masks (default 0)")
    src = b.add_mutually_exclusive_group()
    src.add_argument("--embeddings", metavar="FILE",
                     help=".npy (N, D) in sorted file order, or .npz with 'embeddings' and 'names'")
    src.add_argument("--embedder", metavar="SPEC", default=None,
                     help="open_clip:ARCH/PRETRAINED (default open_clip:ViT-B-32/laion2b_s34b_b79k) or "
                     "transformers:MODEL (e.g. transformers:openai/clip-vit-base-patch32 or a local folder)")
    b.add_argument("--coco-annotations", metavar="JSON",
                   help="COCO instances file: remove the chosen images' annotated objects from the holes")
    b.add_argument("--object-dilation", type=int, default=3, metavar="PX",
                   help="grow removed objects by this many output pixels (default 3)")
    b.add_argument("--mix", default="misato-eval", help="mask mix (default misato-eval; see asuka masks)")
    b.add_argument("--shapes", metavar="COCO.json|DIR", help="object shapes for the mask mix (default synthetic)")
    b.add_argument("--start-index", type=int, default=0, help="number of the first output image (default 0)")
    b.add_argument("--batch-size", type=int, default=32, help="embedding batch size (default 32)")
    b.add_argument("--device", default="cpu", help="device of the embedder (default cpu)")
    b.add_argument("--overwrite", action="store_true", help="replace existing output files")
    b.set_defaults(func=run_build)

    r = subparsers.add_parser(
        "run-benchmark",
        help="inpaint every image of a benchmark (MISATO layout or image/mask folders) with a model",
        description="Inpaint DIR/image/* with DIR/mask/* using MODEL and write the results to -o.",
    )
    r.add_argument("--model", required=True, metavar="M", help="model folder or name")
    r.add_argument("--data", required=True, metavar="DIR", help="benchmark folder (MISATO layout)")
    r.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    r.add_argument("--steps", type=int, default=50, help="denoising steps (default 50)")
    r.add_argument("--seed", type=int, default=42, help="seed (default 42)")
    r.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    r.add_argument("--dtype", default=None, choices=("float32", "float16", "bfloat16"), help="model dtype")
    r.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    r.add_argument("--batch-size", type=int, default=1, help="images per pipeline call (default 1)")
    r.add_argument("--resolution", type=int, default=None, choices=(512, 1024),
                   help="MISATO resolution folder (default 512; not for an images/ + masks/ folder)")
    r.add_argument("--no-composite", action="store_true",
                   help="keep the model's output everywhere (default: paste the known pixels back)")
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

    summary = run_benchmark(
        args.model, args.data, args.output, steps=args.steps, seed=args.seed, resolution=args.resolution,
        composite=not args.no_composite, batch_size=args.batch_size, device=args.device or "auto",
        dtype=args.dtype or "auto", overwrite=args.overwrite, log=print_to_stderr, progress=True,
    )
    if summary.failed:
        print_to_stderr(f"error: {len(summary.failed)} of {summary.assigned} image(s) of process "
                        f"{summary.process_index} failed; they are left unfinished (rerun to retry)")
        return 1
    return 0


run = run_build
