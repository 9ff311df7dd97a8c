"""``asuka convert``: official ASUKA files + an SD-1.5-inpainting backbone -> a pipeline folder.

    asuka convert --mae mae_300.pth --aligner asuka_alignment_clip.pt \\
        [--decoder asuka_decoder.ckpt] [--backbone SD_FOLDER_OR_HUB_ID] -o OUT

Each of ``--mae``, ``--aligner``, ``--decoder`` takes an official release file (converted with
the models' key- and shape-checked ``from_release``) or a folder saved with
``save_pretrained``. Without ``--decoder`` the pipeline decodes with the backbone's VAE. The
result loads with ``AsukaInpaintPipeline.from_pretrained(OUT)`` and ``asuka inpaint --model OUT``.
"""

from __future__ import annotations

import sys

from asuka.cli.common import ExamplesFormatter, examples

DEFAULT_BACKBONE = "stable-diffusion-v1-5/stable-diffusion-inpainting"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert", help="build a pipeline folder from official ASUKA weights and an SD-1.5 inpainting backbone",
        description="Convert the official ASUKA files (or save_pretrained folders) and a standard "
        "SD-1.5-inpainting diffusers folder / hub id into one AsukaInpaintPipeline folder.",
        formatter_class=ExamplesFormatter,
        epilog=examples("asuka convert --mae mae_300.pth --aligner my_aligner.pt --decoder asuka_decoder.ckpt -o my-asuka",
                        "asuka convert --mae runs/mae/export/mae --aligner runs/align/export/aligner "
                        "--backbone ./sd15-inpainting -o my-asuka --dtype float16"))
    p.add_argument("--mae", required=True, help="MAE: release file (mae_300.pth) or MAEPrior folder")
    p.add_argument("--aligner", required=True, help="alignment module: release file (.pt) or AsukaAligner folder")
    p.add_argument("--decoder", help="mask-conditioned decoder: release file (.ckpt) or folder "
                   "(optional: without it the VAE decoder is used)")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE,
                   help=f"SD-1.5 inpainting diffusers folder or hub id (default {DEFAULT_BACKBONE})")
    p.add_argument("-o", "--output", required=True, help="output pipeline folder")
    p.add_argument("--text-encoder", action="store_true",
                   help="keep the CLIP text encoder and tokenizer (the text-prompt SD baseline)")
    p.add_argument("--no-null-from-text", action="store_true",
                   help="keep the aligner's null condition instead of setting it to CLIP('')")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                   help="dtype of the saved weights")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from asuka.errors import InputError

    out = Path(args.output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        raise InputError(f"output {out} exists and is not an empty folder; pass --overwrite or choose another path")
    for flag in ("mae", "aligner", "decoder"):
        value = getattr(args, flag)
        if value is not None and not Path(value).exists():
            raise InputError(f"--{flag}: no such file or folder: {value}")

    from asuka.pipeline import AsukaInpaintPipeline, resolve_dtype

    dtype = resolve_dtype(args.dtype)
    print(f"asuka: loading backbone {args.backbone}", file=sys.stderr)
    pipe = AsukaInpaintPipeline.from_sd_inpaint(
        args.backbone, mae=args.mae, aligner=args.aligner, decoder=args.decoder,
        text_encoder=args.text_encoder, null_from_text_encoder=not args.no_null_from_text, torch_dtype=dtype)
    pipe.save_pretrained(out, safe_serialization=True)
    parts = ", ".join(name for name in ("mae", "aligner", "unet", "vae", "decoder", "text_encoder")
                      if getattr(pipe, name, None) is not None)
    print(f"wrote {out} ({parts}; {str(dtype).removeprefix('torch.')})")
    return 0
