"""Numerical agreement of MAEPrior with the official release's MaskedAutoencoderViTFinetune.

Slow and opt-in: needs a copy of github.com/Yikai-Wang/asuka-misato (a checkout or a bare git
directory) named by ``ASUKA_RELEASE_REPO``, plus ``timm`` (the release imports it). The
release's MAE files are extracted into a temporary directory at test time; nothing of it is
part of this package. Run::

    ASUKA_RELEASE_REPO=/path/to/asuka-misato python -m pytest -m slow tests/test_mae_fidelity.py
"""

import importlib
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from asuka.models.mae import MAEPrior

pytestmark = pytest.mark.slow

RELEASE_FILES = ["MAE/models_mae.py", "MAE/util/misc.py", "MAE/util/pos_embed.py", "MAE/vision_transformer.py"]
TOL = 1e-4  # fp32


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """The release's ``MAE.models_mae`` module, imported from a temporary copy."""
    pytest.importorskip("timm")
    repo = os.environ.get("ASUKA_RELEASE_REPO")
    if not repo or not Path(repo).exists():
        pytest.skip("set ASUKA_RELEASE_REPO to a checkout or bare git dir of Yikai-Wang/asuka-misato")
    root = tmp_path_factory.mktemp("release")
    for name in RELEASE_FILES:
        checkout = Path(repo) / "asuka-flux" / name
        if checkout.exists():
            text = checkout.read_text()
        else:
            text = subprocess.run(["git", "-C", repo, "show", f"HEAD:asuka-flux/{name}"],
                                  check=True, capture_output=True, text=True).stdout
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    for pkg in ("MAE", "MAE/util"):
        (root / pkg / "__init__.py").touch()
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module("MAE.models_mae")
    finally:
        sys.path.remove(str(root))
        for mod in [m for m in sys.modules if m == "MAE" or m.startswith("MAE.")]:
            del sys.modules[mod]


def _release_preprocess(img, hole):
    """The release's data pipeline (datas/misato_dataset.py prepare_data), written out."""
    cv2 = pytest.importorskip("cv2")
    x = cv2.resize(img, (256, 256), interpolation=cv2.INTER_AREA) / 255.0
    x = (x - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    m = cv2.resize(hole, (256, 256), interpolation=cv2.INTER_NEAREST)
    x = torch.tensor(x).permute(2, 0, 1)
    m = torch.tensor(m)[None]
    return x.float(), m.float(), (x * (m < 0.5)).float()


def _inputs(size=512):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    img = 128 + 100 * np.sin(xx[..., None] / 37 + np.arange(3)) * np.cos(yy[..., None] / 23)
    img = (img + rng.normal(0, 10, img.shape)).clip(0, 255).astype(np.uint8)
    circle = (((xx - 0.45 * size) ** 2 + (yy - 0.55 * size) ** 2) < (0.23 * size) ** 2).astype(np.float32)
    strokes = np.zeros((size, size), np.float32)
    strokes[37:301, 100:113] = 1
    strokes[400:450, 20:500] = 1
    return img, [circle, strokes, np.zeros((size, size), np.float32)]  # partial tokens, thin, no hole


SIZES = {
    # the release hard-codes a 16 x 16 token grid and 256 px, so "small" shrinks widths/depths only
    "small": (dict(embed_dim=64, depth=2, num_heads=4, decoder_embed_dim=32, decoder_depth=3, decoder_num_heads=4),
              dict(num_heads=4, decoder_num_heads=4, prior_layers=2), 2),
    "full": (dict(embed_dim=768, depth=12, num_heads=12, decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16),
             {}, 6),
}


@pytest.mark.parametrize("size", sorted(SIZES))
def test_matches_release(release, size):
    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    rel_kwargs, overrides, layers = SIZES[size]
    ref = release.MaskedAutoencoderViTFinetune(img_size=256, patch_size=16, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                                               **rel_kwargs).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move away from the init (unit norms, zero biases, alpha 1)
        for name, p in ref.named_parameters():
            if name == "alpha":
                p.fill_(0.6)
            elif "pos_embed" not in name:
                p.add_(torch.randn(p.shape, generator=g) * (0.05 if p.ndim > 1 else 0.2))
    ours = MAEPrior.from_release({"model": ref.state_dict()}, **overrides).eval()
    assert ours.config.prior_layers == layers

    img, holes = _inputs()
    full, masks, inputs = map(torch.stack, zip(*[_release_preprocess(img, h) for h in holes]))
    image = (torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1).expand(len(holes), -1, -1, -1)
    hole = torch.stack([torch.from_numpy(h) for h in holes])[:, None]
    with torch.no_grad():
        # our preprocessing of the [-1, 1] float image reproduces the release's uint8 pipeline
        x, m = ours.prepare(image, hole)
        assert torch.equal(m, masks)
        assert (x - inputs).abs().max() < 1e-5

        feat_ref = ref.forward_return_feature(inputs, masks, decoder_layer=layers)
        assert (ours.prior_features(inputs, masks) - feat_ref).abs().max() < TOL
        assert (ours.prior(image, hole) - feat_ref).abs().max() < TOL

        rec_ref, _ = ref.forward_return_image(inputs, masks)
        assert (ours.unpatchify(ours.reconstruct_patches(inputs, masks)) - rec_ref).abs().max() < TOL

        # all-hole: the release's prior is NaN, ours is finite
        assert torch.isnan(ref.forward_return_feature(inputs[:1] * 0, torch.ones_like(masks[:1]), layers)).any()
        assert torch.isfinite(ours.prior_features(inputs[:1] * 0, torch.ones_like(masks[:1]))).all()

        # fine-tuning step with the same noise (the release draws it from the global generator)
        for seed in range(2):
            torch.manual_seed(seed)
            loss_ref, pred_ref, mask_ref, irr_ref, _ = ref(full, masks.clone(), mask_ratio=0.75)
            out = ours.forward_prepared(full, masks, generator=torch.Generator().manual_seed(seed))
            assert torch.equal(out.token_mask, mask_ref) and torch.equal(out.pixel_mask, irr_ref)
            assert (out.pred - pred_ref).abs().max() < TOL
            assert abs(out.loss.item() - loss_ref.item()) < TOL
