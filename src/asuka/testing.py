"""Tiny random models for tests and examples (the architecture configs: :mod:`asuka.architectures`).

* :func:`tiny_components` / :func:`tiny_pipeline`: every component of
  :class:`~asuka.pipeline.AsukaInpaintPipeline` at toy size (64 px working resolution,
  32-d condition); a whole inference takes well under a second on a CPU. Weights are random
  but fixed by ``seed``.
* :func:`tiny_flux_components` / :func:`tiny_flux_pipeline`: the same for
  :class:`~asuka.pipeline_flux.AsukaFluxFillPipeline` (FLUX-Fill's real channel layout).
* the architecture configs (SD-1.5, FLUX.1-Fill, tiny) now live in :mod:`asuka.architectures`
  (production code uses them); they are re-exported here.

Nothing here touches the network.
"""

from __future__ import annotations

import torch

from asuka.architectures import (  # noqa: F401  (re-exported: the configs used to live here)
    TINY_CROSS_DIM, TINY_FLUX_JOINT_DIM, TINY_FLUX_POOLED_DIM, TINY_RESOLUTION, flux_scheduler_config,
    sd15_scheduler_config, sd15_unet_config, sd15_vae_config, tiny_flux_transformer_config, tiny_flux_vae_config,
    tiny_unet_config, tiny_vae_config)


def tiny_text_encoder(seed: int = 0):
    """A tiny CLIP text encoder (width 32) and a byte-level CLIP tokenizer (no merges, 77 tokens).

    Returns ``(text_encoder, tokenizer)``; built offline (no vocabulary download).
    """
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    # GPT-2 / CLIP byte-to-unicode alphabet: every byte is one symbol, so any text tokenizes.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes, extra = list(printable), 0
    for byte in range(256):
        if byte not in printable:
            codes.append(256 + extra)
            extra += 1
    symbols = [chr(c) for c in codes]
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)

    config = CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=TINY_CROSS_DIM, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(config).eval()
    return text_encoder, tokenizer


