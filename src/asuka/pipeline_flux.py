"""ASUKA on FLUX.1-Fill-dev (the official release's weights) as a diffusers ``DiffusionPipeline``.

The data flow, one step per helper (:meth:`AsukaFluxFillPipeline.inpaint`)::

    image + mask -> MAE prior -> clip and t5 aligners (vec0 + w (vec - vec0), txt likewise)
                 -> frozen FLUX.1-Fill transformer (flow-matching Euler loop, distilled guidance 30)
                 -> mask-conditioned decoder (z = 16) -> composite of the known pixels

The condition and the transformer input are built with :mod:`asuka.flux`, the functions the
FLUX training stages use too. The edges (crop around the hole, batching, pasting back, output
formats) are :mod:`asuka.pipeline_base`'s, shared with the SD-1.5 pipeline. Differences from the
release's ``log_validation`` / demo, on purpose: masks are binarised at 0.5; an all-hole mask
gives a finite prior for that image instead of zeroing the whole batch's prior; the masked
image's latent is the VAE posterior's mode, not a sample; the known pixels are composited back
(``composite=False`` for the raw output). docs/FLUX.md has the measured agreement.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
from diffusers.utils.torch_utils import randn_tensor

from asuka import flux
from asuka.errors import CheckpointError, InputError
from asuka.models.aligner import AsukaAligner
from asuka.models.decoder import MaskConditionedDecoder
from asuka.models.mae import MAEPrior
from asuka.pipeline_base import (AsukaPipelineBase, cast_floating, component, first_line,
                                 load_or_explain, shared_problems)

DEFAULT_FLUX = "black-forest-labs/FLUX.1-Fill-dev"
DEFAULT_ASUKA = "yikaiwang/ASUKA-FLUX.1-Fill"
#: the release's files, looked up at the top of the ``asuka`` folder / repo, then under ``ckpt/``
RELEASE_FILES = {"mae": "mae_300.pth", "clip_aligner": "asuka_alignment_clip.pt",
                 "t5_aligner": "asuka_alignment_t5.pt", "decoder": "asuka_decoder.ckpt",
                 "vec": "vec.pt", "txt": "txt_256.pt"}
#: the release demo's whole-image sizing: 0.5 to 2 megapixels, sides multiples of 32
DEMO_MEGAPIXELS = (0.5, 2.0)
DEMO_MULTIPLE = 32


class AsukaFluxFillPipeline(AsukaPipelineBase):
    """ASUKA: MAE prior + clip/t5 aligners on a frozen FLUX.1-Fill-dev transformer, decoded by a
    mask-conditioned decoder.

    Components:
        mae (:class:`~asuka.models.mae.MAEPrior`): prior from the visible pixels.
        clip_aligner, t5_aligner (:class:`~asuka.models.aligner.AsukaAligner`): prior -> the
            pooled projection (768, as a mean over tokens) and the T5 tokens (256 x 4096); each
            holds its null condition (the release's ``ckpt/vec.pt``, ``ckpt/txt_256.pt``).
        transformer (``FluxTransformer2DModel``): FLUX.1-Fill-dev's, frozen (384 -> 64 channels).
        vae (``AutoencoderKL``): the 16-channel FLUX VAE; its encoder makes the fill condition,
            its decoder runs for ``decoder="vae"`` or when no ASUKA decoder is loaded.
        scheduler (``FlowMatchEulerDiscreteScheduler``): Fill-dev's config.
        decoder (:class:`~asuka.models.decoder.MaskConditionedDecoder`, optional, z = 16).
        text_encoder, tokenizer (CLIP), text_encoder_2, tokenizer_2 (T5), optional: the
            FLUX-Fill text baseline (``prompt=...``), loaded only for it.
    """

    model_cpu_offload_seq = "text_encoder->text_encoder_2->mae->clip_aligner->t5_aligner->vae->transformer->decoder"
    _optional_components = ["decoder", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"]
    _callback_tensor_inputs = ["latents", "fill", "pooled", "txt"]
    _text_encoder_hint = "load the pipeline with AsukaFluxFillPipeline.from_official(..., text_encoder=True)"
    cuda_dtype = torch.bfloat16
    default_condition_weight = flux.DEFAULT_CONDITION_WEIGHT  # 0.5, as released
    default_guidance_scale = flux.DEFAULT_GUIDANCE  # 30, FLUX.1-Fill-dev's distilled guidance
    supports_negative_prompt = False

    def __init__(
        self,
        mae: MAEPrior,
        clip_aligner: AsukaAligner,
        t5_aligner: AsukaAligner,
        transformer: FluxTransformer2DModel,
        vae: AutoencoderKL,
        scheduler: FlowMatchEulerDiscreteScheduler,
        decoder: MaskConditionedDecoder | None = None,
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        default_steps: int | None = None,
        default_resolution: int | None = None,
        default_poisson_blend: float | None = None,
    ):
        super().__init__()
        _check_compatible(mae, clip_aligner, t5_aligner, transformer, vae, decoder, text_encoder, text_encoder_2)
        self.register_modules(mae=mae, clip_aligner=clip_aligner, t5_aligner=t5_aligner, transformer=transformer,
                              vae=vae, scheduler=scheduler, decoder=decoder, text_encoder=text_encoder,
                              tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2)
        self.register_defaults(default_steps, default_resolution, default_poisson_blend)

    @property
    def size_multiple(self) -> int:
        """16: the VAE factor times FLUX's 2x2 packing."""
        return 2 * self.vae_scale_factor

    @property
    def native_resolution(self) -> int:
        """1024 px, FLUX.1's native resolution."""
        return 1024

    def whole_image_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """The release demo's sizing: 0.5 to 2 megapixels (aspect kept), sides multiples of 32."""
        h, w = int(size[0]), int(size[1])
        lo, hi = DEMO_MEGAPIXELS
        mp = h * w / 1e6
        scale = 1.0 if lo <= mp <= hi else math.sqrt((lo if mp < lo else hi) / mp)
        return (max(DEMO_MULTIPLE, DEMO_MULTIPLE * round(h * scale / DEMO_MULTIPLE)),
                max(DEMO_MULTIPLE, DEMO_MULTIPLE * round(w * scale / DEMO_MULTIPLE)))

    def has_text_encoder(self) -> bool:
        return all(x is not None for x in (self.text_encoder, self.tokenizer, self.text_encoder_2, self.tokenizer_2))

    # ---------------------------------------------------------------------------- memory
    def enable_vae_tiling(self) -> None:
        """Tile the VAE (the fill condition's encoder, and ``decoder="vae"``) for large images."""
        self.vae.enable_tiling()

    def disable_vae_tiling(self) -> None:
        self.vae.disable_tiling()

    # ========================================================================================
    # The method: steps 1-5 on a working batch
    # ========================================================================================
    @torch.no_grad()
    def inpaint(
        self,
        image: torch.Tensor,
        mask: torch.Tensor,
        *,
        num_inference_steps: int = 50,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        condition: str = "prior",
        condition_weight: float = flux.DEFAULT_CONDITION_WEIGHT,
        prompt: list[str] | None = None,
        negative_prompt: list[str] | None = None,
        guidance_scale: float = flux.DEFAULT_GUIDANCE,
        decoder: str = "asuka",
        output_latents: bool = False,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: tuple[str, ...] = ("latents",),
    ) -> torch.Tensor:
        """ASUKA-FLUX on tensors that are already at the working size.

        Args:
            image: ``(B, 3, H, W)`` in ``[-1, 1]``, ``H`` and ``W`` multiples of 16.
            mask: ``(B, 1, H, W)`` in ``{0, 1}``, 1 = hole.
            negative_prompt: not used (FLUX.1-Fill-dev is guidance-distilled: no negative branch).
            (other arguments: see :meth:`__call__`)

        Returns:
            ``(B, 3, H, W)`` float32 in ``[-1, 1]`` -- the decoder's output, not composited --
            or the final latents ``(B, 16, H/8, W/8)`` (scaled, unpacked) when ``output_latents``.
        """
        device = self._execution_device
        image = image.to(device=device, dtype=torch.float32)
        mask = mask.to(device=device, dtype=torch.float32)
        latent_size = (image.shape[-2] // self.vae_scale_factor, image.shape[-1] // self.vae_scale_factor)

        # 1. MAE prior from the visible pixels, 2. the clip and t5 aligners, interpolated from
        #    their null conditions (or FLUX-Fill's null / text condition): (B, 768), (B, 256, 4096).
        pooled, txt = self.encode_condition(image, mask, condition=condition, condition_weight=condition_weight,
                                            prompt=prompt)
        # 3. The fill input: packed latents of the masked image + the 8x8 space-to-depth mask.
        fill = flux.fill_condition(self.vae, image, mask).to(self.transformer.dtype)
        # 4. Denoise with the frozen FLUX-Fill transformer.
        latents = self.denoise(fill, pooled, txt, latent_size=latent_size, guidance_scale=guidance_scale,
                               num_inference_steps=num_inference_steps, generator=generator, latents=latents,
                               callback_on_step_end=callback_on_step_end,
                               callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs)
        if output_latents:
            return flux.unpack_latents(latents, *latent_size)
        # 5. Decode with the mask-conditioned decoder (it also sees the masked image and mask).
        return self.decode_latents(latents, image, mask, decoder=decoder)
        # 6. (compositing the known pixels back happens at the original resolution, in __call__)

    # ---------------------------------------------------------------------------- step 1, 2
    def encode_text(self, prompts: list[str], max_sequence_length: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
        """FLUX's own condition for ``prompts``: CLIP's pooled output ``(B, 768)`` and T5's last
        hidden state ``(B, max_sequence_length, 4096)`` (as diffusers' FluxFillPipeline)."""
        if not self.has_text_encoder():
            raise InputError(f"a text condition needs FLUX's text encoders and tokenizers; {self._text_encoder_hint}")
        prompts = list(prompts)
        clip_ids = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                                  truncation=True, return_tensors="pt").input_ids
        pooled = self.text_encoder(clip_ids.to(self.text_encoder.device), output_hidden_states=False).pooler_output
        t5_ids = self.tokenizer_2(prompts, padding="max_length", max_length=max_sequence_length, truncation=True,
                                  return_tensors="pt").input_ids
        txt = self.text_encoder_2(t5_ids.to(self.text_encoder_2.device), output_hidden_states=False)[0]
        return pooled, txt

    def encode_condition(self, image, mask, *, condition="prior", condition_weight=flux.DEFAULT_CONDITION_WEIGHT,
                         prompt=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Steps 1-2: ``(pooled (B, D_clip), txt (B, T, D_t5))`` in the transformer's dtype.

        ``"prior"``: :func:`asuka.flux.flux_condition` (the release's ``vec0 + w (vec - vec0)``);
        ``"null"``: the aligners' null conditions (FLUX-Fill with an empty prompt); ``"text"``:
        FLUX's CLIP and T5 on ``prompt`` (the FLUX-Fill baseline).
        """
        batch, dtype = image.shape[0], self.transformer.dtype
        if condition == "prior":
            pooled, txt = flux.flux_condition(self.encode_prior(image, mask), self.clip_aligner, self.t5_aligner,
                                              condition_weight=condition_weight)
        elif condition == "null":
            pooled, txt = flux.null_condition(self.clip_aligner, self.t5_aligner, batch)
        else:
            pooled, txt = self.encode_text(prompt)
        return pooled.to(image.device, dtype), txt.to(image.device, dtype)

    # ---------------------------------------------------------------------------- step 4
    def denoise(self, fill, pooled, txt, *, latent_size, guidance_scale=flux.DEFAULT_GUIDANCE,
                num_inference_steps=50, generator=None, latents=None, callback_on_step_end=None,
                callback_on_step_end_tensor_inputs=("latents",)) -> torch.Tensor:
        """Step 4: FLUX's flow-matching Euler loop -> packed latents ``(B, L, 4C)``.

        The initial noise is ``randn(B, C, h, w)`` in the transformer's dtype, packed (as the
        release's ``get_noise``); ``latents`` replaces it, packed ``(B, L, 4C)`` or not.
        """
        device, dtype = fill.device, self.transformer.dtype
        h, w = latent_size
        channels = self.vae.config.latent_channels
        shape = (fill.shape[0], channels, h, w)
        if latents is None:
            latents = flux.pack_latents(randn_tensor(shape, generator=generator, device=device, dtype=dtype))
        else:
            if latents.ndim == 4 and tuple(latents.shape) == shape:
                latents = flux.pack_latents(latents)
            if tuple(latents.shape) != (shape[0], fill.shape[1], 4 * channels):
                raise InputError(f"latents: expected {shape} or packed {(shape[0], fill.shape[1], 4 * channels)} "
                                 f"for the working size {h * self.vae_scale_factor}x{w * self.vae_scale_factor}, "
                                 f"got {tuple(latents.shape)}")
            latents = latents.to(device=device, dtype=dtype)
        img_ids = flux.latent_image_ids(h, w, device, dtype)
        timesteps = flux.set_flow_timesteps(self.scheduler, num_inference_steps, latents.shape[1], device)
        for i, t in enumerate(self.progress_bar(timesteps)):
            velocity = flux.predict_velocity(self.transformer, latents, fill, t / 1000, pooled=pooled, txt=txt,
                                             img_ids=img_ids, guidance=guidance_scale)
            latents = self.scheduler.step(velocity, t, latents, return_dict=False)[0]
            if callback_on_step_end is not None:
                named = {"latents": latents, "fill": fill, "pooled": pooled, "txt": txt}
                out = callback_on_step_end(self, i, t, {k: named[k] for k in callback_on_step_end_tensor_inputs})
                latents = (out or {}).get("latents", latents)
        return latents

    # ---------------------------------------------------------------------------- step 5
    def decode_latents(self, latents, image, mask, *, decoder: str = "asuka") -> torch.Tensor:
        """Step 5: packed latents -> image ``(B, 3, H, W)`` float32 in ``[-1, 1]``.

        ``z = latents / scaling + shift`` (the FLUX VAE's), then the mask-conditioned decoder
        with the image and mask (``"asuka"``), or the plain VAE decoder (``"vae"``).
        """
        z = flux.latents_to_vae(self.vae, flux.unpack_latents(latents, image.shape[-2] // self.vae_scale_factor,
                                                             image.shape[-1] // self.vae_scale_factor))
        if decoder == "asuka":
            dtype = self.decoder.dtype
            out = self.decoder.decode(z.to(dtype), image.to(dtype), mask.to(dtype)).sample
        else:
            out = self.vae.decode(z.to(self.vae.dtype)).sample
        return out.float().clamp(-1.0, 1.0)

    # ========================================================================================
    # Loading
    # ========================================================================================
    @classmethod
    def from_official(
        cls,
        flux: str | os.PathLike = DEFAULT_FLUX,
        asuka: str | os.PathLike = DEFAULT_ASUKA,
        *,
        torch_dtype: torch.dtype | None = None,
        decoder: bool = True,
        text_encoder: bool = False,
        mae_config: dict | None = None,
        **hub_kwargs,
    ) -> "AsukaFluxFillPipeline":
        """Build the pipeline from the official files.

        Args:
            flux: FLUX.1-Fill-dev's diffusers folder or hub id (``transformer/``, ``vae/``,
                ``scheduler/``; ``text_encoder*/``, ``tokenizer*/`` for ``text_encoder=True``).
            asuka: the ASUKA release as a folder or hub id (``yikaiwang/ASUKA-FLUX.1-Fill``):
                ``mae_300.pth``, ``asuka_alignment_clip.pt``, ``asuka_alignment_t5.pt``,
                ``asuka_decoder.ckpt``, ``vec.pt`` and ``txt_256.pt`` (the null conditions);
                each is looked up at the top, then under ``ckpt/``.
            torch_dtype: default bfloat16 on CUDA, float32 otherwise.
            decoder: load the ASUKA decoder (``False``: decode with the FLUX VAE).
            text_encoder: also load FLUX's CLIP and T5 (the text baseline; ~9.5 GB in bf16).
            mae_config: config fields for ``MAEPrior.from_release`` that the weights do not
                determine (head counts of a non-ViT-B MAE); the release's MAE needs none.
            hub_kwargs: ``revision``, ``cache_dir``, ``local_files_only``, ``token``, ... for
                both sources.
        """
        if torch_dtype is None:
            torch_dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
        source, what = str(flux), f"FLUX.1-Fill backbone {flux}"
        kw = dict(hub_kwargs, torch_dtype=torch_dtype)
        transformer = load_or_explain(FluxTransformer2DModel.from_pretrained, source, "transformer", what, **kw)
        vae = load_or_explain(AutoencoderKL.from_pretrained, source, "vae", what, **kw)
        scheduler = load_or_explain(FlowMatchEulerDiscreteScheduler.from_pretrained, source, "scheduler", what,
                                    **hub_kwargs)
        texts = {}
        if text_encoder:
            from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

            for name, loader in (("text_encoder", CLIPTextModel), ("tokenizer", CLIPTokenizer),
                                 ("text_encoder_2", T5EncoderModel), ("tokenizer_2", T5TokenizerFast)):
                texts[name] = load_or_explain(loader.from_pretrained, source, name, what, **hub_kwargs)
        files = {key: release_file(asuka, name, hub_kwargs) for key, name in RELEASE_FILES.items()
                 if decoder or key != "decoder"}
        clip_aligner = component(files["clip_aligner"], AsukaAligner, "clip_aligner")
        t5_aligner = component(files["t5_aligner"], AsukaAligner, "t5_aligner")
        clip_aligner.set_null_condition(read_null_tensor(files["vec"], (1, clip_aligner.config.dim)))
        t5_aligner.set_null_condition(read_null_tensor(files["txt"], (1, None, t5_aligner.config.dim)))
        pipe = cls(
            mae=component(files["mae"], MAEPrior, "mae", **(mae_config or {})), clip_aligner=clip_aligner, t5_aligner=t5_aligner,
            transformer=transformer, vae=vae, scheduler=scheduler,
            decoder=component(files["decoder"], MaskConditionedDecoder, "decoder", latent_channels=16)
            if decoder else None, **texts)
        for name in ("mae", "clip_aligner", "t5_aligner", "decoder", "text_encoder", "text_encoder_2"):
            module = getattr(pipe, name)
            if module is not None:
                cast_floating(module, torch_dtype)
        return pipe


# --------------------------------------------------------------------------------------------
# Helpers: compatibility, release files
# --------------------------------------------------------------------------------------------
def _check_compatible(mae, clip_aligner, t5_aligner, transformer, vae, decoder, text_encoder, text_encoder_2):
    """Raise :class:`CheckpointError` when the components cannot work together."""
    problems = shared_problems(mae, {"clip_aligner": clip_aligner, "t5_aligner": t5_aligner}, vae, decoder)
    if transformer is not None and vae is not None:
        c, s = vae.config.latent_channels, 2 ** (len(vae.config.block_out_channels) - 1)
        expected = (8 * c + 4 * s * s, 4 * c)
        got = (transformer.config.in_channels, transformer.config.out_channels or transformer.config.in_channels)
        if got != expected:
            problems.append(f"the transformer maps {got[0]} -> {got[1]} channels, expected {expected[0]} -> "
                            f"{expected[1]} (packed noisy latents + masked-image latents + 8x8 mask: a FLUX-Fill "
                            f"transformer for a {c}-channel VAE)")
    if transformer is not None:
        widths = (("clip_aligner", clip_aligner, "pooled_projection_dim"), ("t5_aligner", t5_aligner,
                                                                            "joint_attention_dim"))
        for name, aligner, field in widths:
            if aligner is not None and aligner.config.dim != getattr(transformer.config, field):
                problems.append(f"the {name} outputs width {aligner.config.dim} but the transformer's {field} is "
                                f"{getattr(transformer.config, field)}")
        for name, encoder, field, attr in (("text_encoder", text_encoder, "pooled_projection_dim", "hidden_size"),
                                           ("text_encoder_2", text_encoder_2, "joint_attention_dim", "d_model")):
            width = getattr(getattr(encoder, "config", None), attr, None)
            if width is not None and width != getattr(transformer.config, field):
                problems.append(f"the {name}'s width {width} differs from the transformer's {field} "
                                f"{getattr(transformer.config, field)}")
    if problems:
        raise CheckpointError("incompatible pipeline components: " + "; ".join(problems))


def release_file(root: str | os.PathLike, name: str, hub_kwargs: dict) -> str:
    """Path of one release file in a folder or hub repo (at the top, else under ``ckpt/``)."""
    root = str(root)
    candidates = (name, f"ckpt/{name}")
    if os.path.isdir(root):
        for rel in candidates:
            if os.path.isfile(os.path.join(root, rel)):
                return os.path.join(root, rel)
        raise CheckpointError(f"ASUKA release folder {root}: no {name} (looked for {' and '.join(candidates)})")
    if os.path.exists(root) or root.count("/") != 1:
        raise CheckpointError(f"ASUKA release: {root} is neither a folder nor a hub id (owner/name)")
    from huggingface_hub import hf_hub_download

    keys = ("revision", "cache_dir", "token", "local_files_only", "force_download", "proxies")
    kwargs = {k: v for k, v in hub_kwargs.items() if k in keys}
    last = None
    for rel in candidates:
        try:
            return hf_hub_download(root, rel, **kwargs)
        except Exception as exc:  # missing file, no network, gated repo: try the next place, then explain
            last = exc
    raise CheckpointError(f"ASUKA release {root}: cannot download {name}: {first_line(last)}")


def read_null_tensor(path: str, shape: tuple) -> torch.Tensor:
    """A null-condition tensor file (``vec.pt``, ``txt_256.pt``), shape-checked (None = any)."""
    try:
        t = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read {path}: {first_line(exc)}") from None
    if not isinstance(t, torch.Tensor) or t.ndim != len(shape) or any(
            want is not None and got != want for got, want in zip(t.shape, shape)):
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        want = "(" + ", ".join("T" if s is None else str(s) for s in shape) + ")"
        raise CheckpointError(f"{path}: expected a tensor of shape {want}, got {got}")
    return t.float()
