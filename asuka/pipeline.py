"""ASUKA inpainting as a diffusers ``DiffusionPipeline``.

The data flow, one step per helper (:meth:`AsukaInpaintPipeline.inpaint`)::

    image + mask -> MAE prior -> alignment -> frozen SD-1.5-inpainting UNet (denoising loop)
                 -> mask-conditioned decoder -> composite of the known pixels

:meth:`AsukaInpaintPipeline.__call__` adds the edges around it: user inputs to tensors
(:mod:`asuka.io`), padding to the VAE factor or cropping around the hole, batching of items
that share a working size, pasting back, and the output format.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from asuka import io
from asuka.errors import CheckpointError, InputError
from asuka.models.aligner import AsukaAligner
from asuka.models.decoder import MaskConditionedDecoder
from asuka.models.mae import MAEPrior

DEFAULT_BACKBONE = "stable-diffusion-v1-5/stable-diffusion-inpainting"
CONDITIONS = ("prior", "null", "text")
DECODERS = ("asuka", "vae")
OUTPUT_TYPES = ("pil", "np", "pt", "latent")
PAD_MODES = ("reflect", "replicate")


@dataclass
class AsukaPipelineOutput(BaseOutput):
    """``images``: list of PIL images (``"pil"``), ``(B, H, W, 3)`` float in ``[0, 1]`` (``"np"``),
    ``(B, 3, H, W)`` float in ``[-1, 1]`` (``"pt"``, the package convention) or latents
    ``(B, 4, h, w)`` (``"latent"``); a list instead of a stacked array when the sizes differ."""

    images: list | np.ndarray | torch.Tensor


@dataclass
class _Item:
    """One image of the batch on its way through the pipeline (original resolution, CPU)."""

    image: torch.Tensor  # (3, H, W) in [-1, 1]
    mask: torch.Tensor  # (1, H, W) in {0, 1}
    prompt: str | None
    negative_prompt: str | None
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, height, width of the worked region
    work_size: tuple[int, int] = (0, 0)  # (h, w) the region is resized to (before padding)


class AsukaInpaintPipeline(DiffusionPipeline):
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
    _asuka_components = ("mae", "aligner", "decoder")

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
    ):
        super().__init__()
        _check_compatible(mae, aligner, unet, vae, decoder, text_encoder)
        self.register_modules(mae=mae, aligner=aligner, unet=unet, vae=vae, scheduler=scheduler,
                              decoder=decoder, text_encoder=text_encoder, tokenizer=tokenizer)

    # diffusers records a component's library as its full module path ("asuka.models.mae")
    # when it is not one of its own libraries; record the package ("asuka"), whose lazy
    # top-level exports serve diffusers' getattr(import_module("asuka"), class_name).
    def register_modules(self, **kwargs):
        super().register_modules(**kwargs)
        for name in kwargs:
            self._record_package(name)

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if name in self._asuka_components:
            self._record_package(name)

    def _record_package(self, name: str) -> None:
        entry = getattr(self, "_internal_dict", {}).get(name)
        if isinstance(entry, (list, tuple)) and entry[0] and str(entry[0]).startswith("asuka."):
            self.register_to_config(**{name: ("asuka", entry[1])})

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent pixel (8 for SD-1.5)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def working_resolution(self) -> int:
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
            num_inference_steps=num_inference_steps, generator=generator, eta=eta,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs)
        if output_latents:
            return latents
        # 5. Decode with the mask-conditioned decoder (it also sees the masked image and mask).
        return self.decode_latents(latents, image, mask, decoder=decoder)
        # 6. (compositing the known pixels back happens at full resolution, in __call__)

    # ---------------------------------------------------------------------------- step 1, 2
    def encode_prior(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Step 1: the MAE prior ``(B, L, mae.decoder_embed_dim)`` from the visible pixels only."""
        dtype = self.mae.dtype
        return self.mae.prior(image.to(dtype), mask.to(dtype))

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
                guidance_scale=1.0, num_inference_steps=50, generator=None, eta=0.0,
                callback_on_step_end=None, callback_on_step_end_tensor_inputs=("latents",)):
        """Step 4: the denoising loop of the frozen 9-channel UNet -> latents ``(B, 4, h, w)``.

        ``null_condition`` given -> classifier-free guidance
        ``eps = eps_null + guidance_scale * (eps_cond - eps_null)`` (ASUKA used none).
        """
        device, dtype = mask_latents.device, self.unet.dtype
        batch, _, h, w = masked_image_latents.shape
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        shape = (batch, self.vae.config.latent_channels, h, w)
        latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        latents = latents * self.scheduler.init_noise_sigma
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

    # ========================================================================================
    # The user-facing call: edges around inpaint()
    # ========================================================================================
    @torch.no_grad()
    def __call__(
        self,
        image,
        mask_image,
        num_inference_steps: int = 50,
        *,
        generator: torch.Generator | list[torch.Generator] | None = None,
        condition: str | None = None,
        condition_weight: float = 1.0,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        guidance_scale: float = 1.0,
        decoder: str | None = None,
        composite: bool = True,
        feather: float = 0.0,
        padding_mask_crop: int | None = None,
        resolution: int | None = None,
        pad_mode: str = "reflect",
        resize_mask: bool = False,
        num_images_per_prompt: int = 1,
        eta: float = 0.0,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ):
        """Inpaint ``image`` where ``mask_image`` is 1.

        Args:
            image: one image or a batch: PIL, numpy (uint8, or float in [0, 1]), torch
                (float in [-1, 1], the package convention), or a list; sizes may differ.
                See :mod:`asuka.io` for the accepted shapes.
            mask_image: the matching mask(s), 1 / white = hole (one mask is used for every image).
            num_inference_steps: denoising steps.
            generator: one ``torch.Generator``, or one per output image (``len(image) *
                num_images_per_prompt``); a batch with per-image generators equals single runs.
            condition: ``"prior"`` (ASUKA, the default), ``"null"`` (the "SD" baseline: the
                aligner's null condition) or ``"text"`` (SD with ``prompt``; the default when
                ``prompt`` is given).
            condition_weight: ``w`` in ``null + w * (aligned_prior - null)``.
            prompt, negative_prompt: text condition (needs a text encoder) and its null.
            guidance_scale: classifier-free guidance against the null condition; 1 = none.
            decoder: ``"asuka"`` (mask-conditioned decoder) or ``"vae"``; default: the ASUKA
                decoder when the pipeline has one, else the VAE decoder.
            composite: paste the known pixels back (the output keeps them exactly when
                ``feather == 0``); ``False`` returns the model's output (in crop mode: the
                whole crop region, pasted into the original).
            feather: width in pixels of a soft seam *outside* the hole (the generated pixels
                fade into the known ones over about this width); 0 = hard paste.
            padding_mask_crop: margin in pixels: work on a square-ish region around the hole's
                bounding box (at least ``resolution`` wide, clamped to the image), resized so its
                longer side is at most ``resolution``; only that region is pasted back. ``None``:
                the whole image at its own size (padded to the VAE factor).
            resolution: crop mode's working side (default :attr:`working_resolution`, 512).
            pad_mode: ``"reflect"`` or ``"replicate"`` padding to a multiple of the VAE factor
                (cropped back afterwards).
            resize_mask: resize a mask of another size to the image's (nearest) instead of failing.
            num_images_per_prompt: outputs per input image (each with its own noise).
            eta: DDIM's eta (ignored by other schedulers).
            output_type: ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"`` (the final latents at
                the working size; every item is run, even with an empty mask).
            return_dict: return :class:`AsukaPipelineOutput` (else a 1-tuple ``(images,)``).
            callback_on_step_end: ``f(pipe, step, timestep, tensors) -> dict`` after each step
                (called per working batch); may return new ``"latents"``.
            callback_on_step_end_tensor_inputs: names passed in ``tensors`` (default ``["latents"]``).

        Returns:
            :class:`AsukaPipelineOutput` with images of the inputs' sizes. An item with an empty
            mask is returned unchanged without running any model.
        """
        # 0. Check the options and bring the inputs to tensors (original resolution, CPU).
        condition = condition or ("text" if prompt is not None else "prior")
        decoder = decoder or ("asuka" if self.decoder is not None else "vae")
        tensor_inputs = list(callback_on_step_end_tensor_inputs or ["latents"])
        self._check_options(num_inference_steps=num_inference_steps, condition=condition,
                            condition_weight=condition_weight, prompt=prompt, decoder=decoder,
                            guidance_scale=guidance_scale, feather=feather, pad_mode=pad_mode,
                            padding_mask_crop=padding_mask_crop, resolution=resolution,
                            num_images_per_prompt=num_images_per_prompt, output_type=output_type,
                            callback_tensor_inputs=tensor_inputs)
        items = self._prepare_items(image, mask_image, prompt, negative_prompt,
                                    resize_mask=resize_mask, repeat=num_images_per_prompt)
        generators = _per_item_generators(generator, len(items))
        resolution = resolution or self.working_resolution

        results: list[torch.Tensor | None] = [None] * len(items)
        todo = []
        for i, item in enumerate(items):
            if output_type != "latent" and not bool(item.mask.any()):
                results[i] = item.image  # nothing to fill: the input, unchanged
                continue
            item.box = (crop_box(item.mask[0], padding_mask_crop, resolution)
                        if padding_mask_crop is not None else (0, 0, *item.image.shape[-2:]))
            item.work_size = working_size(item.box[2:], resolution if padding_mask_crop is not None else None)
            todo.append(i)

        # Items that share a working size are run as one batch.
        for work_size, indices in _group_by(todo, key=lambda i: items[i].work_size).items():
            group = [items[i] for i in indices]
            work = [to_working(it.image, it.mask, it.box, work_size) for it in group]
            image_b, pads = pad_to_multiple(torch.stack([w[0] for w in work]), self.vae_scale_factor, pad_mode)
            mask_b, _ = pad_to_multiple(torch.stack([w[1] for w in work]), self.vae_scale_factor, pad_mode)
            group_generator = (generator if generators is None
                               else [generators[i] for i in indices] if len(indices) > 1
                               else generators[indices[0]])
            # 1.-5. MAE prior -> alignment -> frozen UNet -> mask-conditioned decoder
            out = self.inpaint(
                image_b, mask_b, num_inference_steps=num_inference_steps, generator=group_generator,
                condition=condition, condition_weight=condition_weight,
                prompt=[it.prompt for it in group] if condition == "text" else None,
                negative_prompt=[it.negative_prompt for it in group] if condition == "text" else None,
                guidance_scale=guidance_scale, decoder=decoder, eta=eta,
                output_latents=output_type == "latent", callback_on_step_end=callback_on_step_end,
                callback_on_step_end_tensor_inputs=tensor_inputs)
            out = out.float().cpu()
            for k, i in enumerate(indices):
                if output_type == "latent":
                    results[i] = out[k]
                    continue
                # 6. Back to the original resolution, then composite the known pixels.
                generated = from_working(out[k], pads, items[i].box[2:])
                results[i] = paste_region(items[i].image, items[i].mask, generated, items[i].box,
                                          composite=composite, feather=feather)

        images = _format_output(results, output_type)
        self.maybe_free_model_hooks()
        return AsukaPipelineOutput(images=images) if return_dict else (images,)

    # ---------------------------------------------------------------------------- checks
    def _check_options(self, *, num_inference_steps, condition, condition_weight, prompt, decoder,
                       guidance_scale, feather, pad_mode, padding_mask_crop, resolution,
                       num_images_per_prompt, output_type, callback_tensor_inputs) -> None:
        def positive_int(name, value, minimum=1):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")

        positive_int("num_inference_steps", num_inference_steps)
        positive_int("num_images_per_prompt", num_images_per_prompt)
        if condition not in CONDITIONS:
            raise InputError(f"condition must be one of {CONDITIONS}, got {condition!r}")
        if prompt is not None and condition != "text":
            raise InputError(f"a prompt is only used with condition='text', got condition={condition!r}")
        if condition == "text":
            if prompt is None:
                raise InputError("condition='text' needs a prompt")
            if self.text_encoder is None or self.tokenizer is None:
                raise InputError("condition='text' needs a text_encoder and a tokenizer; load the pipeline with "
                                 "AsukaInpaintPipeline.from_sd_inpaint(..., text_encoder=True)")
        if decoder not in DECODERS:
            raise InputError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        if decoder == "asuka" and self.decoder is None:
            raise InputError("decoder='asuka' but this pipeline has no ASUKA decoder; use decoder='vae' "
                             "or load one (convert --decoder)")
        for name, value in (("condition_weight", condition_weight), ("guidance_scale", guidance_scale),
                            ("feather", feather)):
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputError(f"{name} must be a finite number, got {value!r}")
        if feather < 0:
            raise InputError(f"feather must be >= 0 pixels, got {feather}")
        if pad_mode not in PAD_MODES:
            raise InputError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
        if padding_mask_crop is not None:
            positive_int("padding_mask_crop", padding_mask_crop, minimum=0)
        if resolution is not None:
            positive_int("resolution", resolution, minimum=self.vae_scale_factor)
        if output_type not in OUTPUT_TYPES:
            raise InputError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        unknown = set(callback_tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown:
            raise InputError(f"callback_on_step_end_tensor_inputs: unknown names {sorted(unknown)}; "
                             f"expected some of {self._callback_tensor_inputs}")

    def _prepare_items(self, image, mask_image, prompt, negative_prompt, *, resize_mask, repeat) -> list[_Item]:
        images = io.images_to_tensors(image)
        masks = io.masks_to_tensors(mask_image)
        if len(masks) == 1 and len(images) > 1:
            masks = masks * len(images)
        if len(masks) != len(images):
            raise InputError(f"got {len(images)} images and {len(masks)} masks; expected one mask per "
                             "image (or a single mask for all)")
        prompts = _per_image(prompt, len(images), "prompt")
        negatives = _per_image(negative_prompt, len(images), "negative_prompt")
        items = []
        for k, (img, m) in enumerate(zip(images, masks)):
            height, width = img.shape[-2:]
            if m.shape[-2:] != img.shape[-2:]:
                what = f"mask {k}" if len(images) > 1 else "mask"
                fitted = io.fit_mask(m[0].numpy(), (width, height), resize=resize_mask, what=what)
                m = torch.from_numpy(fitted)[None]
            items += [_Item(img, m, prompts[k], negatives[k]) for _ in range(repeat)]
        return items

    # ========================================================================================
    # Loading
    # ========================================================================================
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path=None, **kwargs) -> "AsukaInpaintPipeline":
        """diffusers' loader, plus the shipped models' names (``"asuka-small"``) and ``None``
        (the default shipped model); see :func:`asuka.registry.resolve_model`."""
        from asuka.registry import resolve_model

        return super().from_pretrained(resolve_model(pretrained_model_name_or_path), **kwargs)

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
        unet = _load_or_explain(UNet2DConditionModel.from_pretrained, source, "unet", what, **kw)
        vae = _load_or_explain(AutoencoderKL.from_pretrained, source, "vae", what, **kw)
        if scheduler is None:
            config = _load_or_explain(diffusers.DDIMScheduler.load_config, source, "scheduler", what, **hub_kwargs)
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
                    raise CheckpointError(f"{what}: cannot load text_encoder/tokenizer: {_first_line(exc)}") from None

        pipe = cls(
            mae=_component(mae, MAEPrior, "mae"), aligner=_component(aligner, AsukaAligner, "aligner"),
            unet=unet, vae=vae, scheduler=scheduler,
            decoder=None if decoder is None else _component(decoder, MaskConditionedDecoder, "decoder"),
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
# Loading for tools (CLI, evaluation): device and dtype by name, one-line errors
# --------------------------------------------------------------------------------------------
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
          "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available, else MPS if available, else CPU; other names checked."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"unknown device {device!r}: {exc}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    return resolved


def resolve_dtype(dtype: str = "auto", device: torch.device | str = "cpu") -> torch.dtype:
    """``"auto"`` -> float16 on CUDA, float32 elsewhere; or a name of :data:`DTYPES`."""
    if dtype == "auto":
        return torch.float16 if torch.device(device).type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; expected auto or one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load_pipeline(model: str | os.PathLike | None = None, *, device: str = "auto", dtype: str = "auto",
                  **kwargs) -> "AsukaInpaintPipeline":
    """``AsukaInpaintPipeline.from_pretrained`` (folder, hub id or shipped model name; ``None``:
    the shipped default model, see :mod:`asuka.registry`) on a device, in a dtype.

    Failures (missing folder, unknown hub id, no network, broken files) raise
    :class:`CheckpointError` with one line naming the model.
    """
    from asuka.registry import resolve_model

    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    source = resolve_model(model)
    if os.path.exists(source) and not os.path.isfile(os.path.join(source, "model_index.json")):
        raise CheckpointError(f"model {source}: not a pipeline folder (no model_index.json); make one "
                              "with `asuka convert` or AsukaInpaintPipeline.save_pretrained")
    try:
        with _quiet_dtype_rename():
            pipe = AsukaInpaintPipeline.from_pretrained(source, torch_dtype=torch_dtype, **kwargs)
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, EnvironmentError) as exc:
        raise CheckpointError(f"cannot load model {source}: {_first_line(exc)}") from None
    return pipe.to(torch_device)


