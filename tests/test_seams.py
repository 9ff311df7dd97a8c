"""Poisson seam blending (asuka.seams): the solver against a dense solve of the same equations
written out pixel by pixel, its properties, and the pipeline / CLI / folder option around it."""

import json

import numpy as np
import PIL.Image
import pytest
import torch

from asuka import provenance
from asuka.baselines import quantize_8bit
from asuka.cli import main
from asuka.errors import InputError
from asuka.seams import continuation_guide, fade_weight, poisson_blend
from asuka.testing import box_mask, tiny_components, tiny_flux_pipeline, tiny_pipeline


def _dense_reference(g, f, hole, weight, guide=None):
    """One channel: the blended hole by a dense solve, equation by equation. For each hole pixel p
    and each neighbour q inside the image: x_p - x_q = w_pq (g_p - g_q) + (1 - w_pq) (c_p - c_q)
    with w_pq the mean of the two pixels' weights and c the guide (none: 0), and x_q = f_q for a
    known q (Neumann at the border: no equation)."""
    h, w = g.shape
    idx = {p: k for k, p in enumerate(zip(*np.nonzero(hole)))}
    a = np.zeros((len(idx), len(idx)))
    b = np.zeros(len(idx))
    for (y, x), k in idx.items():
        for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            qy, qx = y + dy, x + dx
            if not (0 <= qy < h and 0 <= qx < w):
                continue
            a[k, k] += 1
            w_pq = 0.5 * (weight[y, x] + weight[qy, qx])
            b[k] += w_pq * (g[y, x] - g[qy, qx])
            if guide is not None:
                b[k] += (1 - w_pq) * (guide[y, x] - guide[qy, qx])
            if (qy, qx) in idx:
                a[k, idx[qy, qx]] -= 1
            else:
                b[k] += f[qy, qx]
    out = g.copy()
    for (y, x), value in zip(idx, np.linalg.solve(a, b)):
        out[y, x] = value
    return out


@pytest.mark.parametrize("fade,guided", [(0.0, False), (3.0, False), (3.0, True)])
def test_poisson_blend_solves_the_seamless_cloning_equations(fade, guided):
    rng = np.random.default_rng(0)
    g = rng.normal(size=(2, 3, 14, 17))
    f = rng.normal(size=(2, 3, 14, 17))
    c = rng.normal(size=(2, 3, 14, 17)) if guided else None
    hole = np.zeros((2, 1, 14, 17))
    hole[0, 0, 3:11, 2:9] = 1
    hole[1, 0, 0:9, 8:17] = 1  # touches the image border: Neumann there
    hole[1, 0, 2, 3] = 1  # a one-pixel hole
    out = poisson_blend(torch.tensor(g), torch.tensor(f), torch.tensor(hole), fade=fade,
                        guide=None if c is None else torch.tensor(c), tol=1e-10).numpy()
    weight = fade_weight(torch.tensor(hole), fade).numpy()
    for i in range(2):
        for ch in range(3):
            ref = _dense_reference(g[i, ch], f[i, ch], hole[i, 0] > 0, weight[i, 0],
                                   None if c is None else c[i, ch])
            np.testing.assert_allclose(out[i, ch], ref, atol=5e-6)  # solved in float32


def test_poisson_blend_solves_only_around_the_hole_in_any_memory_layout():
    """A hole far from the border is solved in its bounding box (grown by a pixel); the answer is
    the dense solve's over the whole image, for inputs in channels-last layout (as numpy images
    arrive) too, and nothing outside the hole changes."""
    rng = np.random.default_rng(1)
    g, f, c = (rng.normal(size=(1, 3, 20, 24)) for _ in range(3))
    hole = np.zeros((1, 1, 20, 24))
    hole[0, 0, 6:12, 9:15] = 1
    hole[0, 0, 12, 11] = 1
    weight = fade_weight(torch.tensor(hole), 2.0).numpy()
    last = dict(memory_format=torch.channels_last)
    out = poisson_blend(torch.tensor(g).to(**last), torch.tensor(f).to(**last), torch.tensor(hole), fade=2.0,
                        guide=torch.tensor(c).to(**last), tol=1e-10).numpy()
    for ch in range(3):
        ref = _dense_reference(g[0, ch], f[0, ch], hole[0, 0] > 0, weight[0, 0], c[0, ch])
        np.testing.assert_allclose(out[0, ch], ref, atol=5e-6)
    np.testing.assert_array_equal(out[..., hole[0, 0] == 0], g[..., hole[0, 0] == 0])


