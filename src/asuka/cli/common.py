"""Options and helpers shared by the ``asuka`` sub-commands (standard library only).

* :func:`add_model_options` -- ``--model`` / ``--device`` / ``--dtype``, the model defaulting
  to the shipped one (:mod:`asuka.registry`);
* :func:`add_threads_option` -- ``--threads N`` (:mod:`asuka.threads`); :func:`asuka.cli.main`
  applies it before the command runs;
* :func:`resolve_model` -- ``--model`` as given or the shipped default (announced on stderr);
* :class:`HelpFormatter` / :class:`ExamplesFormatter` -- an ``examples:`` epilog kept as written
  (and defaults shown).
"""

from __future__ import annotations

import argparse
import sys

from asuka.threads import add_threads_option  # noqa: F401  (re-exported: one definition)

DEFAULT_NOTE = ("asuka: no --model given: using the small demonstration model 'asuka-small' (trained "
                "here at 128 px on 30 photos, blurry fills); for full-size ASUKA weights pass "
                "--model FOLDER-or-HUB-ID (`asuka convert` makes a folder from the release files)")


class ExamplesFormatter(argparse.HelpFormatter):
    """Keeps an epilog that starts with ``examples:`` line by line (commands must not be re-wrapped)."""

    def _fill_text(self, text, width, indent):
        if text.startswith("examples:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


class HelpFormatter(ExamplesFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """:class:`ExamplesFormatter` that also shows defaults, except the uninformative ``None`` /
    ``False`` ones."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def examples(*lines: str) -> str:
    """An epilog of example command lines (for :class:`HelpFormatter`)."""
    return "examples:\n" + "".join(f"  {line}\n" for line in lines)


def resolve_model(model: str | None) -> str:
    """``--model`` resolved by :func:`asuka.registry.resolve_model`; without one, the shipped
    default model, announced on stderr."""
    from asuka.registry import resolve_model as resolve

    resolved = resolve(model)
    if model is None:
        print(DEFAULT_NOTE, file=sys.stderr)
    return resolved


def add_model_options(p: argparse.ArgumentParser, *, device_default: str = "auto") -> None:
    """``--model``, ``--device``, ``--dtype``: shared by every command that loads a pipeline."""
    p.add_argument("--model", help="pipeline folder, hub id or shipped model name; default: the "
                   "shipped demonstration model asuka-small")
    p.add_argument("--device", default=device_default, help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--dtype", default="auto",
                   help="auto (on CUDA: float16 for SD-1.5, bfloat16 for FLUX; else float32), float32, float16, bfloat16")
    add_threads_option(p)


def add_crop_options(p: argparse.ArgumentParser) -> None:
    """``--crop-margin`` / ``--full-image``: shared by ``asuka inpaint`` and ``asuka run-benchmark``."""
    p.add_argument("--crop-margin", type=int, default=64,
                   help="crop mode: context margin in pixels around the hole's bounding box")
    p.add_argument("--full-image", action="store_true", help="process the whole image at its own size (no crop)")


def crop_margin(args) -> int | None:
    """The pipeline's ``padding_mask_crop`` for the crop options (None = whole image)."""
    from asuka.errors import InputError

    if args.crop_margin < 0:
        raise InputError(f"--crop-margin must be >= 0, got {args.crop_margin}")
    return None if args.full_image else args.crop_margin


def add_blend_options(p: argparse.ArgumentParser) -> None:
    """``--poisson-blend [FADE]`` / ``--no-poisson-blend`` (-> ``args.poisson_blend``: None, True,
    False or a fade): shared by ``asuka inpaint`` and ``asuka run-benchmark``."""
    blend = p.add_mutually_exclusive_group()
    blend.add_argument("--poisson-blend", nargs="?", const=True, default=None, type=fade_width, metavar="FADE",
                       help="re-solve the hole in the gradient domain so it meets its surroundings (not in the "
                            "paper; asuka.seams), the fill's gradients fading in over FADE working pixels, "
                            "where the hole continues the surroundings' edges "
                            "(default: the model's -- its folder's default_poisson_blend, off when it has none; "
                            "without FADE: the folder's fade, else 0)")
    blend.add_argument("--no-poisson-blend", dest="poisson_blend", action="store_const", const=False,
                       help="no seam blending, whatever the model's default (the paper's method)")


def fade_width(text: str) -> float:
    """``--poisson-blend FADE``: a number >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"FADE must be a number >= 0 (working pixels), got {text!r}")
    return value


def add_watermark_option(p: argparse.ArgumentParser) -> None:
    """``--watermark``: shared by the commands that write images (see :mod:`asuka.provenance`)."""
    p.add_argument("--watermark", action="store_true",
                   help="hide an invisible 'synthetic' watermark in the output (invisible-watermark, "
                   "DWT-DCT-SVD; survives JPEG re-encoding). It changes every pixel by a few levels, the "
                   "known ones too, so it is off by default")


WATERMARK_NOTE = ("asuka: --watermark: the output carries an invisible watermark; it changes every pixel "
                  "slightly, so the known pixels are no longer exactly the input's")
