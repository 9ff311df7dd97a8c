"""The ``asuka`` command.

Each sub-command lives in its own module under :mod:`asuka.cli` and defines

* ``register(subparsers)`` -- adds its parser (the module imports only the standard library at
  import time, so ``asuka --help`` stays fast), and sets ``func=run`` on it;
* ``run(args) -> int`` -- does the work; heavy imports happen here.

The process entry point is :func:`console` (the ``asuka`` script, ``python -m asuka``): it is
:func:`main` plus the garbage-collector handling of :mod:`asuka.cli.startup`. Call :func:`main`
in-process.

Errors derived from :class:`asuka.errors.AsukaError` (and missing files) are printed as one
line ``asuka: error: ...`` with exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Order is the order shown in ``asuka --help``.
_COMMAND_MODULES = (
    "asuka.cli.inpaint",
    "asuka.cli.serve",
    "asuka.cli.convert",
    "asuka.cli.info",
    "asuka.cli.masks",
    "asuka.cli.evaluate",
    "asuka.cli.benchmark",
    "asuka.cli.train",
)


def build_parser() -> argparse.ArgumentParser:
    from asuka import __version__

    parser = argparse.ArgumentParser(
        prog="asuka",
        description="ASUKA inpainting: inpaint images, convert official weights, build and run "
        "benchmarks, evaluate, and train every stage.",
    )
    parser.add_argument("--version", action="version", version=f"asuka {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # command not part of this build
                continue
            raise
        module.register(sub)
    return parser


#: Packages of the optional extras (pyproject.toml) -> the extra that installs them.
_EXTRAS = {"transformers": "text", "torchvision": "train,eval", "lpips": "train,eval", "open_clip": "clip", "webdataset": "webdataset",
           "braceexpand": "webdataset", "scipy": "eval", "skimage": "eval", "sklearn": "eval", "pywt": "watermark", "imwatermark": "watermark"}


def main(argv: list[str] | None = None) -> int:
    from asuka import threads
    from asuka.cli import startup
    from asuka.errors import AsukaError

    threads.mark()  # the window over which --threads' default measures the machine's load
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        if not getattr(args, "ends_startup", False):  # inpaint and serve release after their model load
            startup.release()
        # Every command that runs torch has --threads; inpaint and serve apply it themselves,
        # after checking their inputs (bad input fails before torch is imported).
        if hasattr(args, "threads") and not getattr(args, "sets_threads", False):
            threads.set_threads(args.threads)
        return int(args.func(args) or 0)
    except (AsukaError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        print(f"asuka: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top not in _EXTRAS:
            raise
        print(f"asuka: error: `asuka {args.command}` needs the package {top}, which is not installed: "
              f"pip install 'asuka[{_EXTRAS[top]}]' (see README, Install)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("asuka: interrupted", file=sys.stderr)
        return 130
    finally:
        startup.release()  # an error before a command's own release() must not leave the collector off


def console(argv: list[str] | None = None) -> int:
    """The ``asuka`` command as a process: :func:`main` with Python's garbage collector paused
    during start-up and its final collections skipped at exit (:mod:`asuka.cli.startup`:
    together about 1.7 s of a 5 s ``asuka inpaint``). The process ends after this returns."""
    from asuka.cli import startup

    startup.hold()
    try:
        return main(argv)
    finally:
        startup.at_exit()


if __name__ == "__main__":  # python -m asuka.cli
    sys.exit(console())
