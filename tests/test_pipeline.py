"""AsukaInpaintPipeline on tiny random components (2 denoising steps at 64 px)."""

import json

import numpy as np
import PIL.Image
import pytest
import torch

from asuka.errors import CheckpointError, InputError
from asuka.pipeline import (AsukaInpaintPipeline, crop_box, feather_mask, pad_to_multiple,
                            working_size)
from asuka.testing import TINY_RESOLUTION, box_mask, run_seeded, tiny_components, tiny_pipeline

STEPS = 2



@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(0, text_encoder=True)


def _image(seed=0, h=64, w=64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, h, w, generator=g) * 2 - 1


def _mask(h=64, w=64, box=(16, 40, 20, 50)):
    return box_mask(h, w, box)


def _run(pipe, image, mask, seed=0, **kw):
    return run_seeded(pipe, image, mask, STEPS, seed, **kw)


# ------------------------------------------------------------------ shapes, types, sizes
def test_output_types_shapes_and_ranges(pipe):
    image, mask = _image(), _mask()
    pt = _run(pipe, image, mask)
    assert pt.shape == (1, 3, 64, 64) and pt.dtype == torch.float32
    assert pt.min() >= -1 and pt.max() <= 1 and torch.isfinite(pt).all()
    np_out = _run(pipe, image, mask, output_type="np")
    assert np_out.shape == (1, 64, 64, 3) and np_out.dtype == np.float32
    np.testing.assert_allclose(np_out[0], (pt[0].permute(1, 2, 0).numpy() + 1) / 2, atol=1e-6)
    pil = _run(pipe, image, mask, output_type="pil")
    assert isinstance(pil[0], PIL.Image.Image) and pil[0].size == (64, 64) and pil[0].mode == "RGB"
    latents = _run(pipe, image, mask, output_type="latent")
    assert latents.shape == (1, 4, 32, 32)


def test_odd_size_is_padded_and_cropped_back(pipe):
    image, mask = _image(1, 37, 51), _mask(37, 51, (5, 20, 10, 30))
    for pad_mode in ("reflect", "replicate"):
        out = _run(pipe, image, mask, pad_mode=pad_mode)
        assert out.shape == (1, 3, 37, 51)
        assert torch.equal(out * (1 - mask), image * (1 - mask))


def test_pil_numpy_and_torch_inputs_agree(pipe):
    image_u8 = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    mask_u8 = (_mask()[0, 0].numpy() * 255).astype(np.uint8)
    from_pil = _run(pipe, PIL.Image.fromarray(image_u8), PIL.Image.fromarray(mask_u8))
    from_np = _run(pipe, image_u8, mask_u8)
    from_pt = _run(pipe, torch.from_numpy(image_u8).permute(2, 0, 1).float() / 127.5 - 1, _mask()[0])
    assert torch.equal(from_pil, from_np)
    torch.testing.assert_close(from_pt, from_pil, atol=1e-5, rtol=0)


