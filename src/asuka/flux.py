"""Building blocks of ASUKA on FLUX.1-Fill-dev, shared by inference and training.

:class:`~asuka.pipeline_flux.AsukaFluxFillPipeline` and the FLUX training stages build the
transformer's condition and input with these functions only, so the two cannot drift.

* :func:`flux_condition` -- MAE prior -> (pooled ``vec`` ``(B, 768)``, ``txt`` ``(B, 256, 4096)``)
  through the clip and t5 aligners, interpolated from their null conditions:
  ``vec0 + w (vec - vec0)`` (the release's ``condition_weight``, 0.5).
* :func:`pack_latents` / :func:`unpack_latents` -- ``(B, C, h, w)`` <-> the transformer's
  2x2-patch tokens ``(B, h/2 * w/2, 4C)``.
* :func:`encode_latents` / :func:`latents_to_vae` -- the FLUX VAE's shift and scaling
  ``z_model = scaling * (z_vae - shift)`` and back.
* :func:`fill_condition` -- the transformer's fill input
  ``[packed latents of image * (1 - mask) | packed 8x8 space-to-depth mask]``, ``(B, L, 4C + 4 s^2)``.
* :func:`latent_image_ids`, :func:`text_ids`, :func:`set_flow_timesteps`,
  :func:`predict_velocity` -- the rest of one transformer call, as diffusers' ``FluxFillPipeline``
  and the release make it.

Shapes at full size (FLUX VAE: 16 channels, factor ``s = 8``): an ``H x W`` image has
``h, w = H/8, W/8`` latents, ``L = (H/16)(W/16)`` tokens of 64 channels; the fill condition has
``64 + 256 = 320`` channels, the transformer input ``384``. ``H`` and ``W`` must be multiples
of ``2 s = 16``.
"""

from __future__ import annotations

import numpy as np
import torch

from asuka.errors import InputError

#: The release's ``--condition_weight`` default (``vec0 + w (vec - vec0)``), also hard-coded in its demo.
DEFAULT_CONDITION_WEIGHT = 0.5
#: FLUX.1-Fill-dev's distilled guidance, as the release and diffusers use it.
DEFAULT_GUIDANCE = 30.0


# --------------------------------------------------------------------------------------------
# Condition: MAE prior -> aligners -> (vec, txt)
# --------------------------------------------------------------------------------------------
def interpolate_condition(aligned: torch.Tensor, null: torch.Tensor, weight: float) -> torch.Tensor:
    """``null + weight * (aligned - null)``: 0 = the null condition, 1 = the aligned prior."""
    if weight == 1.0:
        return aligned
    return null + weight * (aligned - null)


def flux_condition(prior: torch.Tensor, clip_aligner, t5_aligner, *,
                   condition_weight: float = DEFAULT_CONDITION_WEIGHT) -> tuple[torch.Tensor, torch.Tensor]:
    """The transformer's condition from the MAE prior.

    Args:
        prior: ``(B, T, in_dim)``, the MAE prior (``MAEPrior.prior``; 256 x 512 at full size).
        clip_aligner: :class:`~asuka.models.aligner.AsukaAligner` to the pooled projection width
            (768); its null condition is the release's ``ckpt/vec.pt`` (one token).
        t5_aligner: aligner to the T5 width (4096); null: ``ckpt/txt_256.pt`` (256 tokens).
        condition_weight: ``w`` of the null interpolation (the release's default 0.5).

    Returns:
        ``(pooled, txt)``: ``(B, clip_dim)`` -- the mean over the clip aligner's tokens -- and
        ``(B, T, t5_dim)``, in the aligners' dtype.
    """
    batch = prior.shape[0]
    vec = clip_aligner(prior).mean(dim=1)  # (B, 768)
    txt = t5_aligner(prior)  # (B, T, 4096)
    vec0 = clip_aligner.null(batch)[:, 0].to(vec)  # (B, 768): the first (only) null token
    txt0 = t5_aligner.null(batch, num_tokens=txt.shape[1]).to(txt)
    return (interpolate_condition(vec, vec0, condition_weight),
            interpolate_condition(txt, txt0, condition_weight))


