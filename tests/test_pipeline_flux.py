"""AsukaFluxFillPipeline on tiny random components (sizes of ASUKA_FLUX.md section 4, 2 steps at 64 x 96)."""

import json

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import FluxFillPipeline

from asuka import flux
from asuka.errors import CheckpointError, InputError
from asuka.pipeline_flux import AsukaFluxFillPipeline
from asuka.testing import box_mask, run_seeded, tiny_flux_components, tiny_flux_pipeline

STEPS = 2
H, W = 64, 96


@pytest.fixture(scope="module")
def pipe():
    return tiny_flux_pipeline(0)


def _image(seed=0, h=H, w=W, b=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g) * 2 - 1


def _mask(h=H, w=W, box=(10, 40, 20, 70)):
    return box_mask(h, w, box)


def _run(pipe, image, mask, seed=0, **kw):
    return run_seeded(pipe, image, mask, STEPS, seed, **kw)


def _noise(b=1, seed=3, h=H, w=W):
    return torch.randn(b, 16, h // 8, w // 8, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ against diffusers' FluxFillPipeline
def test_denoising_equals_stock_flux_fill_with_the_condition_as_embeddings(pipe):
    image, mask = torch.cat([_image(1), _image(2)]), torch.cat([_mask(), _mask(box=(0, 64, 0, 40))])
    noise = _noise(2)
    with torch.no_grad():
        pooled, txt = pipe.encode_condition(image, mask)
    stock = FluxFillPipeline(scheduler=pipe.scheduler, vae=pipe.vae, text_encoder=None, tokenizer=None,
                             text_encoder_2=None, tokenizer_2=None, transformer=pipe.transformer)
    stock.set_progress_bar_config(disable=True)
    kwargs = dict(image=(image + 1) / 2, mask_image=mask, height=H, width=W, num_inference_steps=STEPS,
                  prompt_embeds=txt, pooled_prompt_embeds=pooled, latents=flux.pack_latents(noise),
                  generator=torch.Generator().manual_seed(0))
    theirs = stock(output_type="latent", **kwargs).images
    ours = pipe(image, mask, STEPS, latents=noise, output_type="latent").images
    torch.testing.assert_close(flux.pack_latents(ours), theirs, atol=1e-5, rtol=0)
    # decoded with the FLUX VAE, not composited: the same pixels
    theirs_px = stock(output_type="pt", **kwargs).images
    ours_px = pipe(image, mask, STEPS, latents=noise, decoder="vae", composite=False, output_type="pt").images
    torch.testing.assert_close((ours_px + 1) / 2, theirs_px, atol=1e-5, rtol=0)
    # packed noise is accepted as well
    packed = pipe(image, mask, STEPS, latents=flux.pack_latents(noise), output_type="latent").images
    assert torch.equal(packed, ours)


def test_golden_values(pipe):
    """A slice at a fixed seed (as diffusers' tests do), so drift that keeps the invariants is caught."""
    out = _run(pipe, _image(0), _mask(), seed=0)
    expected = torch.tensor([-0.7144, -0.3138, -0.3254, -0.2631, 0.1096, 0.2151, -0.144, 0.2143, 0.0526])
    torch.testing.assert_close(out[0, :, 20, 30:33].flatten(), expected, atol=2e-4, rtol=0)


# ------------------------------------------------------------------ shapes, types, compositing
def test_output_types_and_known_pixels(pipe):
    image, mask = _image(), _mask()
    pt = _run(pipe, image, mask)
    assert pt.shape == (1, 3, H, W) and pt.dtype == torch.float32 and torch.isfinite(pt).all()
    assert torch.equal(pt * (1 - mask), image * (1 - mask))
    assert not torch.equal(pt * mask, image * mask)
    np_out = _run(pipe, image, mask, output_type="np")
    np.testing.assert_allclose(np_out[0], (pt[0].permute(1, 2, 0).numpy() + 1) / 2, atol=1e-6)
    image_u8 = (np.random.default_rng(0).random((H, W, 3)) * 255).astype(np.uint8)
    pil = _run(pipe, PIL.Image.fromarray(image_u8), mask, output_type="pil")[0]
    keep = mask[0, 0].numpy() == 0
    assert pil.size == (W, H) and np.array_equal(np.asarray(pil)[keep], image_u8[keep])
    assert _run(pipe, image, mask, output_type="latent").shape == (1, 16, H // 8, W // 8)
    raw = _run(pipe, image, mask, composite=False)
    assert torch.equal(raw * mask, pt * mask) and not torch.equal(raw * (1 - mask), image * (1 - mask))


def test_odd_sizes_are_padded_to_16(pipe):
    image, mask = _image(1, 50, 70), _mask(50, 70, (5, 30, 10, 40))
    out = _run(pipe, image, mask)
    assert out.shape == (1, 3, 50, 70) and torch.equal(out * (1 - mask), image * (1 - mask))
    with pytest.raises(InputError, match="multiple of 16"):
        _run(pipe, image, mask, height=40, width=72)


# ------------------------------------------------------------------ determinism, batching
def test_batch_equals_single_runs_and_decoding_is_batched(pipe):
    images = torch.cat([_image(1), _image(2)])
    masks = torch.cat([_mask(), _mask(box=(0, 30, 0, 96))])
    batch = pipe(images, masks, STEPS, output_type="pt",
                 generator=[torch.Generator().manual_seed(s) for s in (3, 4)]).images
    singles = [_run(pipe, images[i:i + 1], masks[i:i + 1], seed=s) for i, s in enumerate((3, 4))]
    torch.testing.assert_close(batch, torch.cat(singles), atol=1e-5, rtol=0)
    two = _run(pipe, _image(), _mask(), num_images_per_prompt=2)
    assert two.shape == (2, 3, H, W) and not torch.equal(two[0], two[1])


def test_all_hole_mask_gives_a_finite_result_without_touching_the_others(pipe):
    images = torch.cat([_image(1), _image(2)])
    masks = torch.cat([torch.ones(1, 1, H, W), _mask()])
    gens = [torch.Generator().manual_seed(s) for s in (5, 6)]
    out = pipe(images, masks, STEPS, generator=gens, output_type="pt").images
    assert torch.isfinite(out).all()
    # the release zeroes the whole batch's prior when one image is all hole; here the other is unaffected
    torch.testing.assert_close(out[1:], _run(pipe, images[1:], masks[1:], seed=6), atol=1e-5, rtol=0)


# ------------------------------------------------------------------ crop and whole-image modes
def test_crop_mode_works_around_the_hole(pipe, working_shapes):
    image = _image(3, 160, 240)
    mask = torch.zeros(1, 1, 160, 240)
    mask[..., 120:130, 200:212] = 1
    seen = working_shapes(pipe)
    out = _run(pipe, image, mask, padding_mask_crop=8, resolution=64)
    assert seen == [(1, 3, 64, 64)]
    assert out.shape == (1, 3, 160, 240) and torch.equal(out * (1 - mask), image * (1 - mask))
    seen.clear()
    _run(pipe, image, mask, full_image=True, height=64, width=96)
    assert seen == [(1, 3, 64, 96)]


def test_whole_image_mode_is_sized_as_the_release_demo(pipe):
    assert pipe.whole_image_size((768, 1024)) == (768, 1024)  # 0.79 MP: in range, multiples of 32
    assert pipe.whole_image_size((500, 700)) == (608, 832)  # 0.35 MP: up to 0.5 MP
    assert pipe.whole_image_size((3000, 4000)) == (1216, 1632)  # 12 MP: down to 2 MP
    assert pipe.whole_image_size((64, 96)) == (576, 864)


# ------------------------------------------------------------------ conditions, decoders, options
def test_conditions_and_weight(pipe):
    image, mask = _image(), _mask()
    noise = _noise()
    null = pipe(image, mask, STEPS, latents=noise, condition="null", output_type="pt").images
    w0 = pipe(image, mask, STEPS, latents=noise, condition_weight=0.0, output_type="pt").images
    torch.testing.assert_close(w0, null, atol=1e-5, rtol=0)
    prior = pipe(image, mask, STEPS, latents=noise, output_type="pt").images
    assert not torch.allclose(prior, null, atol=1e-4)
    with pytest.raises(InputError, match="text encoder"):
        _run(pipe, image, mask, prompt="a cat")
    assert not torch.equal(_run(pipe, image, mask, decoder="vae"), _run(pipe, image, mask))


def test_text_baseline_equals_stock_flux_fill_with_the_prompt():
    pipe = tiny_flux_pipeline(0, text_encoder=True)
    image, mask, noise = _image(), _mask(), _noise()
    stock = FluxFillPipeline(scheduler=pipe.scheduler, vae=pipe.vae, text_encoder=pipe.text_encoder,
                             tokenizer=pipe.tokenizer, text_encoder_2=pipe.text_encoder_2,
                             tokenizer_2=pipe.tokenizer_2, transformer=pipe.transformer)
    stock.set_progress_bar_config(disable=True)
    theirs = stock(prompt="a red door", image=(image + 1) / 2, mask_image=mask, height=H, width=W,
                   num_inference_steps=STEPS, latents=flux.pack_latents(noise), output_type="latent").images
    ours = pipe(image, mask, STEPS, prompt="a red door", latents=noise, output_type="latent").images
    torch.testing.assert_close(flux.pack_latents(ours), theirs, atol=1e-5, rtol=0)


def test_callback_sees_and_replaces_latents(pipe):
    calls = []

    def callback(p, i, t, tensors):
        calls.append((i, tuple(tensors["latents"].shape), tuple(tensors["pooled"].shape)))
        return {"latents": torch.zeros_like(tensors["latents"])}

    out = _run(pipe, _image(), _mask(), output_type="latent", callback_on_step_end=callback,
               callback_on_step_end_tensor_inputs=["latents", "pooled"])
    assert [c[0] for c in calls] == [0, 1] and calls[0][1:] == ((1, 24, 64), (1, 24))
    assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("kwargs, message", [
    (dict(condition="clip"), "condition"), (dict(decoder="gan"), "decoder"), (dict(output_type="jpg"), "output_type"),
    (dict(guidance_scale=float("inf")), "guidance_scale"), (dict(latents=torch.zeros(1, 16, 4, 4)), "latents"),
])
def test_bad_options_raise_input_error(pipe, kwargs, message):
    with pytest.raises(InputError, match=message):
        _run(pipe, _image(), _mask(), **kwargs)


def test_incompatible_components_are_refused():
    from asuka.models.aligner import AsukaAligner

    parts = tiny_flux_components(0)
    parts["clip_aligner"] = AsukaAligner.from_preset("tiny", dim=32)
    with pytest.raises(CheckpointError, match="pooled_projection_dim is 24"):
        AsukaFluxFillPipeline(**parts)


# ------------------------------------------------------------------ checkpoints
def test_save_load_round_trip_gives_identical_outputs(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "p")
    index = json.loads((tmp_path / "p" / "model_index.json").read_text())
    assert index["_class_name"] == "AsukaFluxFillPipeline"
    for name, cls in (("mae", "MAEPrior"), ("clip_aligner", "AsukaAligner"), ("t5_aligner", "AsukaAligner"),
                      ("decoder", "MaskConditionedDecoder")):
        assert index[name] == ["asuka", cls]
    from asuka.pipeline import load_pipeline

    loaded = load_pipeline(tmp_path / "p", device="cpu")
    assert isinstance(loaded, AsukaFluxFillPipeline)
    loaded.set_progress_bar_config(disable=True)
    assert torch.equal(loaded.t5_aligner.null_condition, pipe.t5_aligner.null_condition)
    # (the same weights; loaded tensors differ in memory layout only: float-error agreement)
    torch.testing.assert_close(_run(loaded, _image(), _mask()), _run(pipe, _image(), _mask()), atol=1e-5, rtol=0)


def test_one_call_signature_for_both_backbones_with_their_defaults(pipe):
    import inspect

    from asuka.pipeline import AsukaInpaintPipeline

    assert AsukaFluxFillPipeline.__call__ is AsukaInpaintPipeline.__call__  # the shared edges
    assert (pipe.default_condition_weight, pipe.default_guidance_scale) == (0.5, 30.0)
    image, mask, noise = _image(), _mask(), _noise()
    default = pipe(image, mask, STEPS, latents=noise, output_type="latent").images
    explicit = pipe(image, mask, STEPS, latents=noise, condition_weight=0.5, guidance_scale=30.0,
                    output_type="latent").images
    assert torch.equal(default, explicit)
    with pytest.raises(InputError, match="negative_prompt"):
        _run(pipe, image, mask, negative_prompt="blurry")
    with pytest.raises(InputError, match="unknown options"):
        _run(pipe, image, mask, eta=0.5)
    # every component the offload sequence names exists
    assert set(pipe.model_cpu_offload_seq.split("->")) <= set(inspect.signature(AsukaFluxFillPipeline).parameters)


def test_vae_tiling_runs_and_keeps_the_known_pixels():
    pipe = tiny_flux_pipeline(0)
    pipe.enable_vae_tiling()  # tiles of the tiny VAE's sample_size (64 px): a 64 x 96 input is tiled
    image, mask = _image(), _mask()
    out = _run(pipe, image, mask, decoder="vae")
    assert out.shape == (1, 3, H, W) and torch.isfinite(out).all()
    assert torch.equal(out * (1 - mask), image * (1 - mask))
    pipe.disable_vae_tiling()
    assert not pipe.vae.use_tiling
