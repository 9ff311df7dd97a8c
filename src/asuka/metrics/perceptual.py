"""LPIPS (AlexNet) through the ``lpips`` package, with the backbone loaded from a local file.

The ``lpips`` wheel ships only its small linear heads; the AlexNet backbone normally comes
from torchvision's download cache. Nothing is downloaded here: the ImageNet AlexNet weights
are read from the torch hub cache (``$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth``)
or from an explicit path, and a clear error says where to put them when they are absent.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from asuka.errors import InputError
from asuka.metrics.composite import composite

LPIPS_MIN_SIZE = 32


def hub_checkpoint_path(url: str) -> Path:
    """Where ``torch.hub``/torchvision keep a downloaded checkpoint for ``url``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def load_lpips(*, device: str | torch.device = "cpu", random_backbone: bool = False,
               backbone_path: str | os.PathLike | None = None) -> torch.nn.Module:
    """LPIPS v0.1 with the AlexNet backbone (the paper's setting), in eval mode on ``device``.

    backbone_path: torchvision's AlexNet ImageNet state dict; default: the torch hub cache.
    random_backbone: build a randomly initialised backbone instead (``lpips``' ``pnet_rand``)
        -- for offline tests only: the numbers mean nothing.
    Call the result as ``model(a, b)`` with ``(B,3,H,W)`` images in [-1, 1] -> ``(B,1,1,1)``.
    """
    import lpips
    from torchvision.models import AlexNet_Weights

    from asuka.models._checks import check_state_dict, read_checkpoint

    with warnings.catch_warnings():  # lpips still calls torchvision with the old `pretrained=`
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        # pnet_rand=True keeps lpips from asking torchvision to download the backbone; the
        # linear heads still come from the lpips wheel. Real backbone weights are copied in below.
        model = lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False)
    if not random_backbone:
        url = AlexNet_Weights.IMAGENET1K_V1.url
        path = Path(backbone_path) if backbone_path is not None else hub_checkpoint_path(url)
        if not path.is_file():
            raise InputError(
                f"LPIPS needs torchvision's ImageNet AlexNet weights, not found at {path}. "
                f"Download {url} and put it there (or set TORCH_HOME), or pass its path; "
                "--no-lpips skips LPIPS"
            )
        # lpips splits alexnet.features into slices that keep the original child indices:
        # torchvision key features.<i>.<param> is lpips key slice<k>.<i>.<param>
        target = {}
        for k in range(1, 6):
            for name, tensor in getattr(model.net, f"slice{k}").state_dict().items():
                target["features." + name] = (f"slice{k}." + name, tensor)
        state = read_checkpoint(str(path), what="AlexNet")
        check_state_dict({key: t for key, (_, t) in target.items()}, state,
                         what=f"AlexNet backbone for LPIPS ({path})", ignore_unexpected=("classifier.",))
        model.net.load_state_dict({target[key][0]: state[key] for key in target}, strict=True)
    return model.eval().to(device)


@torch.no_grad()
def lpips_distance(model: torch.nn.Module, pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """LPIPS between the composite and ``gt``: ``(B,)`` float32 on the images' device.

    pred, gt: ``(B,3,H,W)`` in [-1, 1], at least 32x32 (AlexNet's two pooling stages);
    mask: ``(B,1,H,W)``, 1 = hole; model from :func:`load_lpips`.
    """
    if min(gt.shape[-2:]) < LPIPS_MIN_SIZE:
        raise InputError(f"LPIPS (AlexNet) needs images of at least {LPIPS_MIN_SIZE}x{LPIPS_MIN_SIZE} pixels, "
                         f"got {gt.shape[-1]}x{gt.shape[-2]}; --no-lpips skips it")
    return model(composite(pred, gt, mask), gt).flatten()