def tiny_components(seed: int = 0, *, text_encoder: bool = False, scheduler: str = "ddim") -> dict:
    """Every pipeline component at toy size, random weights fixed by ``seed``.

    MAE (``"tiny"`` preset: 32 px, 4x4 tokens of width 32), aligner (32 -> 32), UNet (9 channels,
    blocks (32, 64), cross_attention_dim 32, sample_size 32), AutoencoderKL (blocks (32, 64),
    factor 2), the ASUKA decoder initialised from that VAE, and a DDIM (``scheduler="ddim"``) or
    PNDM (``"pndm"``) scheduler with the SD-1.5 noise schedule. ``text_encoder=True`` adds a tiny
    CLIP text encoder and tokenizer. Every model is in eval mode, fp32, on the CPU.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, PNDMScheduler, UNet2DConditionModel

    from asuka.models.aligner import AsukaAligner
    from asuka.models.decoder import MaskConditionedDecoder
    from asuka.models.mae import MAEPrior

    if scheduler not in ("ddim", "pndm"):
        raise ValueError(f"scheduler must be 'ddim' or 'pndm', got {scheduler!r}")
    # Each model from its own seed, so adding a component never changes the others' weights.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mae = MAEPrior.from_preset("tiny")
        torch.manual_seed(seed + 1)
        aligner = AsukaAligner.from_preset("tiny", dim=TINY_CROSS_DIM)
        torch.manual_seed(seed + 2)
        unet = UNet2DConditionModel(**tiny_unet_config())
        torch.manual_seed(seed + 3)
        vae = AutoencoderKL(**tiny_vae_config())
    decoder = MaskConditionedDecoder.from_autoencoder_kl(vae, seed=seed + 4)
    if scheduler == "ddim":
        sampler = DDIMScheduler.from_config(sd15_scheduler_config())
    else:  # PLMS only, as the SD-1.5 repositories configure PNDM
        sampler = PNDMScheduler.from_config({**sd15_scheduler_config(), "skip_prk_steps": True})
    components = dict(
        mae=mae.eval(), aligner=aligner.eval(), unet=unet.eval(), vae=vae.eval(),
        scheduler=sampler, decoder=decoder.eval(),
        text_encoder=None, tokenizer=None,
    )
    if text_encoder:
        components["text_encoder"], components["tokenizer"] = tiny_text_encoder(seed + 5)
    return components


def tiny_pipeline(seed: int = 0, **kwargs):
    """A tiny :class:`~asuka.pipeline.AsukaInpaintPipeline` (see :func:`tiny_components`),
    progress bar off."""
    from asuka.pipeline import AsukaInpaintPipeline

    pipe = AsukaInpaintPipeline(**tiny_components(seed, **kwargs))
    pipe.set_progress_bar_config(disable=True)
    return pipe


# --------------------------------------------------------------------------------------------
# Tiny FLUX.1-Fill components (sizes of ASUKA_FLUX.md section 4: real packing, s = 8, C = 16)
# --------------------------------------------------------------------------------------------
def tiny_flux_components(seed: int = 0, *, text_encoder: bool = False) -> dict:
    """Every :class:`~asuka.pipeline_flux.AsukaFluxFillPipeline` component at toy size.

    MAE (``"tiny"``), clip aligner (32 -> 24) and t5 aligner (32 -> 32) with random non-zero
    null conditions (1 and 16 tokens), the tiny transformer and VAE above, the ASUKA decoder from
    that VAE, and the Fill-dev scheduler. The VAE's posterior is made near-deterministic
    (log-variance -30, std 3e-7) so that the posterior's mode (ours) and a sample (diffusers',
    the release's) agree to float error. ``text_encoder=True`` adds tiny CLIP (width 24) and
    "T5" (width 32) encoders with byte-level tokenizers. Eval mode, fp32, CPU.
    """
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    from asuka.models.aligner import AsukaAligner
    from asuka.models.decoder import MaskConditionedDecoder
    from asuka.models.mae import MAEPrior

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mae = MAEPrior.from_preset("tiny")
        torch.manual_seed(seed + 1)
        clip_aligner = AsukaAligner.from_preset("tiny", dim=TINY_FLUX_POOLED_DIM, head_dim=8)
        clip_aligner.set_null_condition(torch.randn(1, TINY_FLUX_POOLED_DIM))
        torch.manual_seed(seed + 2)
        t5_aligner = AsukaAligner.from_preset("tiny", dim=TINY_FLUX_JOINT_DIM)
        t5_aligner.set_null_condition(torch.randn(16, TINY_FLUX_JOINT_DIM))  # as many as the prior
        torch.manual_seed(seed + 3)
        transformer = FluxTransformer2DModel(**tiny_flux_transformer_config())
        torch.manual_seed(seed + 4)
        vae = AutoencoderKL(**tiny_flux_vae_config())
        with torch.no_grad():
            vae.encoder.conv_out.bias[vae.config.latent_channels:] = -30.0
    decoder = MaskConditionedDecoder.from_autoencoder_kl(vae, seed=seed + 5)
    components = dict(
        mae=mae.eval(), clip_aligner=clip_aligner.eval(), t5_aligner=t5_aligner.eval(),
        transformer=transformer.eval(), vae=vae.eval(),
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(flux_scheduler_config()), decoder=decoder.eval(),
        text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
    )
    if text_encoder:
        from transformers import CLIPTextConfig, CLIPTextModel

        te, tok = tiny_text_encoder(seed + 6)
        cfg = te.config.to_dict()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 7)
            clip = CLIPTextModel(CLIPTextConfig(**{**cfg, "hidden_size": TINY_FLUX_POOLED_DIM,
                                                   "projection_dim": TINY_FLUX_POOLED_DIM})).eval()
        components.update(text_encoder=clip, tokenizer=tok, text_encoder_2=tiny_t5_encoder(seed + 8),
                          tokenizer_2=tiny_text_encoder(seed + 6)[1])
    return components


def tiny_t5_encoder(seed: int = 0):
    """A tiny ``T5EncoderModel`` of width :data:`TINY_FLUX_JOINT_DIM` (vocabulary of the byte-level tokenizer)."""
    from transformers import T5Config, T5EncoderModel

    vocab = len(tiny_text_encoder(seed)[1].get_vocab())
    config = T5Config(vocab_size=vocab, d_model=TINY_FLUX_JOINT_DIM, d_kv=8, d_ff=37, num_layers=1,
                      num_heads=4, decoder_start_token_id=0, pad_token_id=vocab - 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return T5EncoderModel(config).eval()


def tiny_flux_pipeline(seed: int = 0, **kwargs):
    """A tiny :class:`~asuka.pipeline_flux.AsukaFluxFillPipeline` (see :func:`tiny_flux_components`),
    progress bar off."""
    from asuka.pipeline_flux import AsukaFluxFillPipeline

    pipe = AsukaFluxFillPipeline(**tiny_flux_components(seed, **kwargs))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def box_mask(h: int, w: int, box: tuple[int, int, int, int]) -> torch.Tensor:
    """``(1, 1, h, w)`` mask with the rectangle ``box = (y0, y1, x0, x1)`` as the hole (1)."""
    m = torch.zeros(1, 1, h, w)
    y0, y1, x0, x1 = box
    m[..., y0:y1, x0:x1] = 1
    return m


def run_seeded(pipe, image, mask, steps: int, seed: int = 0, **kwargs):
    """``pipe(image, mask, steps)`` with a fresh generator seeded ``seed``; ``output_type="pt"``
    unless given. Returns ``.images``."""
    kwargs.setdefault("output_type", "pt")
    return pipe(image, mask, steps, generator=torch.Generator().manual_seed(seed), **kwargs).images
