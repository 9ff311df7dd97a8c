"""Exceptions raised at the public surface.

Every message names what was wrong and what is expected, with the offending values,
so the CLI can print it as one line (no traceback).
"""


class AsukaError(Exception):
    """Base class of the errors this package raises on purpose."""


class InputError(AsukaError, ValueError):
    """A user-supplied image, mask, path, option or checkpoint is not usable."""


class CheckpointError(InputError):
    """A checkpoint's keys or shapes do not match the model it is loaded into."""
