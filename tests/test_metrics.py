"""Per-image metrics: composite, PSNR, SSIM, boundary gradient, boundary colour shift, seed
variance, LPIPS -- against scikit-image / lpips computed independently in the test."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from asuka.errors import InputError
from asuka.metrics import (
    boundary_color_shift,
    boundary_gradient,
    composite,
    load_lpips,
    lpips_distance,
    pixel_metrics,
    psnr,
    seed_variance,
    ssim,
)


def _photo(size=64) -> torch.Tensor:
    """Two real photographs (scikit-image's bundled astronaut and coffee), (2,3,S,S) in [-1, 1]."""
    imgs = [skdata.astronaut(), skdata.coffee()[:400, :400]]
    t = [torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float() for a in imgs]
    return torch.cat([F.interpolate(x, size=(size, size), mode="area") for x in t]) / 127.5 - 1


def _box_mask(b=2, size=64, box=(16, 48, 20, 44)) -> torch.Tensor:
    m = torch.zeros(b, 1, size, size)
    m[:, :, box[0]:box[1], box[2]:box[3]] = 1
    return m


@pytest.fixture
def batch(generator):
    gt = _photo()
    noise = torch.rand(gt.shape, generator=generator) * 2 - 1
    pred = (gt * 0.6 + noise * 0.4).clamp(-1, 1)
    return pred, gt, _box_mask()


def _unit_np(x: torch.Tensor) -> np.ndarray:
    return ((x.double() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).numpy()


# ---------------------------------------------------------------- composite and checks
def test_composite_copies_known_pixels_exactly_and_thresholds_at_half(batch):
    pred, gt, _ = batch
    mask = torch.zeros(2, 1, 64, 64)
    mask[:, :, :, :32] = 0.5       # hole (>= 0.5)
    mask[:, :, :, 32:40] = 0.49    # keep
    out = composite(pred, gt, mask)
    assert torch.equal(out[..., :32], pred[..., :32])
    assert torch.equal(out[..., 32:], gt[..., 32:])
    pred_nan = pred.clone()
    pred_nan[..., 40:] = float("nan")  # outside the hole: must not leak into the composite
    assert torch.equal(composite(pred_nan, gt, mask)[..., 40:], gt[..., 40:])


@pytest.mark.parametrize("bad, match", [
    (lambda p, g, m: (p * 255, g, m), r"pred: expected values in \[-1, 1\]"),
    (lambda p, g, m: (p[:, :1], g, m), r"pred: expected shape \(B, 3, H, W\)"),
    (lambda p, g, m: (p, g[:, :, :32], m), "pred and gt shapes differ"),
    (lambda p, g, m: (p, g, m[:1]), "mask shape"),
    (lambda p, g, m: (p, g, m.bool()), "mask: expected a floating-point tensor"),
])
def test_bad_inputs_raise_input_error(batch, bad, match):
    with pytest.raises(InputError, match=match):
        psnr(*bad(*batch))


# ---------------------------------------------------------------- PSNR / SSIM
def test_psnr_equals_scikit_image_on_the_composite(batch):
    pred, gt, mask = batch
    fake = _unit_np(torch.where(mask >= 0.5, pred, gt))
    real = _unit_np(gt)
    expected = [peak_signal_noise_ratio(r, f, data_range=1.0) for r, f in zip(real, fake)]
    np.testing.assert_allclose(psnr(pred, gt, mask, eps=0).numpy(), expected, rtol=1e-10)
    # the release's 1e-7 guard changes these values by far less than 0.001 dB
    np.testing.assert_allclose(psnr(pred, gt, mask).numpy(), expected, atol=1e-3)
    assert psnr(gt, gt, mask).tolist() == pytest.approx([70.0, 70.0])  # capped, not inf


def test_ssim_equals_scikit_image_on_grayscale_composite(batch):
    pred, gt, mask = batch
    weights = np.array([0.2989, 0.587, 0.114])  # torchvision / TF grayscale, as the release
    fake = _unit_np(torch.where(mask >= 0.5, pred, gt)) @ weights
    real = _unit_np(gt) @ weights
    expected = [structural_similarity(f, r, data_range=1.0) for f, r in zip(fake, real)]
    np.testing.assert_allclose(ssim(pred, gt, mask).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(ssim(gt, gt, mask).numpy(), [1.0, 1.0])


# ---------------------------------------------------------------- boundary gradient
def test_boundary_gradient_zero_for_ground_truth_and_empty_mask(batch):
    pred, gt, mask = batch
    assert boundary_gradient(gt, gt, mask).tolist() == [0.0, 0.0]
    assert boundary_gradient(pred, gt, torch.zeros_like(mask)).tolist() == [0.0, 0.0]


def test_boundary_gradient_sees_only_the_edge(batch):
    pred, gt, mask = batch
    g = boundary_gradient(pred, gt, mask)
    assert (g > 1).all()
    # changing the fill deep inside the hole (> 3 px from the edge) leaves the edge metric alone
    deep = pred.clone()
    deep[:, :, 24:40, 28:36] = 0.0
    torch.testing.assert_close(boundary_gradient(deep, gt, mask), g)
    # a seam (fill offset by a constant) is penalised more than a small offset
    small = boundary_gradient((gt + 0.05).clamp(-1, 1), gt, mask)
    large = boundary_gradient((gt + 0.4).clamp(-1, 1), gt, mask)
    assert (large > small).all() and (small > 0).all()


# ---------------------------------------------------------------- boundary colour shift
def test_color_shift_zero_for_ground_truth(batch):
    _, gt, mask = batch
    assert boundary_color_shift(gt, gt, mask).tolist() == [0.0, 0.0]


def test_color_shift_grows_with_injected_shift(batch):
    _, gt, mask = batch
    shift = torch.tensor([0.25, -0.1, -0.2]).view(1, 3, 1, 1)  # warm tint inside the hole
    values = [boundary_color_shift((gt + a * shift).clamp(-1, 1), gt, mask) for a in (0.25, 0.5, 1.0)]
    assert (values[0] > 0.5).all()
    assert (values[1] > values[0]).all() and (values[2] > values[1]).all()


def test_color_shift_nan_without_boundary_and_band_checked(batch):
    pred, gt, mask = batch
    assert torch.isnan(boundary_color_shift(pred, gt, torch.zeros_like(mask))).all()
    assert torch.isnan(boundary_color_shift(pred, gt, torch.ones_like(mask))).all()
    with pytest.raises(InputError, match="band"):
        boundary_color_shift(pred, gt, mask, band=0)


def test_pixel_metrics_in_one_pass_equal_the_single_functions(batch):
    pred, gt, mask = batch
    mask = mask.clone()
    mask[1] = 0  # no hole in the second image
    both = pixel_metrics(pred, gt, mask, band=3, workers=2)
    singles = {"psnr": psnr(pred, gt, mask), "ssim": ssim(pred, gt, mask),
               "boundary_grad": boundary_gradient(pred, gt, mask),
               "color_shift": boundary_color_shift(pred, gt, mask, band=3)}
    assert set(both) == set(singles)
    for key, value in singles.items():
        torch.testing.assert_close(both[key], value, equal_nan=True, msg=key)


# ---------------------------------------------------------------- seed variance
def test_seed_variance(batch, generator):
    pred, gt, mask = batch
    assert seed_variance([pred, pred, pred], mask).tolist() == [0.0, 0.0]
    other = pred.clone()
    other[mask.expand_as(pred) >= 0.5] -= 0.2  # 0.1 on the [0, 1] scale, inside the hole only
    other = other.clamp(-1, 1)
    # population variance of {a, a - d} is d^2 / 4 at every hole pixel (where nothing clipped)
    unclipped = pred.clamp(-0.8, 1).eq(pred)
    expected = ((pred - other) / 2).pow(2).div(4)[unclipped & (mask.expand_as(pred) >= 0.5)].mean()
    got = seed_variance(torch.stack([pred, other]), mask)
    assert got.shape == (2,)
    assert got.mean().item() == pytest.approx(expected.item(), rel=0.05)
    assert torch.isnan(seed_variance([pred, other], torch.zeros_like(mask))).all()
    with pytest.raises(InputError, match="S>=2"):
        seed_variance([pred], mask)


# ---------------------------------------------------------------- LPIPS
@pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")  # the lpips reference itself
def test_lpips_equals_the_lpips_package_with_the_same_random_backbone(batch):
    import lpips

    pred, gt, mask = batch
    torch.manual_seed(123)
    ours = load_lpips(random_backbone=True)
    torch.manual_seed(123)
    ref = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()
    with torch.no_grad():
        expected = ref(torch.where(mask >= 0.5, pred, gt), gt).flatten()
    torch.testing.assert_close(lpips_distance(ours, pred, gt, mask), expected)
    assert lpips_distance(ours, gt, gt, mask).abs().max() < 1e-6
    # the prediction outside the hole does not count
    outside = torch.where(mask >= 0.5, pred, -gt)
    torch.testing.assert_close(lpips_distance(ours, outside, gt, mask), expected)
    with pytest.raises(InputError, match="at least 32x32"):
        lpips_distance(ours, pred[..., :31], gt[..., :31], mask[..., :31])


def test_lpips_loads_alexnet_from_the_hub_cache_or_says_where_to_put_it(tmp_path, monkeypatch):
    from torchvision.models import alexnet

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(InputError, match=r"alexnet-owt-7be5be79\.pth.*(put it there|TORCH_HOME)"):
        load_lpips()
    reference = alexnet(weights=None)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    # the classifier (240 MB) is never used: save the convolutions and one classifier key
    state = {"features." + k: v for k, v in reference.features.state_dict().items()}
    state["classifier.6.bias"] = reference.classifier[6].bias
    torch.save(state, tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth")
    model = load_lpips()
    torch.testing.assert_close(getattr(model.net.slice1, "0").weight, reference.features[0].weight, rtol=0, atol=0)
    torch.testing.assert_close(getattr(model.net.slice5, "10").bias, reference.features[10].bias, rtol=0, atol=0)
    # a file that is not AlexNet is refused with the key problem named
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(InputError, match="missing keys"):
        load_lpips(backbone_path=bad)
