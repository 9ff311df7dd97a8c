"""The classical reference fills of asuka.baselines."""

import pytest
import torch

from asuka.baselines import (
    mean_colour_fill,
    membrane_fill,
    opencv_inpaint,
    quantize_8bit,
)
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


@pytest.mark.parametrize("fade", [0.0, 6.0])
def test_membrane_fill_solves_the_hole_from_its_edge_alone(fade):
    """A linear ramp is harmonic: in a hole inside the image the membrane gives it back, to the
    8-bit grid (with a fade, nearly: the edge continuation over it, OpenCV's Navier-Stokes, is off
    by up to 0.17 on this ramp); known pixels are kept (also for a hole at the border, where the
    solve is Neumann, not a ramp)."""
    ramp = torch.linspace(-0.8, 0.8, 40)
    image = quantize_8bit((ramp.view(1, 1, 1, 40) * 0.5 + ramp.view(1, 1, 40, 1) * 0.4).expand(2, 3, 40, 40))
    masks = torch.zeros(2, 1, 40, 40)
    masks[0, :, 10:30, 8:28] = 1
    masks[1, :, 0:25, 15:40] = 1  # touching the border
    out = membrane_fill(image, masks, fade)
    torch.testing.assert_close(out * (1 - masks), image * (1 - masks), atol=0, rtol=0)
    assert float((out[0] - image[0]).abs().max()) <= (3 / 127.5 if fade == 0 else 0.05)
    assert image[1].min() <= out[1].min() and out[1].max() <= image[1].max()  # a maximum principle
    assert torch.equal(out, quantize_8bit(out))