def test_poisson_blend_follows_the_guide_over_the_fade():
    """With the fill's gradients faded out everywhere, the hole is the guide (which meets the known
    pixels); the continuation guide carries a vertical edge into the hole and keeps the known pixels."""
    x = torch.linspace(-1, 1, 32)
    image = quantize_8bit(torch.where(x < 0.1, -0.6, 0.7).view(1, 1, 1, 32).expand(1, 3, 32, 32).contiguous())
    hole = box_mask(32, 32, (8, 24, 6, 26))
    guide = continuation_guide(image, hole)
    assert guide.shape == image.shape and guide.dtype == image.dtype
    torch.testing.assert_close(guide * (1 - hole), image * (1 - hole), atol=1e-6, rtol=0)
    # the edge continued down the hole: at its middle row nearly the full step (1.3) across it, where a
    # membrane (the smooth fill between the hole's edges) has spread it out
    membrane = poisson_blend(torch.zeros_like(image), image, hole, fade=1e9, tol=1e-10)
    step, membrane_step = (float(t[0, 0, 16, 21] - t[0, 0, 16, 14]) for t in (guide, membrane))
    assert step > 1.0 and membrane_step < 0.7
    # the hole's pixels of the input (in an evaluation: the ground truth) never reach the guide
    other = torch.where(hole > 0.5, torch.rand(1, 3, 32, 32) * 2 - 1, image)
    assert torch.equal(continuation_guide(other, hole), guide)
    fill = torch.randn(1, 3, 32, 32)
    out = poisson_blend(fill, image, hole, fade=1e9, guide=guide, tol=1e-10)  # fade: work bounded by the image
    torch.testing.assert_close(out * hole, guide * hole, atol=1e-4, rtol=0)


def test_poisson_blend_removes_a_colour_offset_and_keeps_everything_outside_the_hole():
    """A fill that is the truth plus a constant (a colour cast) comes back as the truth; pixels
    outside the hole are the model's output, untouched (the composite step pastes the known ones)."""
    image = torch.rand(1, 3, 24, 24) * 2 - 1
    hole = box_mask(24, 24, (6, 18, 5, 15))
    cast = image + torch.tensor([0.3, -0.2, 0.1]).view(1, 3, 1, 1)
    out = poisson_blend(cast, image, hole, tol=1e-8)
    torch.testing.assert_close(out * hole, image * hole, atol=1e-5, rtol=0)
    torch.testing.assert_close(out * (1 - hole), cast * (1 - hole), atol=0, rtol=0)
    assert out.dtype == cast.dtype
    half = poisson_blend(cast.half(), image.half(), hole)
    assert half.dtype == torch.float16


def test_poisson_blend_leaves_items_without_a_boundary_unchanged_and_checks_shapes():
    g, f = torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8)
    masks = torch.stack([torch.ones(1, 8, 8), torch.zeros(1, 8, 8), box_mask(8, 8, (2, 6, 2, 6))[0]])
    out = poisson_blend(g, f, masks)
    torch.testing.assert_close(out[:2], g[:2], atol=0, rtol=0)  # all hole: nothing to meet; no hole
    assert not torch.allclose(out[2], g[2])
    with pytest.raises(ValueError, match="must match"):
        poisson_blend(g, f[:, :2], masks)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        poisson_blend(g, f, masks[:, 0])
    with pytest.raises(ValueError, match="guide"):
        poisson_blend(g, f, masks, guide=f[:1, :, :4])


def test_fade_weight_grows_from_the_hole_edge():
    hole = box_mask(1, 12, (0, 1, 2, 12))  # a hole from column 2 to the border
    torch.testing.assert_close(fade_weight(hole, 0.0), torch.ones_like(hole))
    row = fade_weight(hole, 4.0)[0, 0, 0].tolist()
    assert row == pytest.approx([0, 0, 0.125, 0.375, 0.625, 0.875, 1, 1, 1, 1, 1, 1])


# ------------------------------------------------------------------ in the pipelines
def _edge_jump(x, y0, x0, x1):
    """Mean absolute step across the hole's top edge (row y0 against the known row above)."""
    return float((x[..., y0, x0:x1] - x[..., y0 - 1, x0:x1]).abs().mean())