# --------------------------------------------------------------------------------------------
# Helpers: compatibility, loading
# --------------------------------------------------------------------------------------------
def _check_compatible(mae, aligner, unet, vae, decoder, text_encoder) -> None:
    """Raise :class:`CheckpointError` when the components cannot work together."""
    problems = []
    if unet is not None and vae is not None:
        expected = 2 * vae.config.latent_channels + 1
        if unet.config.in_channels != expected:
            problems.append(f"the UNet takes {unet.config.in_channels} input channels, expected {expected} "
                            "(noisy latents + mask + masked-image latents: an SD inpainting UNet)")
    if mae is not None and aligner is not None and mae.config.decoder_embed_dim != aligner.config.in_dim:
        problems.append(f"the MAE prior has width {mae.config.decoder_embed_dim} but the aligner "
                        f"expects {aligner.config.in_dim}")
    if aligner is not None and unet is not None and aligner.config.dim != unet.config.cross_attention_dim:
        problems.append(f"the aligner outputs width {aligner.config.dim} but the UNet's "
                        f"cross_attention_dim is {unet.config.cross_attention_dim}")
    if decoder is not None and vae is not None:
        z = getattr(decoder.config, "latent_channels", None)
        if z is not None and z != vae.config.latent_channels:
            problems.append(f"the decoder takes {z} latent channels but the VAE makes "
                            f"{vae.config.latent_channels}")
    if text_encoder is not None and unet is not None:
        width = text_encoder.config.hidden_size
        if width != unet.config.cross_attention_dim:
            problems.append(f"the text encoder's width {width} differs from the UNet's "
                            f"cross_attention_dim {unet.config.cross_attention_dim}")
    if problems:
        raise CheckpointError("incompatible pipeline components: " + "; ".join(problems))


