"""asuka.flux: the FLUX building blocks shared by inference and training, against diffusers' FluxFillPipeline."""

import pytest
import torch
from diffusers import FluxFillPipeline

from asuka import flux
from asuka.errors import InputError
from asuka.testing import tiny_flux_components


@pytest.fixture(scope="module")
def parts():
    return tiny_flux_components(0)


@pytest.fixture(scope="module")
def stock(parts):
    return FluxFillPipeline(scheduler=parts["scheduler"], vae=parts["vae"], text_encoder=None, tokenizer=None,
                            text_encoder_2=None, tokenizer_2=None, transformer=parts["transformer"])


def test_pack_unpack_round_trip_and_diffusers_layout(stock):
    x = torch.randn(2, 16, 8, 12)
    packed = flux.pack_latents(x)
    assert packed.shape == (2, 24, 64)
    assert torch.equal(packed, FluxFillPipeline._pack_latents(x, 2, 16, 8, 12))
    assert torch.equal(flux.unpack_latents(packed, 8, 12), x)
    assert torch.equal(flux.unpack_latents(packed, 8, 12), FluxFillPipeline._unpack_latents(packed, 64, 96, 8))
    with pytest.raises(InputError, match="even"):
        flux.pack_latents(torch.zeros(1, 16, 3, 4))


def test_ids_match_diffusers():
    ids = flux.latent_image_ids(8, 12)
    assert torch.equal(ids, FluxFillPipeline._prepare_latent_image_ids(1, 4, 6, "cpu", torch.float32))
    assert flux.text_ids(5).shape == (5, 3)


def test_vae_scaling_round_trip(parts):
    vae = parts["vae"]
    z = torch.randn(1, 16, 4, 4)
    torch.testing.assert_close(flux.latents_to_vae(vae, flux.vae_to_model(vae, z)), z)
    torch.testing.assert_close(flux.vae_to_model(vae, z), (z - 0.1159) * 0.3611)


def test_fill_condition_matches_diffusers(parts, stock):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 64, 96, generator=g) * 2 - 1
    mask = torch.zeros(2, 1, 64, 96)
    mask[0, :, 10:40, 20:70] = 1
    mask[1, :, 30:, :50] = 1
    with torch.no_grad():
        ours = flux.fill_condition(parts["vae"], image, mask)
        m, lat = stock.prepare_mask_latents(mask, image * (1 - mask), 2, 16, 1, 64, 96, torch.float32, "cpu",
                                            torch.Generator().manual_seed(1))
    assert ours.shape == (2, 24, 320)
    torch.testing.assert_close(ours, torch.cat([lat, m], dim=-1), atol=1e-5, rtol=0)
    # the mask channels: 8x8 space-to-depth, channel 8 dy + dx
    s2d = flux.mask_space_to_depth(mask, 8)
    assert torch.equal(s2d[:, 8 * 3 + 5], mask[:, 0, 3::8, 5::8])


def test_flux_condition_interpolates_from_the_null_tensors(parts):
    prior = torch.randn(3, 16, 32)
    clip, t5 = parts["clip_aligner"], parts["t5_aligner"]
    with torch.no_grad():
        vec, txt = flux.flux_condition(prior, clip, t5, condition_weight=0.25)
        full_vec, full_txt = flux.flux_condition(prior, clip, t5, condition_weight=1.0)
        vec0, txt0 = flux.null_condition(clip, t5, 3, num_tokens=16)
    assert vec.shape == (3, 24) and txt.shape == (3, 16, 32)
    torch.testing.assert_close(full_vec, clip(prior).mean(dim=1))
    torch.testing.assert_close(vec, vec0 + 0.25 * (full_vec - vec0))
    torch.testing.assert_close(txt, txt0 + 0.25 * (full_txt - txt0))
    zero_vec, _ = flux.flux_condition(prior, clip, t5, condition_weight=0.0)
    torch.testing.assert_close(zero_vec, clip.null_condition.expand(3, -1))


def test_schedule_matches_diffusers_fill(parts):
    sched = parts["scheduler"]
    ts = flux.set_flow_timesteps(sched, 4, 24).clone()
    import numpy as np
    from diffusers.pipelines.flux.pipeline_flux_fill import calculate_shift

    sched.set_timesteps(sigmas=np.linspace(1, 0.25, 4), mu=calculate_shift(24, 256, 4096, 0.5, 1.15))
    torch.testing.assert_close(ts, sched.timesteps)