@pytest.mark.parametrize("make", [tiny_pipeline, tiny_flux_pipeline], ids=["sd15", "flux"])
def test_pipeline_poisson_blend_is_off_by_default_and_meets_the_surroundings(make):
    pipe = make(0)
    smooth = torch.linspace(-0.6, 0.6, 64)
    image = (smooth.view(1, 1, 1, 64) + 0.5 * smooth.view(1, 1, 64, 1)).expand(1, 3, 64, 64).contiguous()
    hole = box_mask(64, 64, (16, 40, 16, 48))

    def run(**kw):
        return pipe(image, hole, 1, generator=torch.Generator().manual_seed(0), output_type="pt", **kw).images

    plain, off, blended = run(), run(poisson_blend=False), run(poisson_blend=4)
    torch.testing.assert_close(plain, off, atol=0, rtol=0)  # a folder without default_poisson_blend: off
    torch.testing.assert_close(blended * (1 - hole), image * (1 - hole), atol=0, rtol=0)  # known pixels kept
    assert _edge_jump(blended, 16, 16, 48) < 0.5 * _edge_jump(plain, 16, 16, 48)
    # a region resized to half the size and back: the pass at the output size meets the original there
    small_plain, small_blended = run(resolution=32), run(resolution=32, poisson_blend=2)
    torch.testing.assert_close(small_blended * (1 - hole), image * (1 - hole), atol=0, rtol=0)
    assert _edge_jump(small_blended, 16, 16, 48) < 0.5 * _edge_jump(small_plain, 16, 16, 48)
    # there, over the fade, the hole continues the original's edges (seams.continuation_guide): a sharp
    # vertical edge crossing the hole's top stays sharper 4 px into it (1.0 at the edge) than a smooth membrane keeps it
    edge = quantize_8bit(torch.where(torch.arange(64) < 30, -0.5, 0.5).float().view(1, 1, 1, 64).expand(1, 3, 64, 64))
    cut = pipe(edge, hole, 1, generator=torch.Generator().manual_seed(0), output_type="pt", resolution=32,
               poisson_blend=8).images
    assert float((cut[0, :, 20, 33] - cut[0, :, 20, 26]).mean()) > 0.6  # a membrane: 0.53
    latents = pipe(image, hole, 1, generator=torch.Generator().manual_seed(0), output_type="latent").images
    torch.testing.assert_close(latents, pipe(image, hole, 1, generator=torch.Generator().manual_seed(0),
                                             output_type="latent", poisson_blend=4).images, atol=0, rtol=0)
    for bad in (-1, float("nan"), "yes", [2]):
        with pytest.raises(InputError, match="poisson_blend must be a fade width"):
            run(poisson_blend=bad)


def test_folder_default_poisson_blend_is_saved_used_and_overridden(tmp_path, capsys):
    from asuka.cli.info import describe_folder, format_description
    from asuka.pipeline import AsukaInpaintPipeline, load_pipeline

    folder = tmp_path / "blending"
    AsukaInpaintPipeline(**tiny_components(0), default_poisson_blend=3).save_pretrained(folder)
    assert json.loads((folder / "model_index.json").read_text())["default_poisson_blend"] == 3
    pipe = load_pipeline(folder, device="cpu")
    assert [pipe.seam_fade(v) for v in (None, True, False, 5)] == [3.0, 3.0, None, 5.0]
    assert tiny_pipeline(0).seam_fade(True) == 0.0 and tiny_pipeline(0).seam_fade(None) is None
    assert "seam blending: Poisson, fade 3 px" in format_description(describe_folder(str(folder)))
    with pytest.raises(InputError, match="default_poisson_blend must be a fade width"):
        AsukaInpaintPipeline(**tiny_components(0), default_poisson_blend=-1)

    calls = []
    import asuka.seams

    real = asuka.seams.poisson_blend
    spy = lambda *a, **kw: (calls.append(kw["fade"]), real(*a, **kw))[1]  # noqa: E731
    rng = np.random.default_rng(0)
    PIL.Image.fromarray((rng.random((48, 56, 3)) * 255).astype(np.uint8)).save(tmp_path / "img.png")
    hole = np.zeros((48, 56), np.uint8)
    hole[10:30, 12:40] = 255
    PIL.Image.fromarray(hole).save(tmp_path / "mask.png")
    base = ["inpaint", str(tmp_path / "img.png"), str(tmp_path / "mask.png"), "--model", str(folder),
            "--device", "cpu", "--threads", "1", "--steps", "1"]
    recipes = []
    for k, extra in enumerate(([], ["--poisson-blend", "1.5"], ["--no-poisson-blend"], ["--poisson-blend"])):
        out = tmp_path / f"out{k}.png"
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(asuka.seams, "poisson_blend", spy)
            assert main(base + ["-o", str(out)] + extra) == 0
        recipes.append(provenance.read_recipe(PIL.Image.open(out))["poisson_blend"])
    # two passes a run (working size, output size: the same size here) with the fade asked for
    assert calls == [3.0, 3.0, 1.5, 1.5, 3.0, 3.0] and recipes == [3.0, 1.5, False, 3.0]
    with pytest.raises(SystemExit):
        main(base + ["-o", str(tmp_path / "bad.png"), "--poisson-blend", "-2"])
    assert "FADE must be a number >= 0" in capsys.readouterr().err
