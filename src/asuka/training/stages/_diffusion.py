"""The denoising objectives of the ``align`` and ``unet`` stages, one per backbone kind.

* sd15 -- SD-inpainting's training step: encode the image and the masked image with the frozen
  VAE, noise the image latents at a uniform timestep, and regress the UNet's output
  ``unet(cat(z_t, mask, masked-image latents), t, condition)`` onto the noise (or the velocity
  for ``v_prediction`` schedules).
* flux -- FLUX-Fill's flow matching (rectified flow): ``x_t = (1 - t) x_0 + t n`` on the packed,
  scaled and shifted latents, ``t`` uniform then shifted by the resolution-dependent ``mu`` of
  the inference schedule, and the transformer's velocity regressed onto ``n - x_0``. The fill
  input, the condition, the ids and the transformer call are :mod:`asuka.flux`'s, the code the
  pipeline runs.

Subclasses say which denoiser (trained or frozen) and which condition.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from asuka import flux
from asuka.errors import InputError
from asuka.training.config import TrainConfig
from asuka.training.stage import Stage, StepOutput


@dataclasses.dataclass
class DenoisingConfig(TrainConfig):
    """Options of the stages trained with their backbone's denoising loss.

    ``timestep_range``: ``[first, last]`` training timesteps (inclusive; sd15 backbones; default
    every one). A UNet run with one DDIM step on a trailing zero-terminal-SNR schedule is only
    ever called at the last timestep, where ``v = -x_0``: ``[999, 999]`` trains what is trained
    (the UNet, or the aligner through the frozen UNet) for that call -- the deployed one --
    instead of spreading it over all noise levels.
    """

    timestep_range: tuple[int, int] | None = None

    def validate(self) -> None:
        super().validate()
        r = self.timestep_range
        if r is not None and (len(r) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in r)
                              or not 0 <= r[0] <= r[1]):
            raise InputError(f"config timestep_range: expected [first, last] integers with 0 <= first <= last, "
                             f"got {r!r}")


@torch.no_grad()
def inpainting_latents(vae, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator):
    """``(latents, mask at latent size, masked-image latents)``, latents scaled for the UNet.

    The image latents are a posterior sample (the noise the UNet learns to remove is then the
    only source of variation); the masked-image latents are the posterior mode, as the
    pipeline computes them at inference (:meth:`AsukaInpaintPipeline.prepare_mask_latents`).
    """
    sf = vae.config.scaling_factor
    latents = vae.encode(image.to(vae.dtype)).latent_dist.sample(generator=generator) * sf
    mask_latents, masked_latents = hole_inputs(vae, image, mask)
    return latents, mask_latents, masked_latents


@torch.no_grad()
def hole_inputs(vae, image: torch.Tensor, mask: torch.Tensor):
    """``(mask at latent size, masked-image latents)``: the two inpainting inputs of the UNet
    besides ``z_t`` (masked-image latents: posterior mode, scaled; mask: nearest downsampling,
    as diffusers' inpainting)."""
    image, mask = image.to(vae.dtype), mask.to(vae.dtype)
    masked_latents = vae.encode(image * (1.0 - mask)).latent_dist.mode() * vae.config.scaling_factor
    return F.interpolate(mask, size=masked_latents.shape[-2:]), masked_latents


def flow_time(scheduler, u: torch.Tensor, image_seq_len: int) -> torch.Tensor:
    """Training flow times from uniform ``u`` in ``(0, 1)``: shifted as the inference schedule is
    (FLUX: dynamic shift with ``mu`` from the token count; otherwise the config's static shift)."""
    cfg = scheduler.config
    if cfg.get("use_dynamic_shifting"):
        return scheduler.time_shift(flux.flow_shift(scheduler, image_seq_len), 1.0, u)
    shift = cfg.get("shift", 1.0)
    return shift * u / (1 + (shift - 1) * u)


def flow_matching_loss(transformer, vae, scheduler, image: torch.Tensor, mask: torch.Tensor, condition,
                       generator: torch.Generator, *, guidance: float) -> torch.Tensor:
    """FLUX-Fill's flow-matching loss for one batch; ``condition`` = ``(pooled (B, Dp), txt (B, T, Dt))``.

    The clean latents are a posterior sample (as the release encodes); the fill input is built
    exactly as at inference (:func:`asuka.flux.fill_condition`, posterior mode).
    """
    with torch.no_grad():
        x0 = flux.encode_latents(vae, image, sample=True, generator=generator).float()  # (B, C, h, w)
        fill = flux.fill_condition(vae, image, mask)
    h, w = x0.shape[-2:]
    x0 = flux.pack_latents(x0)  # (B, L, 4C)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    u = torch.rand(x0.shape[0], generator=generator, device=x0.device).clamp(1e-5, 1 - 1e-5)
    t = flow_time(scheduler, u, x0.shape[1]).view(-1, 1, 1)
    x_t = (1 - t) * x0 + t * noise
    pooled, txt = condition
    v = flux.predict_velocity(transformer, x_t, fill, t.view(-1), pooled=pooled, txt=txt,
                              img_ids=flux.latent_image_ids(h, w, x0.device), guidance=guidance)
    return F.mse_loss(v.float(), noise - x0)


class NoisePredictionStage(Stage):
    """Base of the stages trained with the denoising loss of their backbone (``config.backbone.kind``).
    Subclasses set ``self.vae``, ``self.scheduler`` and implement :meth:`unet` and :meth:`condition`;
    for a flux backbone :meth:`unet` returns the transformer and the condition is ``(pooled, txt)``,
    and ``config.guidance`` is the distilled guidance value fed to the transformer."""

    def unet(self):
        """The denoiser to call (a trained model from ``self.models`` or a frozen one)."""
        raise NotImplementedError

    def timestep_bounds(self) -> tuple[int, int]:
        """``(first, last)`` training timesteps, inclusive (sd15): ``config.timestep_range``, by
        default all of the schedule's. Subclasses call it at the end of ``build`` so that a range
        past the schedule fails there."""
        n = self.scheduler.config.num_train_timesteps
        r = self.config.timestep_range
        if r is None:
            return 0, n - 1
        if r[1] >= n:
            raise InputError(f"config timestep_range: the schedule has timesteps 0-{n - 1}, got {list(r)}")
        return r[0], r[1]

    def condition(self, batch: dict, step: int, generator: torch.Generator) -> tuple[object, dict]:
        """``(condition, extra logs)`` for the batch: ``encoder_hidden_states (B, L, D)`` for sd15,
        ``(pooled (B, Dp), txt (B, T, Dt))`` for flux."""
        raise NotImplementedError

    def loss(self, batch: dict, step: int, *, generator) -> StepOutput:
        if self.config.backbone.is_flux:
            cond, logs = self.condition(batch, step, generator)
            loss = flow_matching_loss(self.unet(), self.vae, self.scheduler, batch["image"], batch["mask"], cond,
                                      generator, guidance=self.config.guidance)
            return StepOutput(loss, logs)
        image, mask = batch["image"], batch["mask"]
        latents, mask_latents, masked_latents = inpainting_latents(self.vae, image, mask, generator)
        b = latents.shape[0]
        noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
        first, last = self.timestep_bounds()
        t = torch.randint(first, last + 1, (b,), generator=generator, device=latents.device)
        noisy = self.scheduler.add_noise(latents, noise, t)
        cond, logs = self.condition(batch, step, generator)
        unet = self.unet()
        dtype = next(unet.parameters()).dtype
        model_input = torch.cat([noisy, mask_latents, masked_latents], dim=1).to(dtype)
        pred = unet(model_input, t, encoder_hidden_states=cond.to(dtype)).sample
        if self.scheduler.config.prediction_type == "v_prediction":
            target = self.scheduler.get_velocity(latents, noise, t)
        else:
            target = noise
        return StepOutput(F.mse_loss(pred.float(), target.float()), logs)
