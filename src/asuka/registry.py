"""Models shipped inside the package, by name, and the one place a model argument is resolved.

``asuka.load_pipeline()``, ``AsukaInpaintPipeline.from_pretrained(...)`` and every CLI command
that takes ``--model`` resolve their model argument here (:func:`resolve_model`):

* ``None`` -> the default shipped model (:data:`DEFAULT_MODEL`);
* an existing path -> that folder (a local folder always wins over a shipped name);
* a shipped name (``"asuka-small"``) -> its folder inside the installed package, so it works
  from any working directory;
* anything else -> returned unchanged (a hub id, or a path that the loader reports as missing).

Standard library only: the CLI resolves names before it imports torch.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The model used when none is given.
DEFAULT_MODEL = "asuka-small"
#: name -> folder relative to the package root; the folders are package data (pyproject.toml).
SHIPPED = {"asuka-small": "pretrained/asuka-small"}


def package_root() -> Path:
    """The folder of the installed ``asuka`` package (not the current directory)."""
    return Path(__file__).resolve().parent


def shipped_model_dir(name: str = DEFAULT_MODEL) -> Path:
    """The pipeline folder of a shipped model (it may be absent from a trimmed install)."""
    from asuka.errors import InputError

    if name not in SHIPPED:
        raise InputError(f"unknown shipped model {name!r}; shipped: {', '.join(SHIPPED)}")
    return package_root() / SHIPPED[name]


def is_shipped_name(model) -> bool:
    """True for a shipped model's name that does not also name an existing path."""
    return isinstance(model, str) and model in SHIPPED and not os.path.exists(model)


def resolve_model(model: str | os.PathLike | None = None) -> str:
    """The folder or hub id to load for ``model`` (see the module docstring).

    Raises :class:`~asuka.errors.InputError` when a shipped model is asked for (by name or
    by default) but its folder is not installed.
    """
    from asuka.errors import InputError

    if model is not None and not is_shipped_name(str(model)):
        return os.fspath(model)
    name = DEFAULT_MODEL if model is None else str(model)
    folder = shipped_model_dir(name)
    if not (folder / "model_index.json").is_file():
        raise InputError(f"the shipped model {name!r} is not installed (no {folder / 'model_index.json'}); "
                         "pass a pipeline folder or hub id (make one with `asuka convert` or "
                         "AsukaInpaintPipeline.save_pretrained)")
    return str(folder)


def model_label(model: str | os.PathLike) -> str:
    """A short, machine-independent name for provenance records: the shipped model's name for
    its folder, else the argument as given (a hub id or a folder)."""
    text = os.fspath(model)
    for name in SHIPPED:
        try:
            if os.path.samefile(text, shipped_model_dir(name)):
                return name
        except OSError:
            continue
    return text