def cast_floating(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast a module's floating-point parameters and buffers to ``dtype`` in place.

    Same as ``module.to(dtype)``, minus the warning diffusers' ``ModelMixin.to`` prints on every
    dtype cast (even for models with no float32-only layers).
    """
    casts = {torch.float32: module.float, torch.float16: module.half, torch.bfloat16: module.bfloat16}
    if dtype not in casts:
        raise InputError(f"unsupported dtype {dtype}; expected float32, float16 or bfloat16")
    return casts[dtype]()


@contextlib.contextmanager
def _quiet_dtype_rename():
    # diffusers >= 0.42 renames torch_dtype to dtype; the versions we support all take torch_dtype.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
        yield


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    if "stacktrace above" in line:  # diffusers' hub errors point at a traceback the CLI does not print
        line = line.split(" Please check out the root cause in the stacktrace above")[0].rstrip(" .")
        cause = exc.__cause__ or exc.__context__
        if cause is not None and cause is not exc:
            line += f" (because: {_first_line(cause)})"
    return line


def _load_or_explain(loader, source: str, subfolder: str, what: str, **kwargs):
    try:
        with _quiet_dtype_rename():
            return loader(source, subfolder=subfolder, **kwargs)
    except (OSError, ValueError, EnvironmentError) as exc:
        raise CheckpointError(f"{what}: cannot load {subfolder}/: {_first_line(exc)}") from None


def _component(value, cls, name: str):
    """A model instance, a ``save_pretrained`` folder, or an official release file -> model."""
    if isinstance(value, cls):
        return value
    if isinstance(value, (str, os.PathLike)):
        path = str(value)
        if os.path.isdir(path):
            try:
                return cls.from_pretrained(path)
            except (OSError, ValueError) as exc:
                raise CheckpointError(f"{name}: cannot load {cls.__name__} from {path}: {_first_line(exc)}") from None
        if os.path.isfile(path):
            return cls.from_release(path)
        raise CheckpointError(f"{name}: no such file or folder: {path}")
    raise InputError(f"{name}: expected a {cls.__name__}, a folder or a release file, got {type(value).__name__}")


# --------------------------------------------------------------------------------------------
# Helpers: batching, generators, prompts
# --------------------------------------------------------------------------------------------
def _per_item_generators(generator, n: int):
    """None / one generator -> None (use it as given); a list -> checked, one per item."""
    if generator is None or isinstance(generator, torch.Generator):
        return None
    generators = list(generator)
    if len(generators) != n or not all(isinstance(g, torch.Generator) for g in generators):
        raise InputError(f"generator: expected one torch.Generator or a list of {n} (one per output "
                         f"image), got a list of {len(generators)}")
    return generators


def _per_image(value, n: int, name: str) -> list:
    if value is None or isinstance(value, str):
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise InputError(f"{name}: expected a string or a list of {n} strings, got a list of {len(values)}")
    return values


def _group_by(indices, key) -> dict:
    groups: dict = {}
    for i in indices:
        groups.setdefault(key(i), []).append(i)
    return groups


def _format_output(results: list[torch.Tensor], output_type: str):
    same_size = len({tuple(r.shape) for r in results}) == 1
    if output_type == "pil":
        return [io.tensor_to_pil(r)[0] for r in results]
    if output_type == "np":
        arrays = [io.tensor_to_numpy(r)[0] for r in results]
        return np.stack(arrays) if same_size else arrays
    # "pt" (images in [-1, 1]) and "latent"
    return torch.stack(results) if same_size else results


# --------------------------------------------------------------------------------------------
# Helpers: geometry (crop around the hole, resize, pad, paste back, composite)
# --------------------------------------------------------------------------------------------
def crop_box(mask: torch.Tensor, margin: int, resolution: int) -> tuple[int, int, int, int]:
    """The region worked on in crop mode: ``(top, left, height, width)``.

    A square of side ``max(hole bbox + 2 * margin, resolution)`` centred on the hole's bounding
    box, clamped to the image (it becomes a rectangle only where the image is too small),
    shifted inside the image. So a small hole in a large photo gets a ``resolution``-sized
    region of native pixels, and a large hole gets a region that holds it with ``margin``.

    Args:
        mask: ``(H, W)``, 1 = hole, not empty.
    """
    height, width = mask.shape
    rows = torch.nonzero(mask.any(dim=1)).flatten()
    cols = torch.nonzero(mask.any(dim=0)).flatten()
    y0, y1 = int(rows[0]) - margin, int(rows[-1]) + 1 + margin
    x0, x1 = int(cols[0]) - margin, int(cols[-1]) + 1 + margin
    side = max(y1 - y0, x1 - x0, resolution)
    h, w = min(side, height), min(side, width)
    top = min(max(int(round((y0 + y1 - h) / 2)), 0), height - h)
    left = min(max(int(round((x0 + x1 - w) / 2)), 0), width - w)
    return top, left, h, w


def working_size(size: tuple[int, int], resolution: int | None) -> tuple[int, int]:
    """Size ``(h, w)`` a region is resized to: unchanged, or longer side = ``resolution``
    (aspect kept) when ``resolution`` is given and the region is larger."""
    h, w = int(size[0]), int(size[1])
    if resolution is None or max(h, w) <= resolution:
        return h, w
    scale = resolution / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def to_working(image: torch.Tensor, mask: torch.Tensor, box, size) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop ``box`` out of ``(3, H, W)`` / ``(1, H, W)`` and resize to ``size``.

    The image is resized with antialiased bicubic sampling; the mask so that a working pixel is
    a hole when *any* of the pixels it covers is (thin strokes survive the downscale, and
    nothing the user marked is treated as known context).
    """
    top, left, h, w = box
    image = image[:, top:top + h, left:left + w]
    mask = mask[:, top:top + h, left:left + w]
    if (h, w) == tuple(size):
        return image, mask
    image = F.interpolate(image[None], size=size, mode="bicubic", antialias=True, align_corners=False)[0]
    mask = (F.interpolate(mask[None], size=size, mode="area")[0] > 0).float()
    return image.clamp(-1.0, 1.0), mask


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "reflect") -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad ``(B, C, H, W)`` at the bottom and right to multiples of ``multiple``.

    Returns the padded tensor and the pad ``(bottom, right)``. ``reflect`` falls back to
    ``replicate`` for sides too short to reflect. Masks are padded the same way as images, so
    a hole touching the border continues into the padding instead of meeting a reflected copy
    of what it hides marked as known.
    """
    h, w = x.shape[-2:]
    bottom, right = (-h) % multiple, (-w) % multiple
    if not (bottom or right):
        return x, (0, 0)
    if mode == "reflect" and (bottom >= h or right >= w):
        mode = "replicate"
    return F.pad(x, (0, right, 0, bottom), mode=mode), (bottom, right)


def from_working(out: torch.Tensor, pads: tuple[int, int], size) -> torch.Tensor:
    """Undo :func:`pad_to_multiple` and :func:`to_working`'s resize: ``(3, h', w')`` -> ``(3, *size)``."""
    bottom, right = pads
    out = out[:, : out.shape[-2] - bottom, : out.shape[-1] - right]
    if tuple(out.shape[-2:]) != tuple(size):
        out = F.interpolate(out[None], size=tuple(size), mode="bicubic", align_corners=False)[0]
    return out.clamp(-1.0, 1.0)


