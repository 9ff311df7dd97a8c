"""Key- and shape-checked loading of foreign state dicts (official release, old checkpoints)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from asuka.errors import CheckpointError


def _preview(keys, limit: int = 8) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_state_dict(
    expected: Mapping[str, torch.Tensor],
    given: Mapping[str, torch.Tensor],
    *,
    what: str,
    ignore_unexpected: tuple[str, ...] = (),
) -> None:
    """Raise :class:`CheckpointError` unless ``given`` has exactly ``expected``'s keys and shapes.

    ``ignore_unexpected`` lists key prefixes that may be present in ``given`` and are dropped
    (e.g. release sub-modules that exist in the file but are never used in forward).
    The message names the missing, unexpected and mis-shaped keys.
    """
    exp, got = set(expected), {k for k in given if not k.startswith(ignore_unexpected)}
    missing, unexpected = exp - got, got - exp
    wrong = [
        f"{k}: checkpoint {tuple(given[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(exp & got)
        if tuple(given[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_preview(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_preview(unexpected)}")
    if wrong:
        problems.append("shape mismatch: " + "; ".join(wrong[:8]) + (" ..." if len(wrong) > 8 else ""))
    if problems:
        raise CheckpointError(f"{what}: state dict does not match the model ({' | '.join(problems)})")


def load_checked(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], *, what: str,
                 ignore_unexpected: tuple[str, ...] = ()) -> torch.nn.Module:
    """Check every key and shape of ``state_dict`` against ``module``, then load it strictly."""
    expected = module.state_dict()
    check_state_dict(expected, state_dict, what=what, ignore_unexpected=ignore_unexpected)
    module.load_state_dict({k: v for k, v in state_dict.items() if k in expected}, strict=True)
    return module


def read_checkpoint(path_or_state, *, what: str) -> dict:
    """Read a ``.pth``/``.pt``/``.ckpt``/``.bin`` (torch pickle, weights only) or ``.safetensors``
    file, or pass a mapping through. Raises :class:`CheckpointError` with the path on failure."""
    if isinstance(path_or_state, Mapping):
        return dict(path_or_state)
    path = str(path_or_state)
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{what}: file not found: {path}") from None
    except Exception as exc:  # corrupt file, pickle with code objects, ...
        raise CheckpointError(f"{what}: cannot read {path}: {exc}") from None