# ------------------------------------------------------------------ determinism, batching
def test_same_seed_same_output_other_seed_differs(pipe):
    image, mask = _image(), _mask()
    a, b, c = _run(pipe, image, mask, 7), _run(pipe, image, mask, 7), _run(pipe, image, mask, 8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_batch_equals_single_runs_with_per_image_generators(pipe):
    images = torch.cat([_image(1), _image(2)])
    masks = torch.cat([_mask(), _mask(box=(0, 30, 0, 64))])
    batch = pipe(images, masks, STEPS, output_type="pt",
                 generator=[torch.Generator().manual_seed(s) for s in (3, 4)]).images
    singles = [_run(pipe, images[i:i + 1], masks[i:i + 1], seed=s) for i, s in enumerate((3, 4))]
    torch.testing.assert_close(batch, torch.cat(singles), atol=1e-4, rtol=0)


def test_num_images_per_prompt_gives_distinct_samples(pipe):
    out = _run(pipe, _image(), _mask(), num_images_per_prompt=2)
    assert out.shape == (2, 3, 64, 64) and not torch.equal(out[0], out[1])
    with pytest.raises(InputError, match="list of 2"):
        pipe(_image(), _mask(), STEPS, generator=[torch.Generator()], num_images_per_prompt=2)


def test_images_of_different_sizes_in_one_call(pipe):
    images = [_image(1, 64, 64)[0], _image(2, 40, 56)[0]]
    masks = [_mask()[0], _mask(40, 56, (5, 20, 5, 20))[0]]
    out = pipe(images, masks, STEPS, output_type="pt", generator=torch.Generator().manual_seed(0)).images
    assert [tuple(o.shape) for o in out] == [(3, 64, 64), (3, 40, 56)]


# ------------------------------------------------------------------ compositing, masks
def test_known_pixels_unchanged_when_compositing(pipe):
    image, mask = _image(), _mask()
    out = _run(pipe, image, mask)
    assert torch.equal(out * (1 - mask), image * (1 - mask))
    raw = _run(pipe, image, mask, composite=False)
    assert not torch.equal(raw * (1 - mask), image * (1 - mask))
    assert torch.equal(raw * mask, out * mask)  # the hole is the model's output either way
    # uint8 round trip keeps the known pixels bit-exact
    image_u8 = (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)
    pil = _run(pipe, PIL.Image.fromarray(image_u8), mask, output_type="pil")[0]
    keep = mask[0, 0].numpy() == 0
    assert np.array_equal(np.asarray(pil)[keep], image_u8[keep])


def test_feathering_blends_only_outside_the_hole(pipe):
    image, mask = _image(), _mask()
    hard, soft = _run(pipe, image, mask), _run(pipe, image, mask, feather=6)
    assert torch.equal(soft * mask, hard * mask)
    far = torch.ones_like(mask)
    far[..., 4:52, 8:62] = 0  # more than 2 * feather pixels away from the hole
    assert torch.equal(soft * far, image * far)
    ring = (feather_mask(mask[0], 6) > 0).float() - mask[0]
    assert ring.sum() > 0 and not torch.equal(soft * ring, image * ring)


def test_empty_mask_returns_input_without_running_models(pipe, monkeypatch):
    image_u8 = (np.random.default_rng(2).random((30, 40, 3)) * 255).astype(np.uint8)

    def boom(*args, **kwargs):
        raise AssertionError("a model ran for an empty mask")

    monkeypatch.setattr(pipe, "inpaint", boom)
    out = pipe(PIL.Image.fromarray(image_u8), np.zeros((30, 40), np.float32), STEPS).images[0]
    assert np.array_equal(np.asarray(out), image_u8)


def test_all_hole_mask_works(pipe):
    out = _run(pipe, _image(), torch.ones(1, 1, 64, 64))
    assert out.shape == (1, 3, 64, 64) and torch.isfinite(out).all()


def test_mask_size_mismatch_is_an_error_unless_resize(pipe):
    with pytest.raises(InputError, match="does not match the image size"):
        _run(pipe, _image(), _mask(32, 32, (4, 10, 4, 10)))
    out = _run(pipe, _image(), _mask(32, 32, (4, 10, 4, 10)), resize_mask=True)
    assert out.shape == (1, 3, 64, 64)


@pytest.mark.parametrize("kwargs, message", [
    (dict(output_type="jpg"), "output_type"),
    (dict(condition="clip"), "condition"),
    (dict(decoder="gan"), "decoder"),
    (dict(feather=-1), "feather"),
    (dict(pad_mode="circular"), "pad_mode"),
    (dict(num_images_per_prompt=0), "num_images_per_prompt"),
    (dict(condition_weight=float("nan")), "condition_weight"),
    (dict(prompt="a cat", condition="prior"), "prompt"),
    (dict(callback_on_step_end_tensor_inputs=["noise"]), "noise"),
])
def test_bad_options_raise_input_error(pipe, kwargs, message):
    with pytest.raises(InputError, match=message):
        _run(pipe, _image(), _mask(), **kwargs)


def test_bad_inputs_raise_input_error(pipe):
    with pytest.raises(InputError, match="2 images and 3 masks"):
        _run(pipe, torch.cat([_image(), _image()]), torch.cat([_mask()] * 3))
    with pytest.raises(InputError, match=r"\[-1, 1\]"):
        _run(pipe, _image() * 3, _mask())
    with pytest.raises(InputError, match="num_inference_steps"):
        pipe(_image(), _mask(), 0)


# ------------------------------------------------------------------ crop mode
def test_crop_box_square_around_hole_and_clamped():
    mask = torch.zeros(300, 400)
    mask[100:110, 380:390] = 1
    top, left, h, w = crop_box(mask, 8, 64)
    assert (h, w) == (64, 64) and left + w == 400  # shifted inside the image
    assert top <= 100 and top + h >= 110
    big = torch.zeros(50, 400)
    big[10:20, 10:300] = 1
    assert crop_box(big, 8, 64) == (0, 2, 50, 306)  # clamped to the image height
    assert working_size((50, 306), 64) == (10, 64)
    assert working_size((50, 60), 64) == (50, 60)


def test_crop_box_takes_numpy_masks_and_its_box_is_its_own_crop_box():
    """``asuka serve`` calls crop_box on the uploaded bool mask (no float copy) and hands the
    pipeline only that box: numpy and torch masks agree, and inside the box the box is all."""
    from asuka.pipeline_base import hole_bbox

    rng = np.random.default_rng(0)
    for _ in range(200):
        height, width = (int(v) for v in rng.integers(1, 160, size=2))
        y0, x0 = int(rng.integers(0, height)), int(rng.integers(0, width))
        y1, x1 = int(rng.integers(y0 + 1, height + 1)), int(rng.integers(x0 + 1, width + 1))
        hole = np.zeros((height, width), bool)
        hole[y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) < 0.3
        hole[y0, x0] = hole[y1 - 1, x1 - 1] = True  # the bounding box is exactly (y0, y1, x0, x1)
        margin, resolution = int(rng.integers(0, 20)), int(rng.integers(1, 100))
        assert hole_bbox(hole) == hole_bbox(torch.from_numpy(hole)) == (y0, y1, x0, x1)
        box = crop_box(hole, margin, resolution)
        assert box == crop_box(torch.from_numpy(hole).float(), margin, resolution)
        top, left, h, w = box
        assert top <= y0 and y1 <= top + h and left <= x0 and x1 <= left + w  # holds the hole
        assert crop_box(hole[top:top + h, left:left + w], margin, resolution) == (0, 0, h, w)
    with pytest.raises(ValueError, match="no hole"):
        crop_box(np.zeros((4, 4), bool), 8, 64)


def test_crop_mode_works_at_working_resolution_and_pastes_only_the_hole(pipe, working_shapes):
    image = _image(3, 200, 300)
    mask = torch.zeros(1, 1, 200, 300)
    mask[..., 150:160, 250:262] = 1
    seen = working_shapes(pipe)
    out = _run(pipe, image, mask, padding_mask_crop=4)
    assert seen == [(1, 3, TINY_RESOLUTION, TINY_RESOLUTION)]
    assert out.shape == (1, 3, 200, 300)
    assert torch.equal(out * (1 - mask), image * (1 - mask))
    assert not torch.equal(out * mask, image * mask)
    # a large hole: its region is downscaled to the working resolution and scaled back
    seen.clear()
    mask[..., 20:180, 20:280] = 1
    out = _run(pipe, image, mask, padding_mask_crop=4)
    assert max(seen[0][-2:]) <= TINY_RESOLUTION and out.shape == (1, 3, 200, 300)
    assert torch.equal(out * (1 - mask), image * (1 - mask))


def test_pad_to_multiple_falls_back_to_replicate_for_tiny_sides():
    x = torch.arange(3.0).view(1, 1, 1, 3)
    padded, pads = pad_to_multiple(x, 8)
    assert padded.shape == (1, 1, 8, 8) and pads == (7, 5)


# ------------------------------------------------------------------ conditions, decoders
def test_condition_weight_zero_equals_null_condition(pipe):
    # The tiny aligner's null condition is one token: repeating it to L tokens leaves attention unchanged.
    image, mask = _image(), _mask()
    prior, null = _run(pipe, image, mask), _run(pipe, image, mask, condition="null")
    weight0 = _run(pipe, image, mask, condition_weight=0.0)
    torch.testing.assert_close(weight0, null, atol=1e-5, rtol=0)
    assert not torch.allclose(prior, null, atol=1e-3)


def test_condition_interpolates_between_null_and_prior(pipe):
    image, mask = _image(), _mask()
    cond, null = pipe.encode_condition(image, mask, condition_weight=0.25)
    full, _ = pipe.encode_condition(image, mask)
    torch.testing.assert_close(cond, null + 0.25 * (full - null), atol=1e-6, rtol=0)


def test_text_condition_and_guidance(pipe):
    image, mask = _image(), _mask()
    cat = _run(pipe, image, mask, prompt="a cat")
    dog = _run(pipe, image, mask, prompt=["a dog"])
    assert not torch.equal(cat, dog)
    guided = _run(pipe, image, mask, guidance_scale=3.0)
    assert not torch.allclose(guided, _run(pipe, image, mask), atol=1e-4)
    bare = tiny_pipeline(0)
    with pytest.raises(InputError, match="text_encoder"):
        _run(bare, image, mask, prompt="a cat")


def test_vae_decoder_ablation_and_missing_decoder(pipe):
    image, mask = _image(), _mask()
    assert not torch.equal(_run(pipe, image, mask, decoder="vae"), _run(pipe, image, mask))
    no_decoder = AsukaInpaintPipeline(**{**tiny_components(0), "decoder": None})
    no_decoder.set_progress_bar_config(disable=True)
    torch.testing.assert_close(_run(no_decoder, image, mask), _run(pipe, image, mask, decoder="vae"),
                               atol=1e-5, rtol=0)
    with pytest.raises(InputError, match="no ASUKA decoder"):
        _run(no_decoder, image, mask, decoder="asuka")


def test_callback_on_step_end_sees_and_replaces_latents(pipe):
    calls = []

    def callback(p, i, t, tensors):
        calls.append((i, tuple(tensors["latents"].shape), tuple(tensors["condition"].shape)))
        return {"latents": torch.zeros_like(tensors["latents"])}

    out = _run(pipe, _image(), _mask(), output_type="latent", callback_on_step_end=callback,
               callback_on_step_end_tensor_inputs=["latents", "condition"])
    assert [c[0] for c in calls] == list(range(STEPS)) and calls[0][1] == (1, 4, 32, 32)
    assert torch.equal(out, torch.zeros_like(out))


def test_pndm_scheduler_runs():
    pipe = tiny_pipeline(0, scheduler="pndm")
    out = _run(pipe, _image(), _mask())
    assert out.shape == (1, 3, 64, 64) and torch.isfinite(out).all()


# ------------------------------------------------------------------ checkpoints
def test_save_load_round_trip_gives_identical_outputs(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "p")
    index = json.loads((tmp_path / "p" / "model_index.json").read_text())
    assert index["_class_name"] == "AsukaInpaintPipeline"
    for name, cls in (("mae", "MAEPrior"), ("aligner", "AsukaAligner"), ("decoder", "MaskConditionedDecoder")):
        assert index[name] == ["asuka", cls]
    loaded = AsukaInpaintPipeline.from_pretrained(tmp_path / "p")
    loaded.set_progress_bar_config(disable=True)
    image, mask = _image(), _mask()
    assert torch.equal(_run(loaded, image, mask), _run(pipe, image, mask))
    assert torch.equal(_run(loaded, image, mask, prompt="x"), _run(pipe, image, mask, prompt="x"))


def test_optional_components_absent_round_trip(tmp_path):
    pipe = AsukaInpaintPipeline(**{**tiny_components(1), "decoder": None})
    pipe.save_pretrained(tmp_path / "p")
    loaded = AsukaInpaintPipeline.from_pretrained(tmp_path / "p")
    assert loaded.decoder is None and loaded.text_encoder is None


def test_incompatible_components_are_refused():
    from asuka.models.aligner import AsukaAligner

    components = tiny_components(0)
    components["aligner"] = AsukaAligner.from_preset("tiny", dim=16, head_dim=8)
    with pytest.raises(CheckpointError, match="cross_attention_dim is 32"):
        AsukaInpaintPipeline(**components)


def _save_sd_backbone(root, seed=0, text_encoder=True):
    """A tiny SD-1.5-inpainting diffusers folder (PNDM, as the real one)."""
    components = tiny_components(seed, text_encoder=text_encoder, scheduler="pndm")
    for name in ("unet", "vae", "scheduler", "text_encoder", "tokenizer"):
        if components[name] is not None:
            components[name].save_pretrained(root / name)
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionInpaintPipeline"}))
    return components


def test_from_sd_inpaint_loads_backbone_and_sets_null_condition(tmp_path):
    backbone = _save_sd_backbone(tmp_path / "sd")
    mine = tiny_components(5)
    pipe = AsukaInpaintPipeline.from_sd_inpaint(tmp_path / "sd", mae=mine["mae"], aligner=mine["aligner"],
                                                decoder=mine["decoder"])
    assert type(pipe.scheduler).__name__ == "PNDMScheduler"
    assert pipe.text_encoder is None and pipe.tokenizer is None
    for p, q in zip(pipe.unet.parameters(), backbone["unet"].parameters()):
        assert torch.equal(p, q)
    ids = backbone["tokenizer"]([""], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        empty = backbone["text_encoder"](ids)[0][0]
    assert pipe.aligner.null_condition.shape == (77, 32)
    torch.testing.assert_close(pipe.aligner.null_condition, empty)

    with_text = AsukaInpaintPipeline.from_sd_inpaint(tmp_path / "sd", mae=mine["mae"], aligner=mine["aligner"],
                                                     text_encoder=True)
    assert with_text.text_encoder is not None and with_text.decoder is None
    with_text.set_progress_bar_config(disable=True)
    # the "SD" baseline: the null condition is exactly SD with an empty prompt
    image, mask = _image(), _mask()
    torch.testing.assert_close(_run(with_text, image, mask, condition="null"),
                               _run(with_text, image, mask, prompt=""), atol=1e-5, rtol=0)


def test_from_sd_inpaint_missing_backbone_is_a_checkpoint_error(tmp_path):
    mine = tiny_components(0)
    with pytest.raises(CheckpointError, match="cannot load unet"):
        AsukaInpaintPipeline.from_sd_inpaint(tmp_path / "missing", mae=mine["mae"], aligner=mine["aligner"])


def test_golden_values(pipe):
    """A slice at a fixed seed (as diffusers' tests do), so drift that keeps the invariants is caught."""
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = _run(pipe, image, _mask(box=(16, 40, 20, 50)), seed=0)
    expected = torch.tensor([-0.0902, -0.4422, 0.8919, 0.2602, -0.8332, -1.0, 0.3085, 0.0545, 0.2536])
    torch.testing.assert_close(out[0, :, 25, 30:33].flatten(), expected, atol=2e-4, rtol=0)


# ------------------------------------------------------------------ crop default, large uint8 inputs
def test_crop_mode_is_the_default_and_full_image_asks_for_the_whole_image(pipe, working_shapes):
    image = _image(3, 100, 150)
    mask = torch.zeros(1, 1, 100, 150)
    mask[..., 40:50, 60:70] = 1
    seen = working_shapes(pipe)
    default = _run(pipe, image, mask)
    assert torch.equal(default, _run(pipe, image, mask, padding_mask_crop=64))
    assert seen[0] == (1, 3, 46, TINY_RESOLUTION)  # 100 x 138 around the hole (margin 64), longer side 64
    seen.clear()
    whole = _run(pipe, image, mask, full_image=True)
    assert seen == [(1, 3, 100, 150)]  # already multiples of the VAE factor 2
    assert torch.equal(whole, _run(pipe, image, mask, padding_mask_crop=None))
    assert not torch.equal(whole, default)


def test_uint8_inputs_are_converted_only_in_the_crop_region(pipe, monkeypatch):
    from asuka import io

    rng = np.random.default_rng(4)
    image_u8 = (rng.random((300, 400, 3)) * 255).astype(np.uint8)
    image_u8.setflags(write=False)  # the caller's array is neither copied whole nor written
    mask = np.zeros((300, 400), np.uint8)
    mask[100:110, 200:215] = 255
    expected = _run(pipe, torch.from_numpy(image_u8.copy()).permute(2, 0, 1).float() / 127.5 - 1, mask[None] > 0,
                    output_type="pil")[0]

    def whole_image_conversion(*args, **kwargs):
        raise AssertionError("the whole image was converted to float")

    monkeypatch.setattr(io, "image_to_tensor", whole_image_conversion)
    for given in (image_u8, PIL.Image.fromarray(image_u8), torch.from_numpy(image_u8.copy()).permute(2, 0, 1)):
        out = _run(pipe, given, PIL.Image.fromarray(mask), output_type="pil")[0]
        assert np.array_equal(np.asarray(out), np.asarray(expected))
        keep = mask == 0
        assert np.array_equal(np.asarray(out)[keep], image_u8[keep])


def test_given_latents_are_the_initial_noise(pipe):
    image, mask = _image(), _mask()
    noise = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(5))
    a = pipe(image, mask, STEPS, latents=noise, output_type="pt").images
    b = pipe(image, mask, STEPS, latents=noise.clone(), generator=torch.Generator().manual_seed(9),
             output_type="pt").images
    assert torch.equal(a, b)
    with pytest.raises(InputError, match="latents"):
        pipe(image, mask, STEPS, latents=torch.zeros(1, 4, 16, 16))


def test_fast_mask_paths_follow_the_io_rule():
    from asuka import io
    from asuka.pipeline_base import _as_bool_mask

    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    for given in (values, PIL.Image.fromarray(values), PIL.Image.fromarray(values).convert("1"),
                  (values > 200).astype(np.uint8)):
        assert torch.equal(_as_bool_mask(given), io.mask_to_tensor(given)[0] > 0.5)
