"""The noise-prediction objective shared by the ``align`` and ``unet`` stages.

SD-inpainting's training step: encode the image and the masked image with the frozen VAE,
noise the image latents at a uniform timestep, and regress the UNet's output
``unet(cat(z_t, mask, masked-image latents), t, condition)`` onto the noise (or the
velocity for ``v_prediction`` schedules). Subclasses say which UNet (trained or frozen) and
which condition.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from asuka.training.stage import Stage, StepOutput


@torch.no_grad()
def inpainting_latents(vae, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator):
    """``(latents, mask at latent size, masked-image latents)``, latents scaled for the UNet.

    The image latents are a posterior sample (the noise the UNet learns to remove is then the
    only source of variation); the masked-image latents are the posterior mode, as the
    pipeline computes them at inference (:meth:`AsukaInpaintPipeline.prepare_mask_latents`).
    """
    sf = vae.config.scaling_factor
    image = image.to(vae.dtype)
    mask = mask.to(vae.dtype)
    latents = vae.encode(image).latent_dist.sample(generator=generator) * sf
    masked_latents = vae.encode(image * (1.0 - mask)).latent_dist.mode() * sf
    mask_latents = F.interpolate(mask, size=latents.shape[-2:])  # nearest, as diffusers' inpainting
    return latents, mask_latents, masked_latents


class NoisePredictionStage(Stage):
    """Base of the stages trained with the diffusion loss. Subclasses set ``self.vae``,
    ``self.scheduler`` and implement :meth:`unet` and :meth:`condition`."""

    def unet(self):
        """The UNet to call (a trained model from ``self.models`` or a frozen one)."""
        raise NotImplementedError

    def condition(self, batch: dict, step: int, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        """``(encoder_hidden_states (B, L, D), extra logs)`` for the batch."""
        raise NotImplementedError

    def loss(self, batch: dict, step: int, *, generator) -> StepOutput:
        image, mask = batch["image"], batch["mask"]
        latents, mask_latents, masked_latents = inpainting_latents(self.vae, image, mask, generator)
        b = latents.shape[0]
        noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (b,), generator=generator,
                          device=latents.device)
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
