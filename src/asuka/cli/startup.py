"""Python's cyclic garbage collector around the start-up and the exit of an ``asuka`` process.

Importing torch and diffusers makes about 360,000 objects that live as long as the process
(modules, classes, functions, torch's operator tables). None of them is garbage, but the
collector does not know that: while they are being made, its full collections traverse all of
them again and again (6 full collections, 0.7 s of CPU time in an ``asuka inpaint`` of 5 s,
measured with ``gc.callbacks``), and when the process ends, the interpreter's final
collections traverse them once more (about 1 s) just before the memory is handed back anyway.

So the process entry point (:func:`asuka.cli.console`, i.e. the ``asuka`` command and
``python -m asuka``):

* :func:`hold` -- pauses automatic collection before the command starts;
* :func:`release` -- called by a command once its imports and model load are done (``inpaint``,
  ``serve``) and, for every other command, by :func:`asuka.cli.main` before the command runs:
  moves the objects made so far to the permanent generation (``gc.freeze()``: later
  collections skip them) and resumes automatic collection, so the work itself (denoising,
  serving, training) runs with the collector on, as it always did;
* :func:`at_exit` -- freezes everything still alive once the command has returned, so the
  final collections have nothing to traverse (``atexit`` handlers, module clean-up and buffered
  output still run as usual).

:func:`asuka.cli.main` called in-process (tests, scripts) never holds the collector, so
:func:`release` is then a no-op and the calling process's collector is left alone.
"""

from __future__ import annotations

import gc

_held = False


def hold() -> None:
    """Pause automatic collection until :func:`release` (when it is on)."""
    global _held
    if gc.isenabled():
        gc.disable()
        _held = True


def release() -> None:
    """End of start-up: freeze the objects made so far and resume collection (when :func:`hold`
    paused it; otherwise nothing)."""
    global _held
    if _held:
        gc.freeze()
        gc.enable()
        _held = False


def at_exit() -> None:
    """The command has returned and the process is about to end: make sure collection is on
    again and keep the final collections from traversing what is alive now."""
    release()
    gc.freeze()
