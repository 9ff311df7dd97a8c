"""``asuka serve``: inpaint in the browser.

    asuka serve [--model MODEL] [--host 127.0.0.1] [--port 7860] [--device auto] [--dtype auto] [--steps N]

Loads the model once, then serves a page (open the printed URL) where you upload or drop an
image, paint the hole, and inpaint; and an API for scripts (``POST /api/inpaint``, jobs under
``/api/jobs``, OpenAPI docs at ``/docs``; see :mod:`asuka.web.server`). Binds to 127.0.0.1 by
default; beyond loopback every API request needs a bearer token (``--token``, or a random
one printed at start).
"""

from __future__ import annotations

import secrets
import sys

from asuka.cli.common import HelpFormatter, add_model_options, add_watermark_option, examples

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="inpaint in the browser: a local web page (and API) on a loaded model",
        description="Serve a web page to upload an image, paint the hole and inpaint it, plus "
        "POST /api/inpaint and /api/jobs for scripts (docs at /docs). The model is loaded once; "
        "jobs run one at a time.",
        formatter_class=HelpFormatter,
        epilog=examples("asuka serve --open", "asuka serve --model my-asuka --device cuda --port 8000",
                        "asuka serve --watermark --threads 2"))
    add_model_options(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (0.0.0.0: every interface; then a token is required)")
    p.add_argument("--port", type=int, default=7860, help="port (0: any free port)")
    p.add_argument("--steps", type=int, default=None,
                   help="default denoising steps, the page can change them (default: the model's default_steps, else 50)")
    p.add_argument("--max-steps", type=int, default=500, help="most steps a request may ask for")
    p.add_argument("--max-upload-mb", type=float, default=64.0, help="largest request body accepted, MiB")
    p.add_argument("--max-megapixels", type=float, default=50.0,
                   help="largest image accepted, megapixels (read from the file header, before decoding)")
    p.add_argument("--max-work-megapixels", type=float, default=8.0,
                   help="largest region the model works on (crop around the hole, or --full-image runs)")
    p.add_argument("--crop-margin", type=int, default=64,
                   help="crop mode: context margin in pixels around the hole's bounding box")
    p.add_argument("--max-queue", type=int, default=4, help="jobs that may wait; more are answered 503")
    p.add_argument("--result-ttl", type=float, default=600.0, help="seconds a finished result is kept")
    p.add_argument("--upload-timeout", type=float, default=30.0,
                   help="seconds an upload may stall (nothing arrives) before it is answered 408")
    p.add_argument("--upload-deadline", type=float, default=300.0,
                   help="seconds a whole request body may take, however steadily it trickles in; then 408 "
                   "(the default passes 64 MiB at ~220 KiB/s)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="another host name the server answers to (repeatable; '*' for any); loopback "
                   "names and --host are always allowed")
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN' on the API (default: none on "
                   "loopback; a random token, printed, when --host is beyond loopback)")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    p.add_argument("--quiet", action="store_true", help="do not log requests")
    add_watermark_option(p)
    p.set_defaults(func=run, sets_threads=True, ends_startup=True)  # the app sets the threads before each job


def start(args):
    """Check the options, bind the port, load the model: an :class:`~asuka.web.InpaintServer`
    ready for ``serve_forever()``. The port is bound first so a busy port fails before the
    (slow) model load."""
    from asuka.cli.common import WATERMARK_NOTE, resolve_model
    from asuka.errors import InputError

    if not 0 <= args.port <= 65535:
        raise InputError(f"--port must be in [0, 65535], got {args.port}")
    if args.steps is not None and (args.steps < 1 or args.max_steps < args.steps):
        raise InputError(f"--steps must be in [1, --max-steps={args.max_steps}], got {args.steps}")
    for flag in ("max_upload_mb", "max_megapixels", "max_work_megapixels", "result_ttl", "upload_timeout",
                 "upload_deadline"):
        if not getattr(args, flag) > 0:
            raise InputError(f"--{flag.replace('_', '-')} must be > 0, got {getattr(args, flag)}")
    if args.crop_margin < 0:
        raise InputError(f"--crop-margin must be >= 0, got {args.crop_margin}")
    if args.max_queue < 0:
        raise InputError(f"--max-queue must be >= 0, got {args.max_queue}")
    if args.token is not None and len(args.token) < 8:
        raise InputError("--token must have at least 8 characters")
    if args.token is None and args.host not in _LOOPBACK:
        args.token = secrets.token_urlsafe(24)  # beyond loopback the API is never open
    args.model = resolve_model(args.model)

    from asuka.web import InpaintApp, make_server

    server = make_server(None, args.host, args.port, quiet=args.quiet, allowed_hosts=args.allowed_host,
                         token=args.token)
    try:
        from asuka.pipeline import load_pipeline

        print(f"asuka: loading {args.model} ...", file=sys.stderr, flush=True)
        pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype)
        pipe.set_progress_bar_config(disable=True)
        from asuka.cli import startup

        startup.release()  # imports and model load done: the collector resumes (asuka.cli.startup)
        if args.watermark:
            from asuka.provenance import require_watermark

            require_watermark()
            print(WATERMARK_NOTE, file=sys.stderr)
        server.app = InpaintApp(
            pipe, model_name=str(args.model), default_steps=args.steps, max_steps=args.max_steps,
            max_upload_bytes=int(args.max_upload_mb * 2**20), max_pixels=int(args.max_megapixels * 1e6),
            max_work_pixels=int(args.max_work_megapixels * 1e6), crop_margin=args.crop_margin,
            max_queue=args.max_queue, result_ttl=args.result_ttl, upload_timeout=args.upload_timeout,
            upload_deadline=args.upload_deadline, watermark=args.watermark, threads=args.threads)
    except BaseException:
        server.server_close()
        raise
    return server


def page_url(server, token: str | None) -> str:
    """The URL to open: with ``#token=...`` when a token is required (the fragment never
    leaves the browser; the page sends it as a bearer token)."""
    return server.url + (f"#token={token}" if token else "")


def run(args) -> int:
    server = start(args)
    url = page_url(server, args.token)
    if args.host not in _LOOPBACK:
        print(f"asuka: listening on {args.host}: every API request needs 'Authorization: Bearer "
              f"{args.token}'; add --allowed-host NAME for each name clients use to reach this machine",
              file=sys.stderr)
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
