"""``asuka convert``: official ASUKA files + a backbone -> one self-contained pipeline folder.

    asuka convert --flux [FLUX_FOLDER_OR_HUB_ID] [--asuka ASUKA_FOLDER_OR_HUB_ID] -o OUT
    asuka convert --mae mae_300.pth --aligner asuka_alignment_clip.pt \\
        [--decoder asuka_decoder.ckpt] [--backbone SD_FOLDER_OR_HUB_ID] -o OUT

``--flux``: the official release (``yikaiwang/ASUKA-FLUX.1-Fill``: MAE, both aligners, decoder,
null conditions ``vec.pt`` / ``txt_256.pt``) on FLUX.1-Fill-dev (``black-forest-labs/FLUX.1-Fill-dev``
by default), with :meth:`~asuka.pipeline_flux.AsukaFluxFillPipeline.from_official`; the t5
aligner is saved without its unused ``modulation.lin`` parameters (201 M). Otherwise: the
SD-1.5 variant.

Each of ``--mae``, ``--aligner``, ``--decoder`` takes an official release file (converted with
the models' key- and shape-checked ``from_release``) or a folder saved with
``save_pretrained``. Without ``--decoder`` the pipeline decodes with the backbone's VAE. The
result loads with ``AsukaInpaintPipeline.from_pretrained(OUT)`` and ``asuka inpaint --model OUT``.
"""

from __future__ import annotations

import sys

from asuka.cli.common import ExamplesFormatter, examples

DEFAULT_BACKBONE = "stable-diffusion-v1-5/stable-diffusion-inpainting"
DEFAULT_FLUX = "black-forest-labs/FLUX.1-Fill-dev"
DEFAULT_ASUKA = "yikaiwang/ASUKA-FLUX.1-Fill"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert", help="build a pipeline folder from official ASUKA weights and a FLUX.1-Fill or SD-1.5 backbone",
        description="Convert the official ASUKA-FLUX release and FLUX.1-Fill-dev (--flux) into one "
        "AsukaFluxFillPipeline folder, or ASUKA files (or save_pretrained folders) and a standard "
        "SD-1.5-inpainting diffusers folder / hub id into one AsukaInpaintPipeline folder.",
        formatter_class=ExamplesFormatter,
        epilog=examples("asuka convert --flux -o asuka-flux",
                        "asuka convert --flux ./FLUX.1-Fill-dev --asuka ./ASUKA-FLUX.1-Fill -o asuka-flux",
                        "asuka convert --mae mae_300.pth --aligner my_aligner.pt --decoder asuka_decoder.ckpt -o my-asuka",
                        "asuka convert --mae runs/mae/export/mae --aligner runs/align/export/aligner "
                        "--backbone ./sd15-inpainting -o my-asuka --dtype float16"))
    p.add_argument("--flux", nargs="?", const=DEFAULT_FLUX, default=None, metavar="FLUX",
                   help=f"FLUX variant: FLUX.1-Fill-dev diffusers folder or hub id (default {DEFAULT_FLUX})")
    p.add_argument("--asuka", default=DEFAULT_ASUKA, metavar="ASUKA",
                   help=f"with --flux: the ASUKA release folder or hub id (default {DEFAULT_ASUKA})")
    p.add_argument("--no-decoder", action="store_true", help="with --flux: decode with the FLUX VAE")
    p.add_argument("--mae", help="SD-1.5 variant: MAE release file (mae_300.pth) or MAEPrior folder")
    p.add_argument("--aligner", help="SD-1.5 variant: alignment module release file (.pt) or AsukaAligner folder")
    p.add_argument("--decoder", help="mask-conditioned decoder: release file (.ckpt) or folder "
                   "(optional: without it the VAE decoder is used)")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE,
                   help=f"SD-1.5 inpainting diffusers folder or hub id (default {DEFAULT_BACKBONE})")
    p.add_argument("-o", "--output", required=True, help="output pipeline folder")
    p.add_argument("--text-encoder", action="store_true",
                   help="keep the backbone's text encoder(s) and tokenizer(s) (the text-prompt baseline)")
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
    if args.flux is not None:
        return _run_flux(args, out)
    if args.mae is None or args.aligner is None:
        raise InputError("give --flux (the official FLUX release) or --mae and --aligner (the SD-1.5 variant)")
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


def _run_flux(args, out) -> int:
    from asuka.errors import InputError

    for flag in ("mae", "aligner", "decoder"):
        if getattr(args, flag) is not None:
            raise InputError(f"--{flag} is for the SD-1.5 variant; with --flux the files come from --asuka")

    from asuka.pipeline_base import resolve_dtype
    from asuka.pipeline_flux import AsukaFluxFillPipeline

    dtype = resolve_dtype(args.dtype)
    print(f"asuka: loading FLUX.1-Fill {args.flux} and the ASUKA release {args.asuka}", file=sys.stderr)
    pipe = AsukaFluxFillPipeline.from_official(flux=args.flux, asuka=args.asuka, torch_dtype=dtype,
                                               decoder=not args.no_decoder, text_encoder=args.text_encoder)
    pipe.save_pretrained(out, safe_serialization=True)
    parts = ", ".join(name for name in ("mae", "clip_aligner", "t5_aligner", "transformer", "vae", "decoder",
                                        "text_encoder", "text_encoder_2") if getattr(pipe, name, None) is not None)
    print(f"wrote {out} ({parts}; {str(dtype).removeprefix('torch.')})")
    return 0
