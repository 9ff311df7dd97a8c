"""``asuka inpaint``: fill the holes of one image, or of a folder of images.

    asuka inpaint IMAGE MASK -o OUT.png [--model MODEL]
    asuka inpaint --images DIR --masks DIR -o OUT_DIR [--model MODEL]

Without ``--model`` the small demonstration model shipped in the package is used
(``asuka/pretrained/asuka-small``, see its MODEL_CARD.md); full-size weights: ``--model``
with a pipeline folder or hub id (``asuka convert`` makes one from the release files).

Masks: white (or opaque, for a single-colour mask with transparency) = hole; see
:mod:`asuka.io` for the exact rule. Outputs have the input's size; their format follows the
extension (png, jpg, webp). Images are processed in crop mode by default (as the pipeline): a
region of at least the model's working resolution (512 for SD-1.5) around the hole, so a small
hole in a big photo costs about what a 512x512 image costs; ``--full-image`` runs on the whole
image instead. ``--model`` takes either variant's folder (SD-1.5 or FLUX).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from asuka.cli.common import (  # noqa: F401  (HelpFormatter, add_model_options, resolve_model: used by serve)
    WATERMARK_NOTE, HelpFormatter, add_blend_options, add_crop_options, add_model_options, add_watermark_option,
    crop_margin, examples, resolve_model)

EPILOG = examples(
    "asuka inpaint examples/astronaut.png examples/astronaut_mask.png -o filled.png",
    "asuka inpaint photo.jpg mask.png -o out.jpg --steps 25 --seed 1 --watermark",
    "asuka inpaint --images photos/ --masks masks/ -o out/ --ext .webp",
    "asuka inpaint photo.jpg mask.png -o out.png --model my-asuka --device cuda",
)


def default_model() -> Path:
    """The pipeline folder of the shipped default model (:mod:`asuka.registry`)."""
    from asuka.registry import shipped_model_dir

    return shipped_model_dir()


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "inpaint", help="inpaint an image (or a folder of images) where the mask is white",
        description="Inpaint IMAGE where MASK is white (1 = hole) and write OUT, or every image of "
        "--images with the mask of the same file stem in --masks into the folder OUT.",
        formatter_class=HelpFormatter, epilog=EPILOG)
    p.add_argument("image", nargs="?", help="input image (any format PIL reads)")
    p.add_argument("mask", nargs="?", help="mask image: white = hole (grayscale, RGB or alpha)")
    p.add_argument("--images", metavar="DIR", help="folder of input images (instead of IMAGE)")
    p.add_argument("--masks", metavar="DIR", help="folder of masks, matched to --images by file stem")
    p.add_argument("-o", "--output", required=True,
                   help="output file (.png, .jpg, .webp) or, with --images, output folder")
    p.add_argument("--ext", default=".png", help="output extension in folder mode")
    p.add_argument("--overwrite", action="store_true", help="redo outputs that already exist (folder mode)")
    add_model_options(p)
    p.add_argument("--steps", type=int, default=None,
                   help="denoising steps (default: the model's own default_steps, else 50)")
    p.add_argument("--seed", type=int, default=42, help="seed of each image's noise")
    p.add_argument("--no-composite", action="store_true",
                   help="keep the model's output everywhere (default: paste the known pixels back)")
    p.add_argument("--feather", type=float, default=0.0, help="soft seam width in pixels outside the hole")
    add_blend_options(p)
    p.add_argument("--resize-mask", action="store_true",
                   help="resize a mask of another size to the image's (nearest) instead of failing")
    add_crop_options(p)
    p.add_argument("--resolution", type=int, default=None,
                   help="crop mode working resolution (default: the model's -- its folder's default_resolution, "
                        "else its training size: 512 for SD-1.5, 1024 for FLUX)")
    p.add_argument("--condition", choices=("prior", "null", "text"), default=None,
                   help="prior: ASUKA; null: the SD baseline (empty condition); text: SD with --prompt")
    p.add_argument("--condition-weight", type=float, default=None,
                   help="null + w * (prior - null) (default: the model's, 1 for SD-1.5, 0.5 for FLUX)")
    p.add_argument("--prompt", default=None, help="text prompt (needs a model saved with a text encoder)")
    p.add_argument("--guidance-scale", type=float, default=None,
                   help="SD-1.5: classifier-free guidance (default 1 = none); FLUX: distilled guidance (default 30)")
    p.add_argument("--decoder", choices=("asuka", "vae"), default=None,
                   help="decoder (default: ASUKA's when the model has one, else the VAE's)")
    add_watermark_option(p)
    p.set_defaults(func=run, sets_threads=True, ends_startup=True)


def _jobs(args) -> list[tuple[Path, Path, Path]]:
    """(image, mask, output) triples, checked before any model is loaded."""
    from asuka import io
    from asuka.errors import InputError

    single = args.image is not None or args.mask is not None
    folder = args.images is not None or args.masks is not None
    if single and folder:
        raise InputError("give either IMAGE MASK or --images DIR --masks DIR, not both")
    if single:
        if args.image is None or args.mask is None:
            raise InputError("give both IMAGE and MASK (or --images DIR --masks DIR)")
        image, mask, out = Path(args.image), Path(args.mask), Path(args.output)
        if out.is_dir():
            raise InputError(f"output {out} is a directory; give a file name such as {out / (image.stem + '.png')}")
        io.check_output_path(out, [image, mask])
        return [(image, mask, out)]
    if not folder:
        raise InputError("nothing to inpaint: give IMAGE MASK or --images DIR --masks DIR")
    if args.images is None or args.masks is None:
        raise InputError("folder mode needs both --images DIR and --masks DIR")
    ext = args.ext if args.ext.startswith(".") else "." + args.ext
    io.output_format("x" + ext)
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"with --images, -o must be a folder; {out_dir} is a file")
    jobs = []
    for stem, (image, mask) in io.pair_by_stem(args.images, args.masks).items():
        out = out_dir / (stem + ext)
        io.check_output_path(out, [image, mask])
        jobs.append((image, mask, out))
    return jobs


def _read_pair(image_path: Path, mask_path: Path, resize_mask: bool):
    from asuka import io

    image = io.load_image(image_path)
    mask = io.fit_mask(io.load_mask(mask_path), image.size, resize=resize_mask,
                       what=f"mask {mask_path}")
    return image, mask


def run(args) -> int:
    from asuka.errors import InputError

    jobs = _jobs(args)
    args.model = resolve_model(args.model)
    if args.steps is not None and args.steps < 1:
        raise InputError(f"--steps must be >= 1, got {args.steps}")
    margin = crop_margin(args)
    folder_mode = args.images is not None
    todo = [job for job in jobs if args.overwrite or not folder_mode or not job[2].exists()]
    if folder_mode and len(todo) < len(jobs):
        print(f"asuka: skipping {len(jobs) - len(todo)} existing output(s) (use --overwrite to redo them)",
              file=sys.stderr)
    if not todo:
        return 0
    # In single mode, read the inputs before the (slow) model load so bad input fails fast.
    first = _read_pair(todo[0][0], todo[0][1], args.resize_mask) if not folder_mode else None

    import torch
    from tqdm.auto import tqdm

    from asuka import io, provenance
    from asuka.cli import startup
    from asuka.threads import set_threads
    from asuka.pipeline import load_pipeline
    from asuka.pipeline_base import blend_record

    if args.watermark:
        provenance.require_watermark()  # before the model load: a missing package fails fast
        print(WATERMARK_NOTE, file=sys.stderr)
    set_threads(args.threads)
    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype)
    pipe.set_progress_bar_config(disable=folder_mode)
    startup.release()  # imports and model load done: the collector resumes (asuka.cli.startup)
    if args.steps is None:
        args.steps = pipe.default_num_inference_steps
    options = dict(
        num_inference_steps=args.steps, condition=args.condition, prompt=args.prompt, decoder=args.decoder,
        composite=not args.no_composite, feather=args.feather, full_image=args.full_image,
        padding_mask_crop=args.crop_margin, resolution=args.resolution, poisson_blend=args.poisson_blend,
    )
    # unset: the pipeline's own defaults (they differ between the SD-1.5 and FLUX variants)
    options.update({k: v for k, v in (("condition_weight", args.condition_weight),
                                      ("guidance_scale", args.guidance_scale)) if v is not None})
    weight = pipe.default_condition_weight if args.condition_weight is None else args.condition_weight
    guidance = pipe.default_guidance_scale if args.guidance_scale is None else args.guidance_scale
    recipe = provenance.recipe(
        pipe, args.model, steps=args.steps, seed=args.seed, decoder=args.decoder,
        condition=args.condition or ("text" if args.prompt is not None else "prior"),
        watermark=args.watermark, condition_weight=weight, guidance_scale=guidance, prompt=args.prompt,
        crop_margin=margin, composite=not args.no_composite, feather=args.feather or None,
        poisson_blend=blend_record(pipe.seam_fade(args.poisson_blend)),
        resolution=None if args.full_image else (args.resolution or pipe.working_resolution))

    failed = 0
    for image_path, mask_path, out_path in tqdm(todo, desc="inpainting", unit="image", disable=not folder_mode):
        try:
            image, mask = first if first is not None else _read_pair(image_path, mask_path, args.resize_mask)
            first = None
            if not mask.any():
                print(f"asuka: {mask_path} is empty: writing {image_path} unchanged", file=sys.stderr)
            # One generator per image: an image's result does not depend on which others ran.
            generator = torch.Generator().manual_seed(args.seed)
            result = pipe(image, mask, generator=generator, output_type="pil", **options).images[0]
            if args.watermark:
                result = provenance.add_watermark(result)
            io.save_image(result, out_path, recipe=recipe)
        except InputError as exc:
            if not folder_mode:
                raise
            failed += 1
            tqdm.write(f"asuka: error: {image_path.name}: {exc}", file=sys.stderr)
    if failed:
        print(f"asuka: error: {failed} of {len(todo)} image(s) failed", file=sys.stderr)
        return 1
    if not folder_mode:
        print(f"wrote {todo[0][2]}")
    return 0
