"""A module imported on first attribute access, so that importing a light module of this
package (``asuka.io`` for reading a file, the CLI for ``--help``) does not import torch."""

from __future__ import annotations

import importlib


class LazyModule:
    """Stands for module ``name``; the first attribute access imports it (then it is a dict lookup)."""

    def __init__(self, name: str):
        self._name = name
        self._module = None

    def __getattr__(self, attr: str):
        if attr.startswith("_"):
            raise AttributeError(attr)
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}{' (imported)' if self._module is not None else ''}>"
