"""hole_psnr and band_color_error (asuka.metrics.pixel)."""

import numpy as np
import pytest
import torch

from asuka.errors import InputError


def test_hole_psnr_counts_only_hole_pixels():
    from asuka.metrics import hole_psnr

    torch.manual_seed(0)
    gt = torch.rand(2, 3, 16, 16) * 2 - 1
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, 4:8, 4:12] = 1
    pred = gt.clone()
    pred[:, :, 4:8, 4:12] += 0.2  # +0.1 on the [0, 1] scale in the hole
    pred[0, :, 0:2] = -1.0  # outside the hole: ignored (the composite keeps gt there)
    got = hole_psnr(pred.clamp(-1, 1), gt, mask, eps=0)
    sel = mask[0, 0] > 0
    want = [10 * np.log10(1.0 / float((((pred[i].clamp(-1, 1) - gt[i]) / 2)[:, sel] ** 2).mean())) for i in range(2)]
    assert got.tolist() == pytest.approx(want, rel=1e-6)
    assert torch.isnan(hole_psnr(gt, gt, torch.zeros(1, 1, 16, 16).expand(2, 1, 16, 16).contiguous())).all()


def test_band_color_error_pixel_and_mean():
    from skimage.color import deltaE_ciede2000, rgb2lab

    from asuka.metrics import band_color_error

    gt = torch.zeros(1, 3, 24, 24)
    gt[:, 0] = 0.5  # a flat reddish grey
    mask = torch.zeros(1, 1, 24, 24)
    mask[..., 6:18, 6:18] = 1
    assert band_color_error(gt, gt, mask).item() == 0.0
    tint = gt.clone()
    tint[:, 2] += 0.3  # a blue cast everywhere in the fill
    want = float(deltaE_ciede2000(rgb2lab(np.array([[[0.75, 0.5, 0.5]]])), rgb2lab(np.array([[[0.75, 0.5, 0.65]]])))[0, 0])
    assert band_color_error(tint, gt, mask, band=2).item() == pytest.approx(want, rel=1e-6)
    assert band_color_error(tint, gt, mask, band=2, reduce="mean").item() == pytest.approx(want, rel=1e-6)
    # a cast far inside the hole (outside the band) is not counted
    inner = gt.clone()
    inner[..., 10:14, 10:14] = 1.0
    assert band_color_error(inner, gt, mask, band=2).item() == 0.0
    # +-noise: the per-pixel error sees it, the band's mean colour barely moves
    noise = gt + torch.tensor([0.2, -0.2]).repeat(288)[:576].view(1, 1, 24, 24)
    assert band_color_error(noise, gt, mask, band=2).item() > 3 * band_color_error(noise, gt, mask, band=2,
                                                                                     reduce="mean").item()
    with pytest.raises(InputError, match="reduce"):
        band_color_error(gt, gt, mask, reduce="max")