def feather_mask(mask: torch.Tensor, feather: float) -> torch.Tensor:
    """Blend weight ``(1, H, W)`` in ``[0, 1]``: 1 in the hole, fading to 0 over about
    ``feather`` pixels *outside* it (the hole itself is always fully generated)."""
    if feather <= 0:
        return mask
    from torchvision.transforms.functional import gaussian_blur

    sigma = feather / 2.0
    kernel = 2 * math.ceil(2 * sigma) + 1
    blurred = gaussian_blur(mask[None], kernel_size=[kernel, kernel], sigma=[sigma, sigma])[0]
    # At the hole's edge the blurred mask is ~0.5: doubling it puts the seam's centre outside.
    return torch.maximum(mask, (2.0 * blurred).clamp(0.0, 1.0))


def composite_known(original: torch.Tensor, generated: torch.Tensor, mask: torch.Tensor,
                    feather: float = 0.0) -> torch.Tensor:
    """Step 6: ``original`` where known, ``generated`` in the hole (soft seam if ``feather``)."""
    alpha = feather_mask(mask, feather)
    return original * (1.0 - alpha) + generated * alpha


def paste_region(image: torch.Tensor, mask: torch.Tensor, generated: torch.Tensor, box, *,
                 composite: bool, feather: float) -> torch.Tensor:
    """Put the generated region ``(3, h, w)`` back into the full image ``(3, H, W)``."""
    top, left, h, w = box
    out = image.clone()
    region = out[:, top:top + h, left:left + w]
    if composite:
        region.copy_(composite_known(region, generated, mask[:, top:top + h, left:left + w], feather))
    else:
        region.copy_(generated)
    return out
