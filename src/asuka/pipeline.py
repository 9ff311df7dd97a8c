"""ASUKA on SD-1.5-inpainting as a diffusers ``DiffusionPipeline``.

The data flow, one step per helper (:meth:`AsukaInpaintPipeline.inpaint`)::

    image + mask -> MAE prior -> alignment -> frozen SD-1.5-inpainting UNet (denoising loop)
                 -> mask-conditioned decoder -> composite of the known pixels

:meth:`AsukaInpaintPipeline.__call__` adds the edges around it, shared with the FLUX variant
(:mod:`asuka.pipeline_base`): user inputs to tensors, cropping around the hole (the default)
or the whole image padded to the VAE factor, batching of items that share a working size,
pasting back, and the output format. :func:`load_pipeline` loads either variant.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.utils.torch_utils import randn_tensor

from asuka.errors import CheckpointError, InputError
from asuka.models.aligner import AsukaAligner
from asuka.models.decoder import MaskConditionedDecoder
from asuka.models.mae import MAEPrior
from asuka.pipeline_base import (  # noqa: F401  (re-exported: the public names of this module since 0.1)
    CONDITIONS, DECODERS, DEFAULT_CROP_MARGIN, DEFAULT_STEPS, DTYPES, OUTPUT_TYPES, PAD_MODES, AsukaPipelineBase,
    AsukaPipelineOutput, cast_floating, component, composite_known, crop_box, feather_mask, from_working,
    load_or_explain, load_pipeline, model_default_steps, pad_to_multiple, resolve_device, resolve_dtype,
    shared_problems, to_working,
    working_size)

DEFAULT_BACKBONE = "stable-diffusion-v1-5/stable-diffusion-inpainting"


class AsukaInpaintPipeline(AsukaPipelineBase):
    """ASUKA: MAE prior + alignment module on a frozen SD-1.5-inpainting UNet, decoded by a
    mask-conditioned decoder.

    Components:
        mae (:class:`~asuka.models.mae.MAEPrior`): prior from the visible pixels.
        aligner (:class:`~asuka.models.aligner.AsukaAligner`): prior -> UNet condition; holds
            the null condition (the SD baseline's "empty" condition).
        unet (``UNet2DConditionModel``): the 9-channel SD-1.5-inpainting UNet, frozen.
        vae (``AutoencoderKL``): its encoder makes the masked-image latents; its decoder is used
            for ``decoder="vae"`` (ablation) or when no ASUKA decoder is loaded.
        scheduler: any diffusers scheduler built from the SD config.
        decoder (:class:`~asuka.models.decoder.MaskConditionedDecoder`, optional).
        text_encoder, tokenizer (CLIP, optional): the SD text baseline (``prompt=...``).
    """

    model_cpu_offload_seq = "text_encoder->mae->aligner->vae->unet->decoder"
    _optional_components = ["decoder", "text_encoder", "tokenizer"]
    _callback_tensor_inputs = ["latents", "condition", "mask_latents", "masked_image_latents"]
    _text_encoder_hint = "load the pipeline with AsukaInpaintPipeline.from_sd_inpaint(..., text_encoder=True)"
    cuda_dtype = torch.float16
    backbone_options = ("eta",)  # DDIM's eta (ignored by other schedulers)

    def __init__(
        self,
        mae: MAEPrior,
        aligner: AsukaAligner,
        unet: UNet2DConditionModel,
        vae: AutoencoderKL,
        scheduler,
        decoder: MaskConditionedDecoder | None = None,
        text_encoder=None,
        tokenizer=None,
        default_steps: int | None = None,
        default_resolution: int | None = None,
        default_poisson_blend: float | None = None,
    ):
        super().__init__()
        _check_compatible(mae, aligner, unet, vae, decoder, text_encoder)
        self.register_modules(mae=mae, aligner=aligner, unet=unet, vae=vae, scheduler=scheduler,
                              decoder=decoder, text_encoder=text_encoder, tokenizer=tokenizer)
        self.register_defaults(default_steps, default_resolution, default_poisson_blend)

    @property
    def native_resolution(self) -> int:
        """The side the UNet was trained at, in pixels (512 for SD-1.5): the crop mode's target."""
        return int(self.unet.config.sample_size) * self.vae_scale_factor

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
        condition_weight: float = 1.0,
        prompt: list[str] | None = None,
        negative_prompt: list[str] | None = None,
        guidance_scale: float = 1.0,
        decoder: str = "asuka",
        eta: float = 0.0,
        output_latents: bool = False,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: tuple[str, ...] = ("latents",),
    ) -> torch.Tensor:
        """ASUKA on tensors that are already at the working size.

        Args:
            image: ``(B, 3, H, W)`` in ``[-1, 1]``, ``H`` and ``W`` multiples of the VAE factor.
            mask: ``(B, 1, H, W)`` in ``{0, 1}``, 1 = hole.
            (other arguments: see :meth:`__call__`)

        Returns:
            ``(B, 3, H, W)`` float32 in ``[-1, 1]`` -- the decoder's output, not composited --
            or the final latents ``(B, 4, H/8, W/8)`` when ``output_latents``.
        """
        device = self._execution_device
        image = image.to(device=device, dtype=torch.float32)
        mask = mask.to(device=device, dtype=torch.float32)
        do_cfg = guidance_scale != 1.0

        # 1. MAE prior from the visible pixels, 2. alignment to the UNet's condition space
        #    (or the SD baselines' null / text condition): (B, L, cross_attention_dim) each.
        condition_embeds, null_embeds = self.encode_condition(
            image, mask, condition=condition, condition_weight=condition_weight,
            prompt=prompt, negative_prompt=negative_prompt)
        # 3. The UNet's extra inputs: the mask at latent size and the masked image's latents.
        mask_latents, masked_image_latents = self.prepare_mask_latents(image, mask)
        # 4. Denoise with the frozen UNet.
        latents = self.denoise(
            mask_latents, masked_image_latents, condition_embeds,
            null_embeds if do_cfg else None, guidance_scale=guidance_scale,
            num_inference_steps=num_inference_steps, generator=generator, latents=latents, eta=eta,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs)
        if output_latents:
            return latents
        # 5. Decode with the mask-conditioned decoder (it also sees the masked image and mask).
        return self.decode_latents(latents, image, mask, decoder=decoder)
        # 6. (compositing the known pixels back happens at the original resolution, in __call__)

    # ---------------------------------------------------------------------------- step 1, 2
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """CLIP text embeddings ``(B, 77, D)`` (last hidden state, as SD-1.5 uses)."""
        if self.text_encoder is None or self.tokenizer is None:
            raise InputError("a text condition needs a text_encoder and a tokenizer; load the "
                             "pipeline with AsukaInpaintPipeline.from_sd_inpaint(..., text_encoder=True)")
        tokens = self.tokenizer(list(prompts), padding="max_length", truncation=True,
                                max_length=self.tokenizer.model_max_length, return_tensors="pt")
        ids = tokens.input_ids.to(self.text_encoder.device)
        return self.text_encoder(ids)[0]

    def encode_condition(self, image, mask, *, condition="prior", condition_weight=1.0,
                         prompt=None, negative_prompt=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Steps 1-2: the UNet condition and its null counterpart, both ``(B, L, D)``.

        ``"prior"``: ``null + w * (aligner(prior) - null)`` (``w = condition_weight``; the
        release interpolates this way). ``"null"``: the aligner's null condition (the "SD"
        baseline: the empty-prompt embedding for SD-1.5). ``"text"``: CLIP embedding of
        ``prompt``; its null is ``negative_prompt`` (default ``""``).
        """
        batch = image.shape[0]
        dtype = self.unet.dtype
        if condition == "prior":
            aligned = self.aligner(self.encode_prior(image, mask))  # (B, L, D)
            null = self.aligner.null(batch, num_tokens=aligned.shape[1]).to(aligned)
            if condition_weight != 1.0:
                aligned = null + condition_weight * (aligned - null)
            return aligned.to(dtype), null.to(dtype)
        if condition == "null":
            null = self.aligner.null(batch).to(device=image.device, dtype=dtype)
            return null, null
        prompts = list(prompt)
        negatives = [n or "" for n in (negative_prompt or [None] * batch)]
        return self.encode_text(prompts).to(dtype), self.encode_text(negatives).to(dtype)

    # ---------------------------------------------------------------------------- step 3
    def prepare_mask_latents(self, image: torch.Tensor, mask: torch.Tensor):
        """Step 3: ``(mask at latent size (B, 1, h, w), VAE latents of the masked image (B, 4, h, w))``.

        The masked image keeps the known pixels and zeroes the hole (SD's ``image * (mask < 0.5)``).
        The latent is the mode of the VAE posterior: deterministic, so no random draw is spent.
        """
        h, w = image.shape[-2] // self.vae_scale_factor, image.shape[-1] // self.vae_scale_factor
        masked_image = image * (1.0 - mask)
        posterior = self.vae.encode(masked_image.to(self.vae.dtype)).latent_dist
        masked_image_latents = posterior.mode() * self.vae.config.scaling_factor
        mask_latents = F.interpolate(mask, size=(h, w))  # nearest, as diffusers' SD inpaint
        dtype = self.unet.dtype
        return mask_latents.to(dtype), masked_image_latents.to(dtype)

    # ---------------------------------------------------------------------------- step 4
    def denoise(self, mask_latents, masked_image_latents, condition, null_condition=None, *,
                guidance_scale=1.0, num_inference_steps=50, generator=None, latents=None, eta=0.0,
                callback_on_step_end=None, callback_on_step_end_tensor_inputs=("latents",)):
        """Step 4: the denoising loop of the frozen 9-channel UNet -> latents ``(B, 4, h, w)``.

        ``null_condition`` given -> classifier-free guidance
        ``eps = eps_null + guidance_scale * (eps_cond - eps_null)`` (ASUKA used none).
        """
        device, dtype = mask_latents.device, self.unet.dtype
        batch, _, h, w = masked_image_latents.shape
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        shape = (batch, self.vae.config.latent_channels, h, w)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        elif tuple(latents.shape) != shape:
            raise InputError(f"latents: expected shape {shape} (B, {shape[1]}, H/8, W/8 of the working size), "
                             f"got {tuple(latents.shape)}")
        latents = latents.to(device=device, dtype=dtype) * self.scheduler.init_noise_sigma
        step_kwargs = self._step_kwargs(generator, eta)

        do_cfg = null_condition is not None
        extra = torch.cat([mask_latents, masked_image_latents], dim=1)  # (B, 5, h, w)
        if do_cfg:  # one UNet call for both branches: [null; cond]
            condition = torch.cat([null_condition, condition])
            extra = torch.cat([extra, extra])
        for i, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
            model_input = torch.cat([latents, latents]) if do_cfg else latents
            model_input = self.scheduler.scale_model_input(model_input, t)
            model_input = torch.cat([model_input, extra], dim=1)  # (B', 9, h, w)
            noise_pred = self.unet(model_input, t, encoder_hidden_states=condition, return_dict=False)[0]
            if do_cfg:
                noise_null, noise_cond = noise_pred.chunk(2)
                noise_pred = noise_null + guidance_scale * (noise_cond - noise_null)
            latents = self.scheduler.step(noise_pred, t, latents, **step_kwargs, return_dict=False)[0]
            if callback_on_step_end is not None:
                named = {"latents": latents, "condition": condition, "mask_latents": mask_latents,
                         "masked_image_latents": masked_image_latents}
                out = callback_on_step_end(self, i, t, {k: named[k] for k in callback_on_step_end_tensor_inputs})
                latents = (out or {}).get("latents", latents)
        return latents

    def _step_kwargs(self, generator, eta) -> dict:
        # Schedulers differ in what step() takes (DDIM: eta; DDPM/Euler-a: generator).
        params = inspect.signature(self.scheduler.step).parameters
        kwargs = {}
        if "eta" in params:
            kwargs["eta"] = eta
        if "generator" in params:
            kwargs["generator"] = generator
        return kwargs

    # ---------------------------------------------------------------------------- step 5
    def decode_latents(self, latents, image, mask, *, decoder: str = "asuka") -> torch.Tensor:
        """Step 5: latents -> image ``(B, 3, H, W)`` float32 in ``[-1, 1]``.

        ``"asuka"``: the mask-conditioned decoder, given the masked image and the mask;
        ``"vae"``: the plain VAE decoder (ablation / SD baseline).
        """
        z = latents / self.vae.config.scaling_factor
        if decoder == "asuka":
            dtype = self.decoder.dtype
            masked_image = (image * (1.0 - mask)).to(dtype)
            out = self.decoder.decode(z.to(dtype), masked_image, mask.to(dtype)).sample
        else:
            out = self.vae.decode(z.to(self.vae.dtype)).sample
        return out.float().clamp(-1.0, 1.0)

    def has_text_encoder(self) -> bool:
        return self.text_encoder is not None and self.tokenizer is not None

    # ========================================================================================
    # Loading
    # ========================================================================================
    @classmethod
    def from_sd_inpaint(
        cls,
        backbone_path_or_hub_id: str | os.PathLike = DEFAULT_BACKBONE,
        *,
        mae,
        aligner,
        decoder=None,
        text_encoder: bool = False,
        null_from_text_encoder: bool = True,
        scheduler=None,
        torch_dtype: torch.dtype | None = None,
        **hub_kwargs,
    ) -> "AsukaInpaintPipeline":
        """Build the pipeline on a standard SD-1.5-inpainting diffusers folder or hub repo.

        Args:
            backbone_path_or_hub_id: folder or hub id with ``unet/``, ``vae/``, ``scheduler/``
                (and ``text_encoder/``, ``tokenizer/``).
            mae, aligner, decoder: a model instance, a folder saved with ``save_pretrained``, or an
                official release file (``mae_300.pth``, ``asuka_alignment_clip.pt``,
                ``asuka_decoder.ckpt``, converted with ``from_release``). ``decoder`` is optional.
            text_encoder: keep the CLIP text encoder and tokenizer (the text baseline).
            null_from_text_encoder: when the backbone has a text encoder, store the CLIP
                embedding of ``""`` as the aligner's null condition (so ``condition="null"`` is
                exactly SD with an empty prompt).
            scheduler: a scheduler instance; default: the backbone's own scheduler class and config.
            torch_dtype: dtype for every model (e.g. ``torch.float16`` on GPU).
            hub_kwargs: passed to diffusers' ``from_pretrained`` (``revision``, ``cache_dir``,
                ``local_files_only``, ``token``, ...).
        """
        import diffusers

        source = str(backbone_path_or_hub_id)
        what = f"SD-1.5 inpainting backbone {source}"
        kw = dict(hub_kwargs, **({"torch_dtype": torch_dtype} if torch_dtype is not None else {}))
        unet = load_or_explain(UNet2DConditionModel.from_pretrained, source, "unet", what, **kw)
        vae = load_or_explain(AutoencoderKL.from_pretrained, source, "vae", what, **kw)
        if scheduler is None:
            config = load_or_explain(diffusers.DDIMScheduler.load_config, source, "scheduler", what, **hub_kwargs)
            scheduler_cls = getattr(diffusers, config.get("_class_name", "PNDMScheduler"), diffusers.PNDMScheduler)
            scheduler = scheduler_cls.from_config(config)

        te = tok = None
        if text_encoder or null_from_text_encoder:
            from transformers import CLIPTextModel, CLIPTokenizer

            try:
                # dtype applied below: transformers' name for the argument changed across versions
                te = CLIPTextModel.from_pretrained(source, subfolder="text_encoder", **hub_kwargs)
                tok = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **hub_kwargs)
            except (OSError, ValueError) as exc:
                if text_encoder:
                    raise CheckpointError(f"{what}: cannot load text_encoder/tokenizer: {first_line(exc)}") from None

        pipe = cls(
            mae=component(mae, MAEPrior, "mae"), aligner=component(aligner, AsukaAligner, "aligner"),
            unet=unet, vae=vae, scheduler=scheduler,
            decoder=None if decoder is None else component(decoder, MaskConditionedDecoder, "decoder"),
            text_encoder=te if text_encoder else None, tokenizer=tok if text_encoder else None)
        if te is not None and null_from_text_encoder:
            pipe.text_encoder, pipe.tokenizer = te, tok  # encode_text needs them registered
            with torch.no_grad():
                null = pipe.encode_text([""])[0]  # (77, 768)
            pipe.aligner.set_null_condition(null.float())
            if not text_encoder:
                pipe.text_encoder, pipe.tokenizer = None, None
        if torch_dtype is not None:
            for name in ("mae", "aligner", "decoder", "text_encoder"):
                module = getattr(pipe, name)
                if module is not None:
                    cast_floating(module, torch_dtype)
        return pipe


# --------------------------------------------------------------------------------------------
# Helpers: compatibility
# --------------------------------------------------------------------------------------------
def _check_compatible(mae, aligner, unet, vae, decoder, text_encoder) -> None:
    """Raise :class:`CheckpointError` when the components cannot work together."""
    problems = shared_problems(mae, {"aligner": aligner}, vae, decoder)
    if unet is not None and vae is not None:
        expected = 2 * vae.config.latent_channels + 1
        if unet.config.in_channels != expected:
            problems.append(f"the UNet takes {unet.config.in_channels} input channels, expected {expected} "
                            "(noisy latents + mask + masked-image latents: an SD inpainting UNet)")
    if aligner is not None and unet is not None and aligner.config.dim != unet.config.cross_attention_dim:
        problems.append(f"the aligner outputs width {aligner.config.dim} but the UNet's "
                        f"cross_attention_dim is {unet.config.cross_attention_dim}")
    if text_encoder is not None and unet is not None:
        width = text_encoder.config.hidden_size
        if width != unet.config.cross_attention_dim:
            problems.append(f"the text encoder's width {width} differs from the UNet's "
                            f"cross_attention_dim {unet.config.cross_attention_dim}")
    if problems:
        raise CheckpointError("incompatible pipeline components: " + "; ".join(problems))
