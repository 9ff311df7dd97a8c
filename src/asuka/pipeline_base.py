"""What both ASUKA pipelines (SD-1.5 and FLUX.1-Fill) share, written once.

* :class:`AsukaPipelineBase` -- a diffusers ``DiffusionPipeline`` with the user-facing edges
  around a backbone's ``inpaint(image, mask, ...)`` (the method's steps on a working batch):
  inputs to tensors, option checks, crop around the hole (the default) or the whole image,
  resize / pad to the backbone's multiple, batching of items that share a working size, the
  result pasted back, output formatting. Also the MAE prior step and the package recording
  that lets diffusers reload our components.
* geometry helpers: :func:`hole_bbox`, :func:`crop_box`, :func:`working_size`, :func:`to_working`,
  :func:`pad_to_multiple`, :func:`from_working`, :func:`feather_mask`, :func:`composite_known`.
* loading helpers: :func:`load_pipeline` (either pipeline, chosen from ``model_index.json``),
  :func:`resolve_device`, :func:`resolve_dtype`, :func:`cast_floating`.

Memory: a large photo (PIL or uint8) is never converted to float or copied at full size: only
the worked region is converted, and the result is pasted into one uint8 copy of the original
(``output_type="pil"``). Float outputs (``"np"``, ``"pt"``) are full-size float by definition.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

from asuka import io, seams
from asuka.errors import CheckpointError, InputError

CONDITIONS = ("prior", "null", "text")
DECODERS = ("asuka", "vae")
OUTPUT_TYPES = ("pil", "np", "pt", "latent")
PAD_MODES = ("reflect", "replicate")
#: Default context margin (pixels) around the hole in crop mode, as ``asuka inpaint --crop-margin``.
DEFAULT_CROP_MARGIN = 64
#: Conjugate-gradient iterations of the seam blending's pass at the output size (see _paste_value):
#: on validation views (asuka-small's MODEL_CARD) 100 left 0.1 dB of PSNR in the hole that 300
#: recover (1,000: no more); work ~ this x the region's pixels.
OUTPUT_BLEND_ITERATIONS = 300
#: Denoising steps when neither the call nor the model folder (``default_steps`` in
#: ``model_index.json``) says otherwise.
DEFAULT_STEPS = 50


@dataclass
class AsukaPipelineOutput(BaseOutput):
    """``images``: list of PIL images (``"pil"``), ``(B, H, W, 3)`` float in ``[0, 1]`` (``"np"``),
    ``(B, 3, H, W)`` float in ``[-1, 1]`` (``"pt"``, the package convention) or latents
    ``(B, C, h, w)`` (``"latent"``); a list instead of a stacked array when the sizes differ."""

    images: list | np.ndarray | torch.Tensor


@dataclass
class _Item:
    """One image of the batch on its way through the pipeline (original resolution, CPU)."""

    source: object  # PIL RGB image, uint8 (H, W, C) array, uint8 (3, H, W) tensor, or float (3, H, W) in [-1, 1]
    mask: torch.Tensor  # (H, W) bool, True = hole
    prompt: str | None
    negative_prompt: str | None
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, height, width of the worked region
    work_size: tuple[int, int] = (0, 0)  # (h, w) the region is resized to (before padding)


class AsukaPipelineBase(DiffusionPipeline):
    """Shared edges of :class:`~asuka.pipeline.AsukaInpaintPipeline` and
    :class:`~asuka.pipeline_flux.AsukaFluxFillPipeline`.

    A subclass provides ``inpaint(image, mask, *, generator, latents, prompt, negative_prompt,
    output_latents, callback_on_step_end, callback_on_step_end_tensor_inputs, **options)`` (the
    method on a working batch, returning ``(B, 3, H, W)`` in ``[-1, 1]`` or latents),
    :attr:`working_resolution`, :attr:`size_multiple`, :meth:`has_text_encoder` and, if the
    whole-image mode resizes, :meth:`whole_image_size`.
    """

    _asuka_components = ("mae", "aligner", "clip_aligner", "t5_aligner", "decoder")
    #: how to load the text encoders, for error messages
    _text_encoder_hint = "load the pipeline with its text encoder"

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path=None, **kwargs):
        """diffusers' loader, plus the shipped models' names (``"asuka-small"``) and ``None``
        (the default shipped model); see :func:`asuka.registry.resolve_model`."""
        from asuka.registry import resolve_model

        return super().from_pretrained(resolve_model(pretrained_model_name_or_path), **kwargs)

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

    # ------------------------------------------------------------------ backbone facts
    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent pixel (8 for SD-1.5 and FLUX)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def size_multiple(self) -> int:
        """Working sizes are padded to multiples of this (the VAE factor; x2 for FLUX's packing)."""
        return self.vae_scale_factor

    @property
    def native_resolution(self) -> int:
        """The side the backbone was trained at, in pixels."""
        raise NotImplementedError

    @property
    def working_resolution(self) -> int:
        """Crop mode's working side in pixels: the model folder's ``default_resolution`` (chosen for
        a small model on validation photos) when it has one, else :attr:`native_resolution`."""
        return int(self.config.get("default_resolution") or self.native_resolution)

    def register_defaults(self, default_steps: int | None, default_resolution: int | None,
                          default_poisson_blend: float | None = None) -> None:
        """Check and keep (in ``model_index.json``) the folder's defaults for calls that give none:
        ``default_steps`` (denoising steps), ``default_resolution`` (crop mode's working side,
        a multiple of :attr:`size_multiple`) and ``default_poisson_blend`` (the fade of the
        Poisson seam blending, :mod:`asuka.seams`, in working pixels; ``None``: no blending)."""
        steps = check_default_steps(default_steps)
        if default_poisson_blend is not None:
            default_poisson_blend = check_fade("default_poisson_blend", default_poisson_blend)
        if default_resolution is not None:
            m = self.size_multiple
            if (isinstance(default_resolution, bool) or not isinstance(default_resolution, int)
                    or default_resolution < m or default_resolution % m):
                raise InputError(f"default_resolution must be None or a positive multiple of {m} pixels "
                                 f"(the latent grid), got {default_resolution!r}")
            default_resolution = int(default_resolution)
        self.register_to_config(default_steps=steps, default_resolution=default_resolution,
                                default_poisson_blend=default_poisson_blend)

    @property
    def default_num_inference_steps(self) -> int:
        """Steps when a call gives none: the model folder's ``default_steps`` (a model trained for
        few-step sampling records what suits it), else :data:`DEFAULT_STEPS`."""
        return folder_default_steps(self.config)

    def seam_fade(self, poisson_blend: float | bool | None = None) -> float | None:
        """The fade (working pixels) of the Poisson seam blending that a call's ``poisson_blend``
        asks for, ``None`` for none: ``None`` -> the folder's ``default_poisson_blend``; ``False``
        -> none; ``True`` -> the folder's fade, else 0; a number >= 0 -> that fade."""
        return resolve_seam_fade(poisson_blend, self.config.get("default_poisson_blend"))

    def has_text_encoder(self) -> bool:
        raise NotImplementedError

    def whole_image_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """Whole-image mode's working size for an image of ``size = (h, w)``: its own size."""
        return int(size[0]), int(size[1])

    # ------------------------------------------------------------------ step 1 (shared)
    def encode_prior(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Step 1: the MAE prior ``(B, L, mae.decoder_embed_dim)`` from the visible pixels only.

        A sample whose every token touches the hole (an all-hole mask) gets a finite prior, the
        MAE decoder's answer to "nothing known" (see ``MAEPrior.prior_features``); the other
        samples of the batch are unaffected.
        """
        dtype = self.mae.dtype
        return self.mae.prior(image.to(dtype), mask.to(dtype))

    # ========================================================================================
    # The user-facing call: the same for both backbones (defaults: the class attributes below)
    # ========================================================================================
    #: ``condition_weight`` / ``guidance_scale`` when not given (SD-1.5: 1 and 1; FLUX: 0.5 and 30)
    default_condition_weight: float = 1.0
    default_guidance_scale: float = 1.0
    #: extra keyword options a backbone's ``inpaint`` takes (SD-1.5: ``eta``)
    backbone_options: tuple[str, ...] = ()
    supports_negative_prompt: bool = True

    @torch.no_grad()
    def __call__(
        self,
        image,
        mask_image,
        num_inference_steps: int | None = None,
        *,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        condition: str | None = None,
        condition_weight: float | None = None,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        guidance_scale: float | None = None,
        decoder: str | None = None,
        composite: bool = True,
        feather: float = 0.0,
        poisson_blend: float | bool | None = None,
        padding_mask_crop: int | None = DEFAULT_CROP_MARGIN,
        full_image: bool = False,
        resolution: int | None = None,
        height: int | None = None,
        width: int | None = None,
        pad_mode: str = "reflect",
        resize_mask: bool = False,
        num_images_per_prompt: int = 1,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        **options,
    ):
        """Inpaint ``image`` where ``mask_image`` is 1.

        Args:
            image: one image or a batch: PIL, numpy (uint8, or float in [0, 1]), torch
                (float in [-1, 1], the package convention, or uint8), or a list; sizes may differ.
                See :mod:`asuka.io` for the accepted shapes. PIL and uint8 images are converted
                to float only in the worked region.
            mask_image: the matching mask(s), 1 / white = hole (one mask is used for every image).
            num_inference_steps: denoising steps (default :attr:`default_num_inference_steps`:
                the model's ``default_steps``, else 50).
            generator: one ``torch.Generator``, or one per output image (``len(image) *
                num_images_per_prompt``); a batch with per-image generators equals single runs.
            latents: the initial noise at the working size (SD-1.5: ``(B, 4, h, w)``; FLUX:
                ``(B, 16, h, w)`` or packed ``(B, h/2 * w/2, 64)``, e.g. the release's ``get_noise``);
                all images must share one working size. Default: drawn from ``generator``.
            condition: ``"prior"`` (ASUKA, the default), ``"null"`` (the backbone's baseline:
                the aligners' null condition, the empty-prompt embedding) or ``"text"`` (the
                backbone with ``prompt``; the default when ``prompt`` is given; needs the
                backbone's text encoder(s)).
            condition_weight: ``w`` in ``null + w * (aligned_prior - null)`` (default
                :attr:`default_condition_weight`: 1 for SD-1.5, the release's 0.5 for FLUX).
            prompt, negative_prompt: text condition and (SD-1.5 only) its null.
            guidance_scale: SD-1.5: classifier-free guidance against the null condition, 1 = none
                (ASUKA used none); FLUX: the distilled guidance, 30 as released.
            decoder: ``"asuka"`` (mask-conditioned decoder) or ``"vae"``; default: the ASUKA
                decoder when the pipeline has one, else the VAE decoder.
            composite: paste the known pixels back (the output keeps them exactly when
                ``feather == 0``); ``False`` returns the model's output (in crop mode: the
                whole crop region, pasted into the original).
            feather: width in pixels of a soft seam *outside* the hole; 0 = hard paste.
            poisson_blend: re-solve the hole so it meets its surroundings (gradient-domain
                blending of the model's output, :mod:`asuka.seams`; not in the paper): solved at
                the working size, then refined at the output size (``OUTPUT_BLEND_ITERATIONS``
                at most; over the fade, the hole there continues the surroundings' edges,
                :func:`asuka.seams.continuation_guide`) before the known pixels are pasted back
                (with ``composite=False``: the working size's pass only). ``None``: the model
                folder's ``default_poisson_blend`` (off when it has none); ``False``: off;
                ``True``: on, with the folder's fade (else 0); a number >= 0: on, the fill's
                gradients fading in over that many working pixels from the hole's edge.
            padding_mask_crop: crop mode (the default) -- margin in pixels: work on a square-ish
                region around the hole's bounding box (at least ``resolution`` wide, clamped to
                the image), resized so its longer side is at most ``resolution``; only that
                region is pasted back. ``None`` = whole-image mode.
            full_image: whole-image mode, whatever ``padding_mask_crop`` says: SD-1.5 at the
                image's own size; FLUX sized as the release's demo (0.5-2 megapixels, sides
                multiples of 32).
            resolution: crop mode's working side (default :attr:`working_resolution`: 512 for
                SD-1.5, 1024 for FLUX).
            height, width: resize the worked region (crop or whole image) to exactly this
                working size (multiples of :attr:`size_multiple`: 8, FLUX 16).
            pad_mode: ``"reflect"`` or ``"replicate"`` padding to :attr:`size_multiple`.
            resize_mask: resize a mask of another size to the image's (nearest) instead of failing.
            num_images_per_prompt: outputs per input image (each with its own noise).
            output_type: ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"`` (the final latents at
                the working size, unpacked; every item is run, even with an empty mask).
            return_dict: return :class:`AsukaPipelineOutput` (else a 1-tuple ``(images,)``).
            callback_on_step_end: ``f(pipe, step, timestep, tensors) -> dict`` after each step
                (called per working batch); may return new ``"latents"``.
            callback_on_step_end_tensor_inputs: names passed in ``tensors`` (default
                ``["latents"]``; the choice: ``_callback_tensor_inputs``).
            options: the backbone's own (:attr:`backbone_options`; SD-1.5: ``eta``, DDIM's eta).

        Returns:
            :class:`AsukaPipelineOutput` with images of the inputs' sizes. An item with an empty
            mask is returned unchanged without running any model.
        """
        unknown = sorted(set(options) - set(self.backbone_options))
        if unknown:
            raise InputError(f"{type(self).__name__}: unknown options {unknown}"
                             + (f"; it also takes {list(self.backbone_options)}" if self.backbone_options else ""))
        if negative_prompt is not None and not self.supports_negative_prompt:
            raise InputError(f"{type(self).__name__} takes no negative_prompt (a guidance-distilled backbone)")
        return self._call(
            image, mask_image, generator=generator, latents=latents, prompt=prompt,
            negative_prompt=negative_prompt, composite=composite, feather=feather,
            seam_fade=self.seam_fade(poisson_blend), padding_mask_crop=padding_mask_crop, full_image=full_image,
            resolution=resolution,
            height=height, width=width, pad_mode=pad_mode, resize_mask=resize_mask,
            num_images_per_prompt=num_images_per_prompt, output_type=output_type, return_dict=return_dict,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            # the method's own options, passed to inpaint()
            num_inference_steps=(self.default_num_inference_steps if num_inference_steps is None
                                 else num_inference_steps),
            condition=condition or ("text" if prompt is not None else "prior"),
            condition_weight=self.default_condition_weight if condition_weight is None else condition_weight,
            guidance_scale=self.default_guidance_scale if guidance_scale is None else guidance_scale,
            decoder=decoder or ("asuka" if self.decoder is not None else "vae"), **options)

    def _call(self, image, mask_image, *, generator, latents, prompt, negative_prompt, composite: bool,
              feather: float, seam_fade: float | None, padding_mask_crop: int | None, full_image: bool,
              resolution: int | None, height: int | None, width: int | None, pad_mode: str, resize_mask: bool,
              num_images_per_prompt: int, output_type: str, return_dict: bool,
              callback_on_step_end: Callable | None, callback_on_step_end_tensor_inputs, **options):
        # 0. Check the options and bring the inputs to items (original resolution, CPU, not converted).
        tensor_inputs = list(callback_on_step_end_tensor_inputs or ["latents"])
        crop = not full_image and padding_mask_crop is not None
        self._check_options(prompt=prompt, feather=feather, pad_mode=pad_mode, padding_mask_crop=padding_mask_crop,
                            resolution=resolution, height=height, width=width,
                            num_images_per_prompt=num_images_per_prompt, output_type=output_type,
                            callback_tensor_inputs=tensor_inputs, **options)
        items = self._prepare_items(image, mask_image, prompt, negative_prompt,
                                    resize_mask=resize_mask, repeat=num_images_per_prompt)
        generators = _per_item_generators(generator, len(items))
        resolution = resolution or self.working_resolution

        results: list[torch.Tensor | None] = [None] * len(items)
        todo = []
        for i, item in enumerate(items):
            if output_type != "latent" and not bool(item.mask.any()):
                continue  # nothing to fill: the input, unchanged (no model runs)
            full = (0, 0, *item.mask.shape)
            item.box = crop_box(item.mask, padding_mask_crop, resolution) if crop and item.mask.any() else full
            if height is not None or width is not None:
                item.work_size = (height or _round_to(item.box[2], self.size_multiple),
                                  width or _round_to(item.box[3], self.size_multiple))
            elif crop:
                item.work_size = working_size(item.box[2:], resolution)
            else:
                item.work_size = self.whole_image_size(item.box[2:])
            todo.append(i)

        # Items that share a working size are run as one batch.
        groups = _group_by(todo, key=lambda i: items[i].work_size)
        if latents is not None and len(groups) > 1:
            raise InputError(f"latents: the images need {len(groups)} different working sizes "
                             f"({', '.join(f'{h}x{w}' for h, w in groups)}); give latents for one size at a time")
        for work_size, indices in groups.items():
            group = [items[i] for i in indices]
            work = [to_working(_region_float(it.source, it.box), _region_mask(it.mask, it.box), None, work_size)
                    for it in group]
            image_b, pads = pad_to_multiple(torch.stack([w[0] for w in work]), self.size_multiple, pad_mode)
            mask_b, _ = pad_to_multiple(torch.stack([w[1] for w in work]), self.size_multiple, pad_mode)
            del work
            group_generator = (generator if generators is None
                               else [generators[i] for i in indices] if len(indices) > 1
                               else generators[indices[0]])
            text = options.get("condition") == "text"
            # 1.-5. MAE prior -> aligner(s) -> frozen backbone -> mask-conditioned decoder
            out = self.inpaint(
                image_b, mask_b, generator=group_generator,
                latents=None if latents is None else _select(latents, indices, len(items)),
                prompt=[it.prompt for it in group] if text else None,
                negative_prompt=[it.negative_prompt for it in group] if text else None,
                output_latents=output_type == "latent", callback_on_step_end=callback_on_step_end,
                callback_on_step_end_tensor_inputs=tensor_inputs, **options)
            if seam_fade is not None and output_type != "latent":
                # 5a. (not in the paper, asuka.seams) the hole re-solved to meet its surroundings
                out = seams.poisson_blend(out.float(), image_b.to(out.device), mask_b.to(out.device), fade=seam_fade)
            out = out.float().cpu()
            for k, i in enumerate(indices):
                # 6. (composite) back to the original resolution; pasted when formatting
                results[i] = out[k] if output_type == "latent" else from_working(out[k], pads, items[i].box[2:])

        images = self._format(items, results, output_type, composite=composite, feather=feather, seam_fade=seam_fade)
        self.maybe_free_model_hooks()
        return AsukaPipelineOutput(images=images) if return_dict else (images,)

    def _format(self, items: list[_Item], results: list, output_type: str, *, composite: bool, feather: float,
                seam_fade: float | None):
        """Paste each generated region into (a copy of) its original and format the batch."""
        if output_type == "latent":
            return _stack_if_same(results)
        outputs = []
        for item, generated in zip(items, results):
            if output_type == "pil":
                # one copy of the original (PIL's own copy for a PIL input), the region pasted in
                canvas = item.source.copy() if isinstance(item.source, PIL.Image.Image) else \
                    PIL.Image.fromarray(_full_uint8(item.source))
                if generated is not None:
                    top, left, _, _ = item.box
                    region = _paste_value(item, generated, composite=composite, feather=feather,
                                          seam_fade=seam_fade)
                    canvas.paste(PIL.Image.fromarray(io.tensor_to_uint8(region)[0]), (left, top))
                outputs.append(canvas)
            else:
                canvas = _full_float(item.source)  # (3, H, W) in [-1, 1], a copy
                if generated is not None:
                    top, left, h, w = item.box
                    canvas[:, top:top + h, left:left + w] = _paste_value(item, generated, composite=composite,
                                                                         feather=feather, seam_fade=seam_fade)
                outputs.append(canvas)
        if output_type == "pil":
            return outputs
        if output_type == "np":
            arrays = [io.tensor_to_numpy(o)[0] for o in outputs]
            return np.stack(arrays) if len({a.shape for a in arrays}) == 1 else arrays
        return _stack_if_same(outputs)

    # ---------------------------------------------------------------------------- checks
    def _check_options(self, *, num_inference_steps, condition, condition_weight, prompt, decoder,
                       guidance_scale, feather, pad_mode, padding_mask_crop, resolution, height, width,
                       num_images_per_prompt, output_type, callback_tensor_inputs, **_) -> None:
        positive_int("num_inference_steps", num_inference_steps)
        positive_int("num_images_per_prompt", num_images_per_prompt)
        if condition not in CONDITIONS:
            raise InputError(f"condition must be one of {CONDITIONS}, got {condition!r}")
        if prompt is not None and condition != "text":
            raise InputError(f"a prompt is only used with condition='text', got condition={condition!r}")
        if condition == "text":
            if prompt is None:
                raise InputError("condition='text' needs a prompt")
            if not self.has_text_encoder():
                raise InputError(f"condition='text' needs the backbone's text encoder(s) and tokenizer(s); "
                                 f"{self._text_encoder_hint}")
        if decoder not in DECODERS:
            raise InputError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        if decoder == "asuka" and self.decoder is None:
            raise InputError("decoder='asuka' but this pipeline has no ASUKA decoder; use decoder='vae' "
                             "or load one (convert --decoder)")
        for name, value in (("condition_weight", condition_weight), ("guidance_scale", guidance_scale),
                            ("feather", feather)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputError(f"{name} must be a finite number, got {value!r}")
        if feather < 0:
            raise InputError(f"feather must be >= 0 pixels, got {feather}")
        if pad_mode not in PAD_MODES:
            raise InputError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
        if padding_mask_crop is not None:
            positive_int("padding_mask_crop", padding_mask_crop, minimum=0)
        if resolution is not None:
            positive_int("resolution", resolution, minimum=self.size_multiple)
        for name, value in (("height", height), ("width", width)):
            if value is not None:
                positive_int(name, value, minimum=self.size_multiple)
                if value % self.size_multiple:
                    raise InputError(f"{name} must be a multiple of {self.size_multiple}, got {value}")
        if output_type not in OUTPUT_TYPES:
            raise InputError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        unknown = set(callback_tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown:
            raise InputError(f"callback_on_step_end_tensor_inputs: unknown names {sorted(unknown)}; "
                             f"expected some of {self._callback_tensor_inputs}")

    def _prepare_items(self, image, mask_image, prompt, negative_prompt, *, resize_mask, repeat) -> list[_Item]:
        sources = [_as_source(x) for x in io._image_items(image)]
        masks = [_as_bool_mask(m) for m in io._mask_items(mask_image)]
        if len(masks) == 1 and len(sources) > 1:
            masks = masks * len(sources)
        if len(masks) != len(sources):
            raise InputError(f"got {len(sources)} images and {len(masks)} masks; expected one mask per "
                             "image (or a single mask for all)")
        prompts = _per_image(prompt, len(sources), "prompt")
        negatives = _per_image(negative_prompt, len(sources), "negative_prompt")
        items = []
        for k, (src, m) in enumerate(zip(sources, masks)):
            height, width = _source_size(src)
            if tuple(m.shape) != (height, width):
                what = f"mask {k}" if len(sources) > 1 else "mask"
                fitted = io.fit_mask(m.numpy().astype(np.float32), (width, height), resize=resize_mask, what=what)
                m = torch.from_numpy(fitted) > 0.5
            items += [_Item(src, m, prompts[k], negatives[k]) for _ in range(repeat)]
        return items


def positive_int(name: str, value, minimum: int = 1) -> None:
    """Raise :class:`InputError` unless ``value`` is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")


# --------------------------------------------------------------------------------------------
# Inputs kept as given: only the worked region is converted to float
# --------------------------------------------------------------------------------------------
def _as_source(image):
    """One image -> a source: PIL RGB, uint8 array (H, W, C), uint8 tensor (3, H, W), or float (3, H, W)."""
    if isinstance(image, PIL.Image.Image):
        return io.pil_to_rgb(image)
    if isinstance(image, np.ndarray) and image.dtype == np.uint8:
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.shape[-1] not in (1, 3):
            return io.image_to_tensor(image)  # raises the shape error
        return image
    if isinstance(image, torch.Tensor) and image.dtype == torch.uint8:
        if image.ndim != 3 or image.shape[0] != 3:
            return io.image_to_tensor(image)  # raises the shape error
        return image.detach().cpu()
    return io.image_to_tensor(image)  # float inputs (range-checked) and errors for anything else


def _source_size(src) -> tuple[int, int]:
    if isinstance(src, PIL.Image.Image):
        return src.height, src.width
    if isinstance(src, np.ndarray):
        return src.shape[0], src.shape[1]
    return src.shape[-2], src.shape[-1]


def _region_float(src, box) -> torch.Tensor:
    """``(3, h, w)`` float32 in ``[-1, 1]`` of the region ``box = (top, left, h, w)``."""
    top, left, h, w = box
    if isinstance(src, PIL.Image.Image):
        src = np.asarray(src.crop((left, top, left + w, top + h)))
        top, left = 0, 0
    if isinstance(src, np.ndarray):
        # a copy of the region only (the caller's array may be read-only)
        region = torch.from_numpy(np.array(src[top:top + h, left:left + w])).permute(2, 0, 1)
        region = region.float() / 127.5 - 1.0
        return region.expand(3, -1, -1).contiguous() if region.shape[0] == 1 else region
    region = src[:, top:top + h, left:left + w]
    return region.float() / 127.5 - 1.0 if src.dtype == torch.uint8 else region.clone()


def _full_uint8(src) -> np.ndarray:
    """``(H, W, 3)`` uint8, a new array."""
    if isinstance(src, PIL.Image.Image):
        return np.array(src)
    if isinstance(src, np.ndarray):
        return np.repeat(src, 3, axis=2) if src.shape[-1] == 1 else src.copy()
    if src.dtype == torch.uint8:
        return src.permute(1, 2, 0).numpy().copy()
    return io.tensor_to_uint8(src)[0]


def _full_float(src) -> torch.Tensor:
    """``(3, H, W)`` float32 in ``[-1, 1]``, a new tensor."""
    return _region_float(src, (0, 0, *_source_size(src)))


def _as_bool_mask(mask) -> torch.Tensor:
    """One mask -> ``(H, W)`` bool (True = hole), binarised at 50% (rule: :mod:`asuka.io`).

    The common large cases (an 8-bit grayscale PIL mask, a 2-D uint8 array) are compared in
    uint8, without the full-size float arrays of the general rule; the result is the same."""
    if isinstance(mask, PIL.Image.Image) and mask.mode in ("L", "1") and "transparency" not in mask.info:
        return torch.from_numpy(np.asarray(mask.convert("L")) >= 128)  # L / 255 >= 0.5
    if isinstance(mask, np.ndarray) and mask.dtype == np.uint8 and mask.ndim == 2 and mask.size:
        return torch.from_numpy(mask >= (1 if int(mask.max()) <= 1 else 128))  # 0/1 or 0/255 (io's rule)
    if isinstance(mask, torch.Tensor) and mask.dtype == torch.bool:
        m = mask.detach().cpu()
        m = m[0] if m.ndim == 3 and m.shape[0] == 1 else m
        if m.ndim == 2:
            return m
    return io.mask_to_tensor(mask)[0] > 0.5


def _region_mask(mask: torch.Tensor, box) -> torch.Tensor:
    top, left, h, w = box
    return mask[top:top + h, left:left + w].float()[None]


def _paste_value(item: _Item, generated: torch.Tensor, *, composite: bool, feather: float,
                 seam_fade: float | None = None) -> torch.Tensor:
    """What goes into the region: the output, or the composite with the known pixels (with the
    seam blending's pass at the output size first, when a fade is given)."""
    if not composite:
        return generated
    original, mask = _region_float(item.source, item.box), _region_mask(item.mask, item.box)
    if seam_fade is not None:
        # 6a. The working size's blend (5a) met the surroundings as they look at the working size;
        #     resized back, its first pixels miss the original's detail. Re-solve at the output size,
        #     the fade in the same proportion, from the resized blend: its smooth part is solved
        #     already, so a bounded number of iterations does (work ~ the region's pixels).
        #     Over the fade the hole follows the surroundings' edges continued into it
        #     (seams.continuation_guide) rather than a smooth membrane.
        scale = max(item.box[2] / item.work_size[0], item.box[3] / item.work_size[1])
        guide = seams.continuation_guide(original[None], mask[None]) if seam_fade > 0 else None
        generated = seams.poisson_blend(generated[None], original[None], mask[None], fade=seam_fade * scale,
                                        guide=guide, max_iter=OUTPUT_BLEND_ITERATIONS)[0]
    return composite_known(original, generated, mask, feather)


def _select(latents: torch.Tensor, indices: list[int], n: int) -> torch.Tensor:
    """Rows of a user's ``latents`` for one working group (all rows when it has one per group item)."""
    if latents.shape[0] == n and len(indices) != n:
        return latents[indices]
    return latents


def _round_to(value: int, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


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


def _stack_if_same(tensors: list[torch.Tensor]):
    return torch.stack(tensors) if len({tuple(t.shape) for t in tensors}) == 1 else tensors


# --------------------------------------------------------------------------------------------
# Helpers: geometry (crop around the hole, resize, pad, paste back, composite)
# --------------------------------------------------------------------------------------------
def hole_bbox(mask) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` (ends exclusive) of the hole's bounding box in an ``(H, W)`` mask.

    ``mask`` is a torch tensor or a numpy array (bool or numbers; nonzero = hole); numpy masks
    are never converted, so a full-size uint8 / bool photo mask costs no float copy.
    Raises :class:`ValueError` for a mask with no hole.
    """
    if isinstance(mask, np.ndarray):
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    else:
        rows, cols = torch.nonzero(mask.any(dim=1)).flatten(), torch.nonzero(mask.any(dim=0)).flatten()
    if len(rows) == 0:
        raise ValueError("the mask has no hole: no bounding box")
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def crop_box(mask, margin: int, resolution: int) -> tuple[int, int, int, int]:
    """The region worked on in crop mode: ``(top, left, height, width)``.

    A square of side ``max(hole bbox + 2 * margin, resolution)`` centred on the hole's bounding
    box, clamped to the image (it becomes a rectangle only where the image is too small),
    shifted inside the image. So a small hole in a large photo gets a ``resolution``-sized
    region of native pixels, and a large hole gets a region that holds it with ``margin``.

    The box holds the whole bounding box, so cropping it out and asking again gives the whole
    crop: ``crop_box(mask[box], ...) == (0, 0, h, w)`` (``asuka serve`` relies on this to hand
    the pipeline only the box of a large photo).

    Args:
        mask: ``(H, W)`` torch tensor or numpy array, nonzero / True = hole, not empty.
    """
    height, width = mask.shape
    y0, y1, x0, x1 = hole_bbox(mask)
    y0, y1, x0, x1 = y0 - margin, y1 + margin, x0 - margin, x1 + margin
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
    """Crop ``box`` (``None``: the whole input) out of ``(3, H, W)`` / ``(1, H, W)`` and resize to ``size``.

    The image is resized with antialiased bicubic sampling; the mask so that a working pixel is
    a hole when *any* of the pixels it covers is (thin strokes survive the downscale, and
    nothing the user marked is treated as known context).
    """
    if box is not None:
        top, left, h, w = box
        image = image[:, top:top + h, left:left + w]
        mask = mask[:, top:top + h, left:left + w]
    if tuple(image.shape[-2:]) == tuple(size):
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
    import cv2  # opencv-python-headless, a core dependency (torchvision is not: README "Install")

    sigma = feather / 2.0
    kernel = 2 * math.ceil(2 * sigma) + 1
    plane = mask[0].detach().float().cpu().numpy()
    blurred = torch.from_numpy(cv2.GaussianBlur(plane, (kernel, kernel), sigmaX=sigma, sigmaY=sigma,
                                                borderType=cv2.BORDER_REFLECT_101))[None].to(mask)
    # At the hole's edge the blurred mask is ~0.5: doubling it puts the seam's centre outside.
    return torch.maximum(mask, (2.0 * blurred).clamp(0.0, 1.0))


def composite_known(original: torch.Tensor, generated: torch.Tensor, mask: torch.Tensor,
                    feather: float = 0.0) -> torch.Tensor:
    """Step 6: ``original`` where known, ``generated`` in the hole (soft seam if ``feather``)."""
    alpha = feather_mask(mask, feather)
    return original * (1.0 - alpha) + generated * alpha


# --------------------------------------------------------------------------------------------
# Loading: components, devices, dtypes, one-line errors
# --------------------------------------------------------------------------------------------
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
          "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
#: model_index.json ``_class_name`` -> module defining it
PIPELINES = {"AsukaInpaintPipeline": "asuka.pipeline", "AsukaFluxFillPipeline": "asuka.pipeline_flux"}


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


def resolve_dtype(dtype: str = "auto", device: torch.device | str = "cpu",
                  cuda_default: torch.dtype = torch.float16) -> torch.dtype:
    """``"auto"`` -> ``cuda_default`` on CUDA (float16 for SD-1.5, bfloat16 for FLUX), float32
    elsewhere; or a name of :data:`DTYPES`."""
    if dtype == "auto":
        return cuda_default if torch.device(device).type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; expected auto or one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def model_index(model: str | os.PathLike, **hub_kwargs) -> dict:
    """A folder's or hub repo's ``model_index.json`` (``{}`` for a folder without one)."""
    source = str(model)
    index_path = os.path.join(source, "model_index.json")
    try:
        if os.path.isfile(index_path):
            with open(index_path) as f:
                return json.load(f)
        if not os.path.exists(source):
            return dict(DiffusionPipeline.load_config(source, **hub_kwargs))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load model {source}: {first_line(exc)}") from None
    return {}


def pipeline_class(model: str | os.PathLike, **hub_kwargs):
    """The pipeline class a folder or hub repo holds, from its ``model_index.json`` (SD-1.5 if unknown)."""
    from importlib import import_module

    name = model_index(model, **hub_kwargs).get("_class_name", "AsukaInpaintPipeline")
    if name not in PIPELINES:
        raise CheckpointError(f"model {model}: model_index.json names {name!r}, not an ASUKA pipeline "
                              f"(expected one of {', '.join(PIPELINES)})")
    return getattr(import_module(PIPELINES[name]), name)


def model_default_steps(model: str | os.PathLike, **hub_kwargs) -> int:
    """The steps a model folder asks for when a call gives none (its ``default_steps``, else 50),
    read without loading the model (what :attr:`AsukaPipelineBase.default_num_inference_steps`
    of the loaded pipeline returns)."""
    return folder_default_steps(model_index(model, **hub_kwargs))


def folder_default_steps(index) -> int:
    """The steps of a ``model_index.json`` (or a pipeline's config): ``default_steps``, else 50."""
    return int(index.get("default_steps") or DEFAULT_STEPS)


def load_pipeline(model: str | os.PathLike | None = None, *, device: str = "auto", dtype: str = "auto", **kwargs):
    """Either ASUKA pipeline (chosen by the folder's ``model_index.json``) on a device, in a dtype.

    ``model``: a folder, hub id or shipped model name; ``None``: the shipped default model
    (:mod:`asuka.registry`), from any working directory.

    ``dtype="auto"``: float16 (SD-1.5) or bfloat16 (FLUX) on CUDA, float32 elsewhere. Failures
    (missing folder, unknown hub id, no network, broken files) raise :class:`CheckpointError`
    with one line naming the model.
    """
    from asuka.registry import resolve_model

    source = resolve_model(model)
    if os.path.exists(source) and not os.path.isfile(os.path.join(source, "model_index.json")):
        raise CheckpointError(f"model {source}: not a pipeline folder (no model_index.json); make one "
                              "with `asuka convert` or save_pretrained")
    torch_device = resolve_device(device)
    cls = pipeline_class(source, **kwargs)
    torch_dtype = resolve_dtype(dtype, torch_device, cuda_default=cls.cuda_dtype)
    try:
        with quiet_dtype_rename():
            pipe = cls.from_pretrained(source, torch_dtype=torch_dtype, **kwargs)
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, EnvironmentError) as exc:
        raise CheckpointError(f"cannot load model {source}: {first_line(exc)}") from None
    return pipe.to(torch_device)


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
def quiet_dtype_rename():
    # diffusers >= 0.42 renames torch_dtype to dtype; the versions we support all take torch_dtype.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
        yield


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    if "stacktrace above" in line:  # diffusers' hub errors point at a traceback the CLI does not print
        line = line.split(" Please check out the root cause in the stacktrace above")[0].rstrip(" .")
        cause = exc.__cause__ or exc.__context__
        if cause is not None and cause is not exc:
            line += f" (because: {first_line(cause)})"
    return line


def load_or_explain(loader, source: str, subfolder: str, what: str, **kwargs):
    """``loader(source, subfolder=...)`` with failures as one-line :class:`CheckpointError`."""
    try:
        with quiet_dtype_rename():
            return loader(source, subfolder=subfolder, **kwargs)
    except (OSError, ValueError, EnvironmentError) as exc:
        raise CheckpointError(f"{what}: cannot load {subfolder}/: {first_line(exc)}") from None


def shared_problems(mae, aligners: dict, vae, decoder) -> list[str]:
    """Incompatibilities of the parts both backbones have: MAE width vs each aligner's input,
    ASUKA decoder vs VAE latent channels (one sentence each)."""
    problems = []
    for name, aligner in aligners.items():
        if mae is not None and aligner is not None and mae.config.decoder_embed_dim != aligner.config.in_dim:
            problems.append(f"the MAE prior has width {mae.config.decoder_embed_dim} but the {name} "
                            f"expects {aligner.config.in_dim}")
    if decoder is not None and vae is not None:
        z = getattr(decoder.config, "latent_channels", None)
        if z is not None and z != vae.config.latent_channels:
            problems.append(f"the decoder takes {z} latent channels but the VAE makes "
                            f"{vae.config.latent_channels}")
    return problems


def component(value, cls, name: str, **release_kwargs):
    """A model instance, a ``save_pretrained`` folder, or an official release file -> model."""
    if isinstance(value, cls):
        return value
    if isinstance(value, (str, os.PathLike)):
        path = str(value)
        if os.path.isdir(path):
            try:
                return cls.from_pretrained(path)
            except (OSError, ValueError) as exc:
                raise CheckpointError(f"{name}: cannot load {cls.__name__} from {path}: {first_line(exc)}") from None
        if os.path.isfile(path):
            return cls.from_release(path, **release_kwargs)
        raise CheckpointError(f"{name}: no such file or folder: {path}")
    raise InputError(f"{name}: expected a {cls.__name__}, a folder or a release file, got {type(value).__name__}")


def resolve_seam_fade(poisson_blend: float | bool | None, folder_default: float | None) -> float | None:
    """:meth:`AsukaPipelineBase.seam_fade` for a folder whose ``default_poisson_blend`` is
    ``folder_default`` (also used before a model is loaded, from its ``model_index.json``)."""
    if poisson_blend is None or poisson_blend is True:
        return folder_default if poisson_blend is None or folder_default is not None else 0.0
    if poisson_blend is False:
        return None
    return check_fade("poisson_blend", poisson_blend, " (or None: the model's default, True: on, False: off)")


def blend_record(fade: float | None) -> float | bool:
    """How an output's recipe records the seam blending: the fade used, ``False`` for none."""
    return False if fade is None else fade


def check_fade(name: str, value, hint: str = "") -> float:
    """A Poisson seam blending fade (:mod:`asuka.seams`): a finite number >= 0 of working pixels."""
    if (isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating))
            or not math.isfinite(value) or value < 0):
        raise InputError(f"{name} must be a fade width in working pixels, a number >= 0{hint}, got {value!r}")
    return float(value)


def check_default_steps(default_steps) -> int | None:
    """A pipeline's ``default_steps`` argument: ``None`` or a positive int (kept in ``model_index.json``)."""
    if default_steps is None:
        return None
    if isinstance(default_steps, bool) or not isinstance(default_steps, int) or default_steps < 1:
        raise InputError(f"default_steps must be a positive int or None, got {default_steps!r}")
    return int(default_steps)
