"""Architecture configs of the backbones, full size and tiny (no weights, no network).

* SD-1.5-inpainting: :func:`sd15_unet_config`, :func:`sd15_vae_config`, :func:`sd15_scheduler_config`
  (SD15_INPAINT.md); tiny: :func:`tiny_unet_config`, :func:`tiny_vae_config` (diffusers' test sizes).
* FLUX.1-Fill-dev: :func:`flux_fill_transformer_config`, :func:`flux_vae_config`,
  :func:`flux_scheduler_config` (ASUKA_FLUX.md section 4); tiny: :func:`tiny_flux_transformer_config`,
  :func:`tiny_flux_vae_config` (real packing: 16 latent channels, factor 8).

Build them with random weights for speed and memory measurements (the real weights cannot be
downloaded here), or for tests. Used by training presets, benchmarks and :mod:`asuka.testing`.
"""

from __future__ import annotations

#: Working resolution of the tiny pipeline: UNet sample_size 32 x VAE factor 2.
TINY_RESOLUTION = 64
#: Token width of the tiny condition (UNet cross_attention_dim).
TINY_CROSS_DIM = 32


# --------------------------------------------------------------------------------------------
# Full-size configs (facts from SD15_INPAINT.md)
# --------------------------------------------------------------------------------------------
def sd15_unet_config() -> dict:
    """``UNet2DConditionModel`` config of SD-1.5-inpainting (9 input channels, ~860M params)."""
    return dict(
        sample_size=64,
        in_channels=9,
        out_channels=4,
        center_input_sample=False,
        flip_sin_to_cos=True,
        freq_shift=0,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        downsample_padding=1,
        mid_block_scale_factor=1,
        act_fn="silu",
        norm_num_groups=32,
        norm_eps=1e-5,
        cross_attention_dim=768,
        attention_head_dim=8,
    )


def sd15_vae_config() -> dict:
    """``AutoencoderKL`` config of SD-1.5 (~84M params, factor 8, scaling 0.18215)."""
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        act_fn="silu",
        latent_channels=4,
        norm_num_groups=32,
        sample_size=512,
        scaling_factor=0.18215,
    )


def sd15_scheduler_config() -> dict:
    """SD-1.5's training noise schedule; valid for any diffusers scheduler's ``from_config``."""
    return dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


# --------------------------------------------------------------------------------------------
# Tiny components
# --------------------------------------------------------------------------------------------
def tiny_unet_config() -> dict:
    """The tiny 9-channel UNet diffusers' own inpainting tests use."""
    return dict(
        sample_size=32,
        in_channels=9,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TINY_CROSS_DIM,
        attention_head_dim=8,
        norm_num_groups=32,
    )


def tiny_vae_config() -> dict:
    """A tiny ``AutoencoderKL`` (factor 2, 4 latent channels)."""
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=TINY_RESOLUTION,
        scaling_factor=0.18215,
    )


#: Widths of the tiny FLUX condition: pooled projection (the clip aligner) and joint attention (t5).
TINY_FLUX_POOLED_DIM = 24
TINY_FLUX_JOINT_DIM = 32


def tiny_flux_transformer_config() -> dict:
    """A 2-layer ``FluxTransformer2DModel`` with FLUX-Fill's channel layout (384 in, 64 out)."""
    return dict(patch_size=1, in_channels=384, out_channels=64, num_layers=1, num_single_layers=1,
                attention_head_dim=16, num_attention_heads=2, joint_attention_dim=TINY_FLUX_JOINT_DIM,
                pooled_projection_dim=TINY_FLUX_POOLED_DIM, guidance_embeds=True, axes_dims_rope=(4, 4, 8))


def tiny_flux_vae_config() -> dict:
    """A 4-level, 16-channel ``AutoencoderKL`` (factor 8) with the FLUX VAE's scaling and shift."""
    return dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 8, 8),
                layers_per_block=1, latent_channels=16, norm_num_groups=4, sample_size=64,
                scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
                use_post_quant_conv=False, force_upcast=True)


def flux_scheduler_config() -> dict:
    """FLUX.1-Fill-dev's ``FlowMatchEulerDiscreteScheduler`` config."""
    return dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)


def flux_fill_transformer_config() -> dict:
    """FLUX.1-Fill-dev's ``FluxTransformer2DModel`` (11.9 B parameters, 23.8 GB in bf16)."""
    return dict(patch_size=1, in_channels=384, out_channels=64, num_layers=19, num_single_layers=38,
                attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
                pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56))


def flux_vae_config() -> dict:
    """The FLUX ``AutoencoderKL`` (16 latent channels, factor 8, 83.8 M parameters)."""
    return dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
                layers_per_block=2, latent_channels=16, norm_num_groups=32, sample_size=1024,
                scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
                use_post_quant_conv=False, force_upcast=True)
