"""Decoder-stage augmentations: colour jitter on the input only; offline latent augmentation."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from asuka.data.images import CropBox, RandomCrop, open_rgb
from asuka.errors import InputError
from asuka.training import get_stage, load_config
from asuka.training.augment import ColorJitterConfig, color_jitter
from asuka.training.data import build_dataset
from asuka.training.latent_aug import LatentAugConfig, LatentAugStore, make_latent_aug, one_step_estimate


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("aug_photos")
    rng = np.random.default_rng(2)
    (root / "sub").mkdir()
    for i in range(12):
        name = f"sub/s{i}.png" if i % 3 == 0 else f"i{i}.png"
        Image.fromarray(rng.integers(0, 256, (34 + i, 40, 3), dtype=np.uint8)).save(root / name)
    return root


# ------------------------------------------------------------------------------ colour jitter
def test_color_jitter_seeded_per_image_and_in_range():
    x = torch.rand(6, 3, 16, 16) * 1.6 - 0.8
    cfg = ColorJitterConfig()
    a = color_jitter(x, cfg, torch.Generator().manual_seed(0))
    b = color_jitter(x, cfg, torch.Generator().manual_seed(0))
    c = color_jitter(x, cfg, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)  # the generator decides everything
    assert a.shape == x.shape and a.min() >= -1 and a.max() <= 1
    assert all((a[i] - x[i]).abs().mean() > 1e-3 for i in range(6))
    shifts = (a - x).mean(dim=(1, 2, 3))
    assert shifts.std() > 1e-3  # one draw per image, not one per batch
    assert torch.equal(color_jitter(x, ColorJitterConfig(p=0.0), torch.Generator()), x)
    zero = ColorJitterConfig(brightness=0, contrast=0, saturation=0, hue=0)
    assert torch.allclose(color_jitter(x, zero, torch.Generator()), x, atol=1e-6)
    # strengths bound the change: brightness alone scales [0, 1] values by at most 1 +- 0.15
    only_b = color_jitter(x, ColorJitterConfig(contrast=0, saturation=0, hue=0), torch.Generator().manual_seed(3))
    ratio = (only_b + 1) / (x + 1)
    assert ratio.min() >= 0.85 - 1e-5 and ratio.max() <= 1.15 + 1e-5


def _decoder_stage(images, tmp_path, *extra):
    cfg = load_config(get_stage("decoder").config_class, [], [
        f"output_dir={tmp_path / 'dec'}", f"data.root={images}", "data.resolution=32", "data.num_workers=0",
        "batch_size=4", "backbone.preset=tiny", "loss.perceptual=off", "max_steps=2", *extra], stage="decoder")
    stage = get_stage("decoder")(cfg, device=torch.device("cpu"), weight_dtype=torch.float32)
    stage.build()
    data = build_dataset(cfg, transform=stage.dataset_transform(), crop_override=stage.crop_override())
    return stage, data


def test_color_augmentation_touches_the_input_only(images, tmp_path):
    stage, data = _decoder_stage(images, tmp_path)
    batch = torch.utils.data.default_collate([data[(i, 0)] for i in range(4)])
    original = batch["image"].clone()
    encoded, decoded = [], []
    encode = stage.vae.encode
    stage.vae.encode = lambda x: encoded.append(x.clone()) or encode(x)
    forward = stage.models["decoder"].forward
    stage.models["decoder"].forward = lambda z, image, mask, **kw: decoded.append((image.clone(), mask.clone())) \
        or forward(z, image, mask, **kw)
    z, cond, mask, target = stage.make_inputs(batch, torch.Generator().manual_seed(0))
    # the encoder (input) saw a jittered image; the condition and the target are the original
    assert (encoded[0] - original).abs().mean() > 1e-3
    assert torch.equal(cond, original) and torch.equal(target, original) and torch.equal(mask, batch["mask"])
    stage.loss(batch, 0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(decoded[-1][0], original) and torch.equal(decoded[-1][1], batch["mask"])
    assert torch.equal(batch["image"], original)  # nothing was modified in place


# ------------------------------------------------------------------------- latent augmentation
class _OracleUNet(torch.nn.Module):
    """Predicts the true noise (given to it), or zero: checks the z0_hat formula."""

    def __init__(self, noise, zero=False, mask_channel=None):
        super().__init__()
        self.noise, self.zero, self.w = noise, zero, torch.nn.Parameter(torch.zeros(()))
        self.mask_channel = mask_channel
        self.config = type("C", (), {"cross_attention_dim": 8})()

    @property
    def dtype(self):
        return torch.float32

    def forward(self, x, t, encoder_hidden_states):
        want = torch.zeros_like(x[:, 4]) if self.mask_channel is None else self.mask_channel[:, 0]
        assert x.shape[1] == 9 and torch.equal(x[:, 4], want)  # the all-zero mask channel, or the hole
        out = torch.zeros_like(self.noise) if self.zero else self.noise
        return type("O", (), {"sample": out})()


def test_one_step_estimate_formula():
    from diffusers import DDPMScheduler

    from asuka.testing import sd15_scheduler_config

    sched = DDPMScheduler.from_config(sd15_scheduler_config())
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(64, 4, 8, 8, generator=g)
    noise = torch.randn(64, 4, 8, 8, generator=g)
    t = torch.randint(500, 1000, (64,), generator=g)
    cond = torch.zeros(1, 1, 8)
    exact = one_step_estimate(_OracleUNet(noise), sched, z0, noise, t, cond)
    assert torch.allclose(exact, z0, atol=1e-4)  # a perfect noise prediction recovers z0
    naive = one_step_estimate(_OracleUNet(noise, zero=True), sched, z0, noise, t, cond)
    abar = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    assert torch.allclose(naive, z0 + (1 - abar).sqrt() / abar.sqrt() * noise, atol=1e-4)
    # statistics: with eps = 0 the estimate's variance is 1 + (1 - abar) / abar per element
    assert naive.var().item() == pytest.approx((1 + (1 - abar) / abar).mean().item(), rel=0.15)


def test_one_step_estimate_with_a_hole():
    from diffusers import DDPMScheduler

    from asuka.testing import sd15_scheduler_config

    sched = DDPMScheduler.from_config(sd15_scheduler_config())
    g = torch.Generator().manual_seed(0)
    z0, noise = torch.randn(4, 4, 8, 8, generator=g), torch.randn(4, 4, 8, 8, generator=g)
    t = torch.full((4,), 999)
    hole = (torch.rand(4, 1, 8, 8, generator=g) > 0.5).float()
    masked = z0 * (1 - hole)
    est = one_step_estimate(_OracleUNet(noise, mask_channel=hole), sched, z0, noise, t, torch.zeros(1, 1, 8),
                            hole, masked)
    assert torch.allclose(est, z0, atol=1e-3)  # the hole reaches the UNet; the formula is unchanged
    with pytest.raises(InputError, match="both mask_latents and masked_latents"):
        one_step_estimate(_OracleUNet(noise), sched, z0, noise, t, torch.zeros(1, 1, 8), hole)


def test_make_latent_aug_masked_stores_the_hole_and_the_decoder_trains_with_it(images, tmp_path):
    common = [f"data.root={images}", "data.resolution=32", "data.num_workers=0", "backbone.preset=tiny",
              "batch_size=4", "fraction=1.0", "seed=1", "t_min=999", "t_max=1000"]
    plain, holed = tmp_path / "plain", tmp_path / "holed"
    make_latent_aug(load_config(LatentAugConfig, [], [f"output_dir={plain}", *common]))
    cfg = load_config(LatentAugConfig, [], [f"output_dir={holed}", "masked=true", *common])
    count = make_latent_aug(cfg)
    store = LatentAugStore(holed)
    assert store.meta()["masked"] is True and count == len(store.boxes()) == 12
    ratios, in_hole, outside = [], [], []
    for ident in store.boxes():
        d = load_file(str(store.latent_path(ident)))
        mask = d["mask"]
        assert mask.shape == (1, 32, 32) and mask.dtype == torch.uint8 and set(mask.unique().tolist()) <= {0, 1}
        ratios.append(mask.float().mean().item())
        # the same crop, noise and t as the plain run: the estimates differ where the hole is
        diff = (d["z0_hat"].float() - load_file(str(LatentAugStore(plain).latent_path(ident)))["z0_hat"].float()).abs()
        hole = torch.nn.functional.interpolate(mask[None].float(), size=(16, 16), mode="area")[0] > 0.5
        known = torch.nn.functional.interpolate(mask[None].float(), size=(16, 16), mode="area")[0] == 0
        in_hole.append(diff[:, hole[0]].mean().item())
        outside.append(diff[:, known[0]].mean().item() if known.any() else 0.0)
    assert 0.05 < np.mean(ratios) < 0.8 and len({round(r, 4) for r in ratios}) > 3  # a drawn mask per image
    assert np.mean(in_hole) > 0 and np.mean(in_hole) > np.mean(outside)
    # the decoder's dataset replays the stored crop with the stored mask (not a fresh draw)
    stage, data = _decoder_stage(images, tmp_path, f"latent_aug.dir={holed}")
    for i, name in enumerate(data.files):
        s = data[(i, 0)]
        assert s["has_latent"] and torch.equal(s["mask"], load_file(str(store.latent_path(name)))["mask"].float())
    # a store made the other way is refused, not mixed
    with pytest.raises(InputError, match="masked: False vs True"):
        make_latent_aug(load_config(LatentAugConfig, [], [f"output_dir={plain}", "masked=true", *common]))


def test_make_latent_aug_shapes_statistics_resume(images, tmp_path):
    out = tmp_path / "la"
    cfg = load_config(LatentAugConfig, [], [f"output_dir={out}", f"data.root={images}", "data.resolution=32",
                                            "data.num_workers=0", "backbone.preset=tiny", "batch_size=3",
                                            "fraction=0.5", "seed=1"])
    count = make_latent_aug(cfg)
    store = LatentAugStore(out)
    meta, boxes = store.meta(), store.boxes()
    assert meta["resolution"] == 32 and meta["latent_channels"] == 4 and meta["t_range"] == [500, 1000]
    assert count == len(boxes) and 2 <= count <= 10  # about half of the 12 images
    sf = meta["scaling_factor"]
    for ident, box in boxes.items():
        d = load_file(str(store.latent_path(ident)))
        assert d["z0_hat"].shape == (4, 16, 16) and d["z0_hat"].dtype == torch.float16  # tiny VAE: factor 2
        assert 500 <= int(d["t"]) < 1000 and torch.isfinite(d["z0_hat"].float()).all()
        assert CropBox.from_sequence(d["crop"]) == box
        # the stored latent is (latent of the stored crop, noised and denoised once) / scaling_factor
        assert d["z0_hat"].float().std() * sf > 0.1
    # resume: nothing is redone; the files stay as they are
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "latents").rglob("*.safetensors")}
    assert make_latent_aug(cfg) == count
    assert {p: p.stat().st_mtime_ns for p in (out / "latents").rglob("*.safetensors")} == mtimes
    # the same crop is replayed by the decoder's dataset, with the latent attached
    stage, data = _decoder_stage(images, tmp_path, f"latent_aug.dir={out}")
    files = data.files
    for i, name in enumerate(files):
        s = data[(i, 0)]
        assert s["latent"].shape == (4, 16, 16) and s["has_latent"] == (name in boxes)
        if name in boxes:
            box = boxes[name]
            crop = RandomCrop(32).apply(open_rgb(images / name), box)
            assert torch.equal(s["image"], crop)
            assert torch.equal(s["latent"], load_file(str(store.latent_path(name)))["z0_hat"].float())
    batch = torch.utils.data.default_collate([data[(i, 0)] for i in range(len(files))])
    z, *_ = stage.make_inputs(batch, torch.Generator().manual_seed(0))
    assert torch.equal(z[batch["has_latent"]], batch["latent"][batch["has_latent"]])
    # a store made at another resolution is refused
    with pytest.raises(InputError, match="does not fit this run: resolution 32"):
        _decoder_stage(images, tmp_path, f"latent_aug.dir={out}", "data.resolution=64")
    assert json.loads((out / "meta.json").read_text())["fraction"] == 0.5 and math.isfinite(sf)
