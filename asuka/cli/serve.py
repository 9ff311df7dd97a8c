"""``asuka serve``: inpaint in the browser.

    asuka serve [--model MODEL] [--host 127.0.0.1] [--port 7860] [--device auto] [--dtype auto] [--steps 50]

Loads the model once, then serves a page (open the printed URL) where you upload or drop an
image, paint the hole, and inpaint; and a small API for scripts (``POST /api/inpaint``, see
:mod:`asuka.web.server`). Binds to 127.0.0.1 by default: the server has no authentication,
so give ``--host 0.0.0.0`` only on a network you trust.
"""

from __future__ import annotations

import sys

from asuka.cli.common import HelpFormatter, add_model_options, add_watermark_option, examples

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="inpaint in the browser: a local web page (and API) on a loaded model",
        description="Serve a web page to upload an image, paint the hole and inpaint it, plus "
        "POST /api/inpaint for scripts. The model is loaded once; requests run one at a time.",
        formatter_class=HelpFormatter,
        epilog=examples("asuka serve --open", "asuka serve --model my-asuka --device cuda --port 8000",
                        "asuka serve --watermark --threads 2"))
    add_model_options(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (0.0.0.0: every interface -- no authentication!)")
    p.add_argument("--port", type=int, default=7860, help="port (0: any free port)")
    p.add_argument("--steps", type=int, default=50, help="default denoising steps (the page can change them)")
    p.add_argument("--max-steps", type=int, default=500, help="most steps a request may ask for")
    p.add_argument("--max-upload-mb", type=float, default=50.0, help="largest request body accepted, MiB")
    p.add_argument("--crop-margin", type=int, default=64,
                   help="crop mode: context margin in pixels around the hole's bounding box")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    p.add_argument("--quiet", action="store_true", help="do not log requests")
    add_watermark_option(p)
    p.set_defaults(func=run, sets_threads=True)


def start(args):
    """Check the options, bind the port, load the model: an :class:`~asuka.web.InpaintServer`
    ready for ``serve_forever()``. The port is bound first so a busy port fails before the
    (slow) model load."""
    from asuka.errors import InputError

    from asuka.cli.common import WATERMARK_NOTE, resolve_model

    args.model = resolve_model(args.model)
    if not 0 <= args.port <= 65535:
        raise InputError(f"--port must be in [0, 65535], got {args.port}")
    if args.steps < 1 or args.max_steps < args.steps:
        raise InputError(f"--steps must be in [1, --max-steps={args.max_steps}], got {args.steps}")
    if not args.max_upload_mb > 0:
        raise InputError(f"--max-upload-mb must be > 0, got {args.max_upload_mb}")
    if args.crop_margin < 0:
        raise InputError(f"--crop-margin must be >= 0, got {args.crop_margin}")

    from asuka.web import InpaintApp, make_server

    server = make_server(None, args.host, args.port, quiet=args.quiet)
    try:
        from asuka.pipeline import load_pipeline

        print(f"asuka: loading {args.model} ...", file=sys.stderr, flush=True)
        pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype)
        pipe.set_progress_bar_config(disable=True)
        if args.watermark:
            from asuka.provenance import require_watermark

            require_watermark()
            print(WATERMARK_NOTE, file=sys.stderr)
        server.app = InpaintApp(pipe, model_name=str(args.model), default_steps=args.steps,
                                max_steps=args.max_steps, max_upload_bytes=int(args.max_upload_mb * 2**20),
                                crop_margin=args.crop_margin, watermark=args.watermark, threads=args.threads)
    except BaseException:
        server.server_close()
        raise
    return server


def run(args) -> int:
    server = start(args)
    url = server.url
    if args.host not in _LOOPBACK:
        print(f"asuka: warning: listening on {args.host}: anyone who can reach this machine can use "
              "the server (it has no authentication)", file=sys.stderr)
    print(f"asuka: serving {args.model} at {url}  (Ctrl+C to stop)", flush=True)
    if args.open:
        import webbrowser

        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("asuka: stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