def null_condition(clip_aligner, t5_aligner, batch: int, num_tokens: int | None = None):
    """``(vec0 (B, clip_dim), txt0 (B, T, t5_dim))``: the condition of FLUX-Fill with an empty prompt."""
    return clip_aligner.null(batch)[:, 0], t5_aligner.null(batch, num_tokens=num_tokens)


# --------------------------------------------------------------------------------------------
# Latents: packing, VAE scaling and shift
# --------------------------------------------------------------------------------------------
def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """``(B, C, h, w)`` -> ``(B, h/2 * w/2, 4C)``: 2x2 patches, channel order ``(c, dy, dx)``."""
    b, c, h, w = latents.shape
    if h % 2 or w % 2:
        raise InputError(f"pack_latents: latent height and width must be even, got {h}x{w}")
    x = latents.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), 4 * c)


def unpack_latents(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(B, h/2 * w/2, 4C)`` -> ``(B, C, h, w)``, the inverse of :func:`pack_latents`
    (``height``, ``width``: the latent size ``h, w``)."""
    b, n, c4 = tokens.shape
    if height % 2 or width % 2 or n != (height // 2) * (width // 2) or c4 % 4:
        raise InputError(f"unpack_latents: {tuple(tokens.shape)} tokens do not fit latents of {height}x{width}")
    x = tokens.reshape(b, height // 2, width // 2, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c4 // 4, height, width)


def vae_factor(vae) -> int:
    """Pixels per latent pixel (8 for the FLUX VAE)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def _shift(vae) -> float:
    shift = getattr(vae.config, "shift_factor", None)
    return 0.0 if shift is None else float(shift)


def vae_to_model(vae, z: torch.Tensor) -> torch.Tensor:
    """VAE latents -> the transformer's: ``scaling * (z - shift)``."""
    return (z - _shift(vae)) * vae.config.scaling_factor


def latents_to_vae(vae, latents: torch.Tensor) -> torch.Tensor:
    """The transformer's latents -> what the VAE (or ASUKA's decoder) decodes: ``x / scaling + shift``."""
    return latents / vae.config.scaling_factor + _shift(vae)


def encode_latents(vae, image: torch.Tensor, *, sample: bool = False,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """``(B, 3, H, W)`` in ``[-1, 1]`` -> scaled, shifted latents ``(B, C, H/s, W/s)``.

    ``sample=False`` takes the posterior's mode (deterministic; inference); ``sample=True``
    draws from it with ``generator`` (the release samples, from the global RNG).
    """
    posterior = vae.encode(image.to(vae.dtype)).latent_dist
    z = posterior.sample(generator) if sample else posterior.mode()
    return vae_to_model(vae, z)


def mask_space_to_depth(mask: torch.Tensor, factor: int) -> torch.Tensor:
    """``(B, 1, H, W)`` -> ``(B, factor**2, H/factor, W/factor)``, channel ``factor * dy + dx``."""
    b, _, h, w = mask.shape
    if h % factor or w % factor:
        raise InputError(f"mask_space_to_depth: mask size {h}x{w} is not a multiple of {factor}")
    x = mask.reshape(b, h // factor, factor, w // factor, factor).permute(0, 2, 4, 1, 3)
    return x.reshape(b, factor * factor, h // factor, w // factor)


def fill_condition(vae, image: torch.Tensor, mask: torch.Tensor, *, sample: bool = False,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """FLUX-Fill's extra input: ``[pack(latents of image * (1 - mask)) | pack(s2d(mask))]``.

    Args:
        vae: the FLUX ``AutoencoderKL`` (its encoder; ``vae.enable_tiling()`` applies).
        image: ``(B, 3, H, W)`` in ``[-1, 1]``; mask: ``(B, 1, H, W)`` in ``[0, 1]``, 1 = hole,
            ``H, W`` multiples of ``2 * vae_factor(vae)``.
        sample, generator: see :func:`encode_latents`.

    Returns:
        ``(B, L, 4C + 4 s^2)`` (``(B, L, 320)`` at full size) in the VAE's dtype.
    """
    s = vae_factor(vae)
    h, w = image.shape[-2:]
    if h % (2 * s) or w % (2 * s):
        raise InputError(f"fill_condition: image size {h}x{w} must be a multiple of {2 * s}")
    mask = mask.to(image.dtype)
    latents = encode_latents(vae, image * (1.0 - mask), sample=sample, generator=generator)
    mask_tokens = pack_latents(mask_space_to_depth(mask, s)).to(latents.dtype)
    return torch.cat([pack_latents(latents), mask_tokens], dim=-1)


# --------------------------------------------------------------------------------------------
# One transformer call
# --------------------------------------------------------------------------------------------
def latent_image_ids(latent_height: int, latent_width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``(L, 3)`` position ids ``[0, row, col]`` of the packed token grid (``h/2 x w/2``)."""
    rows, cols = latent_height // 2, latent_width // 2
    ids = torch.zeros(rows, cols, 3)
    ids[..., 1] = torch.arange(rows)[:, None]
    ids[..., 2] = torch.arange(cols)[None, :]
    return ids.reshape(rows * cols, 3).to(device=device, dtype=dtype)


def text_ids(num_tokens: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``(T, 3)`` zeros: the text tokens' position ids."""
    return torch.zeros(num_tokens, 3, device=device, dtype=dtype)


def flow_shift(scheduler, image_seq_len: int) -> float:
    """``mu`` of the resolution-dependent schedule shift, from the scheduler's config (as FLUX)."""
    cfg = scheduler.config
    base_len, max_len = cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096)
    base, top = cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15)
    slope = (top - base) / (max_len - base_len)
    return image_seq_len * slope + base - slope * base_len


def set_flow_timesteps(scheduler, num_inference_steps: int, image_seq_len: int, device=None) -> torch.Tensor:
    """Set a ``FlowMatchEulerDiscreteScheduler`` to FLUX's schedule: sigmas ``linspace(1, 1/N, N)``,
    shifted by :func:`flow_shift` when the config uses dynamic shifting. Returns the timesteps
    (``1000 * sigma``)."""
    sigmas = np.linspace(1.0, 1.0 / num_inference_steps, num_inference_steps)
    kwargs = {"mu": flow_shift(scheduler, image_seq_len)} if scheduler.config.get("use_dynamic_shifting") else {}
    scheduler.set_timesteps(sigmas=sigmas, device=device, **kwargs)
    return scheduler.timesteps


def predict_velocity(transformer, latents: torch.Tensor, fill: torch.Tensor, timestep: torch.Tensor, *,
                     pooled: torch.Tensor, txt: torch.Tensor, img_ids: torch.Tensor,
                     guidance: float | torch.Tensor | None = DEFAULT_GUIDANCE) -> torch.Tensor:
    """The FLUX-Fill transformer's velocity for packed noisy ``latents`` ``(B, L, 4C)``.

    Args:
        fill: :func:`fill_condition`'s output ``(B, L, ...)``, concatenated after the latents.
        timestep: ``(B,)`` or a scalar, the flow time in ``[0, 1]`` (1 = pure noise).
        pooled, txt: the condition (:func:`flux_condition`, or FLUX's own CLIP and T5 embeddings).
        img_ids: :func:`latent_image_ids`.
        guidance: the distilled guidance value (ignored when the transformer has no guidance embedding).
    """
    dtype = transformer.dtype
    batch = latents.shape[0]
    t = torch.as_tensor(timestep, device=latents.device, dtype=dtype).reshape(-1).expand(batch)
    g = None
    if transformer.config.guidance_embeds and guidance is not None:
        g = torch.as_tensor(guidance, device=latents.device, dtype=torch.float32).reshape(-1).expand(batch)
    return transformer(
        hidden_states=torch.cat([latents, fill], dim=-1).to(dtype), timestep=t, guidance=g,
        pooled_projections=pooled.to(dtype), encoder_hidden_states=txt.to(dtype),
        txt_ids=text_ids(txt.shape[1], latents.device, dtype), img_ids=img_ids.to(latents.device, dtype),
        return_dict=False)[0]
