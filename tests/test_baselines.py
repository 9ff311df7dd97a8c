"""The classical reference fills of asuka.baselines."""

import pytest
import torch

from asuka.baselines import mean_colour_fill, opencv_inpaint, quantize_8bit
from asuka.errors import InputError


def _inputs():
    g = torch.Generator().manual_seed(0)
    images = quantize_8bit(torch.rand(2, 3, 40, 48, generator=g) * 2 - 1)
    masks = torch.zeros(2, 1, 40, 48)
    masks[0, :, 10:20, 12:30] = 1
    masks[1, :, 25:38, 5:15] = 1
    return images, masks


@pytest.mark.parametrize("method", ["telea", "ns"])
def test_opencv_inpaint_keeps_known_pixels_and_fills_the_hole(method):
    images, masks = _inputs()
    out = opencv_inpaint(images, masks, method)
    known = masks.expand_as(images) < 0.5
    assert out.shape == images.shape and torch.equal(out[known], images[known])
    assert torch.equal(quantize_8bit(out), out)
    assert (out - images)[~known].abs().mean() > 0.05  # the noise in the hole is replaced
    with pytest.raises(InputError, match="method"):
        opencv_inpaint(images, masks, "lama")


def test_mean_colour_fill_uses_the_known_pixels_of_the_crop_region():
    images, masks = _inputs()
    images[0] = 0.5  # a flat photo: the mean of its known pixels is its colour
    images[0, :, 10:20, 12:30] = -1.0  # hidden content must not count
    out = mean_colour_fill(images, masks, margin=4, resolution=16)
    assert torch.allclose(out[0], torch.full_like(out[0], quantize_8bit(torch.tensor(0.5)).item()))
    known = masks[1].expand_as(images[1]) < 0.5
    assert torch.equal(out[1][known], images[1][known])
    # the second hole's region: a 21 px square around it (its 13 x 10 box + 2 x 4 margin), shifted into the image
    region, hole = images[1, :, 19:40, 0:21], masks[1, :, 19:40, 0:21] > 0.5
    mean = (region * ~hole).sum((1, 2)) / (~hole).sum()
    assert torch.allclose(out[1][:, 30, 10], quantize_8bit(mean), atol=1e-6)
