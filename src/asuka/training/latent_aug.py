"""Offline latent augmentation for the decoder stage (``asuka make-latent-aug``).

For a seeded ``fraction`` of the training images (paper: 50%), one random crop each, the
frozen backbone's one-step estimate of the clean latent. SD-1.5 (``backbone.kind: sd15``)::

    z0      = VAE encoder mean of the crop (scaled)
    z_t     = sqrt(abar_t) z0 + sqrt(1 - abar_t) eps,      t ~ U[t_min, t_max)  (500, 1000)
    eps_hat = UNet(cat(z_t, all-zero mask, z0), t, null condition)
    z0_hat  = (z_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)

FLUX.1-Fill (``backbone.kind: flux``), on the packed, scaled and shifted latents, with the flow
time ``s = t / 1000`` (the scheduler's timestep scale) and the fill input of an all-zero mask::

    x_s     = (1 - s) x0 + s eps
    v_hat   = transformer(x_s, fill(image, all-zero mask), s, null condition)     # asuka.flux
    x0_hat  = x_s - s v_hat

With ``masked: true`` (a departure from the paper, for backbones sampled in very few steps) the
estimate is made as at inference instead: a training mask is drawn per image (``masks``, seeded
per id), the UNet sees ``cat(z_t, mask, masked-image latents)`` (FLUX: the fill input of that
mask), and the mask is stored with the latent; the decoder stage then trains on that crop with
that mask, so it learns to turn the backbone's actual fill of a hole into the picture, not only
to undo the drift of a fully known image. With ``t_min = t_max - 1 = 999`` and a one-step
sampler this is exactly the latent the pipeline decodes.

The estimate is written once to ``<output_dir>/latents/<image id>.safetensors`` in the latent
space a decoder takes (``z0_hat / scaling`` for SD, ``x0_hat / scaling + shift`` for FLUX),
as float16, with the crop box and ``t``. The
decoder stage (``latent_aug.dir``) then trains on ``z0_hat`` instead of the encoder's latent
for those images, cut at the same crop: latents that carry the backbone's typical errors
(colour shifts, blur) the decoder must learn to undo.

The run is resumable (images already written are skipped) and splits the images over
``accelerate launch`` processes. Every draw is a function of (seed, image id).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from asuka import flux
from asuka.errors import InputError
from asuka.flux import DEFAULT_GUIDANCE
from asuka.training.components import BackboneConfig, load_backbone_part, noise_scheduler
from asuka.training.config import DataConfig, MaskConfig

META_FILE, INDEX_FILE = "meta.json", "index.json"


@dataclasses.dataclass
class LatentAugConfig:
    """``fraction``: share of the images that get a latent (chosen per image id with ``seed``).
    ``condition``: the backbone's condition -- ``auto`` (sd15: the CLIP embedding of ``""`` when
    the backbone has a text encoder, else zeros ``1 x cross_attention_dim``; flux: the release's
    null conditions from ``null_condition_dir`` when set, else zeros), ``empty_prompt`` (sd15) or
    ``zeros``. ``null_condition_dir`` (flux): a folder with ``vec.pt`` and ``txt_256.pt`` (the
    release's ``ckpt/``), FLUX-Fill's embeddings of the empty prompt. ``guidance`` (flux): the
    distilled guidance value, 30 as at inference. ``masked``: estimate each image with a drawn
    training mask (``masks``) as at inference, and store the mask (module docstring); ``False``
    (the paper): an all-zero mask."""

    output_dir: str = "runs/latent_aug"
    seed: int = 0
    fraction: float = 0.5
    t_min: int = 500
    t_max: int = 1000
    batch_size: int = 8
    mixed_precision: str = "no"
    condition: str = "auto"
    null_condition_dir: str | None = None
    guidance: float = DEFAULT_GUIDANCE
    masked: bool = False
    masks: MaskConfig = dataclasses.field(default_factory=MaskConfig)
    data: DataConfig = dataclasses.field(default_factory=lambda: DataConfig(resolution=256))
    backbone: BackboneConfig = dataclasses.field(default_factory=BackboneConfig)

    def validate(self) -> None:
        self.backbone.validate()
        if self.backbone.is_flux and self.condition == "empty_prompt":
            raise InputError("config condition=empty_prompt: for a flux backbone give the release's null "
                             "conditions as null_condition_dir (condition=auto) or use condition=zeros")
        if not 0.0 < self.fraction <= 1.0:
            raise InputError(f"config fraction: expected a value in (0, 1], got {self.fraction}")
        if not 0 <= self.t_min < self.t_max:
            raise InputError(f"config t_min/t_max: expected 0 <= t_min < t_max, got {self.t_min}, {self.t_max}")
        if self.condition not in ("auto", "empty_prompt", "zeros"):
            raise InputError(f"config condition: expected auto, empty_prompt or zeros, got {self.condition!r}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise InputError(f"config mixed_precision: expected no, fp16 or bf16, got {self.mixed_precision!r}")
        if self.batch_size < 1:
            raise InputError(f"config batch_size: expected >= 1, got {self.batch_size}")
        if not isinstance(self.masked, bool):
            raise InputError(f"config masked: expected true or false, got {self.masked!r}")
        self.masks.validate()


def _id_key(ident: str) -> int:
    return zlib.crc32(ident.encode("utf-8"))


def is_selected(ident: str, seed: int, fraction: float) -> bool:
    """Whether image ``ident`` gets a latent (a fixed draw per (seed, id))."""
    return fraction >= 1.0 or np.random.default_rng((seed, _id_key(ident), 0)).random() < fraction


# -------------------------------------------------------------------------------- the store
class LatentAugStore:
    """The folder ``make-latent-aug`` writes and the decoder stage reads."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def latent_path(self, ident: str) -> Path:
        parts = Path(ident).parts
        if Path(ident).is_absolute() or ".." in parts or not parts:
            raise InputError(f"latent augmentation: image id {ident!r} cannot name a file in the store")
        return self.root / "latents" / (ident + ".safetensors")

    def meta(self) -> dict:
        path = self.root / META_FILE
        if not path.is_file():
            raise InputError(f"latent augmentation folder {self.root}: {META_FILE} not found "
                             "(expected the output of `asuka make-latent-aug`)")
        return json.loads(path.read_text())

    def boxes(self):
        """``{image id: CropBox}`` of the finished run."""
        from asuka.data.images import CropBox

        path = self.root / INDEX_FILE
        if not path.is_file():
            raise InputError(f"latent augmentation folder {self.root}: {INDEX_FILE} not found; "
                             "`asuka make-latent-aug` did not finish (run it again: it resumes)")
        return {k: CropBox.from_sequence(v) for k, v in json.loads(path.read_text()).items()}

    def write(self, ident: str, z0_hat: torch.Tensor, crop: torch.Tensor, t: int, rank: int,
              mask: torch.Tensor | None = None) -> None:
        """Store one estimate (and, for a masked run, its ``(1, H, W)`` binary mask as uint8)."""
        from safetensors.torch import save_file

        path = self.latent_path(ident)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tensors = {"z0_hat": z0_hat.detach().to("cpu", torch.float16).contiguous(),
                   "crop": crop.to("cpu", torch.int64).contiguous(), "t": torch.tensor([int(t)])}
        if mask is not None:
            tensors["mask"] = (mask.detach().cpu() >= 0.5).to(torch.uint8).contiguous()
        save_file(tensors, str(tmp))
        tmp.replace(path)  # a file is either complete or absent
        with open(self.root / "parts" / f"rank{rank}.jsonl", "a") as handle:
            handle.write(json.dumps({"id": ident, "crop": [int(v) for v in crop.tolist()]}) + "\n")

    def done(self) -> dict[str, list[int]]:
        """Ids written so far (their index lines), with their crops."""
        out: dict[str, list[int]] = {}
        for part in sorted((self.root / "parts").glob("rank*.jsonl")):
            for line in part.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a kill: that image is redone
                    continue
                if self.latent_path(row["id"]).is_file():
                    out[row["id"]] = row["crop"]
        return out

    def finalize(self) -> int:
        done = self.done()
        tmp = self.root / (INDEX_FILE + ".tmp")
        tmp.write_text(json.dumps(done, sort_keys=True))
        tmp.replace(self.root / INDEX_FILE)
        return len(done)


class AttachLatent:
    """Dataset transform of the decoder stage: ``sample["latent"]`` (``(C, S/f, S/f)`` float32,
    unscaled ``z0_hat``) and ``sample["has_latent"]`` -- the stored latent when the sample was
    cut at its stored crop (``sample["crop_fixed"]``), zeros and False otherwise. A latent
    stored with its mask (``masked`` runs) also replaces ``sample["mask"]`` by that mask: the
    hole the estimate filled."""

    def __init__(self, root: str | Path, channels: int, size: int):
        self.store, self.channels, self.size = LatentAugStore(root), int(channels), int(size)

    def __call__(self, sample: dict, rng) -> dict:
        from safetensors.torch import load_file

        if sample.get("crop_fixed"):
            stored = load_file(str(self.store.latent_path(sample["id"])))
            latent = stored["z0_hat"].float()
            if tuple(latent.shape) != (self.channels, self.size, self.size):
                raise InputError(f"latent augmentation {sample['id']}: expected a latent of shape "
                                 f"{(self.channels, self.size, self.size)}, got {tuple(latent.shape)}")
            sample["latent"], sample["has_latent"] = latent, True
            if "mask" in stored:
                mask = stored["mask"].float()
                want = (1, *sample["image"].shape[-2:])
                if tuple(mask.shape) != want:
                    raise InputError(f"latent augmentation {sample['id']}: expected a stored mask of shape "
                                     f"{want}, got {tuple(mask.shape)}")
                sample["mask"] = mask
        else:
            sample["latent"] = torch.zeros(self.channels, self.size, self.size)
            sample["has_latent"] = False
        return sample


# ------------------------------------------------------------------------------ the images
class _Crops(torch.utils.data.IterableDataset):
    """The selected, not yet written images of this process, each with its id-seeded crop."""

    def __init__(self, config: LatentAugConfig, done: set[str], rank: int, world_size: int):
        from asuka.data.images import RandomCrop, expand_shards, list_images
        from asuka.training.data import AddMask

        data = config.data
        self.config, self.done, self.rank, self.world_size = config, done, rank, world_size
        self.masks = AddMask.from_config(config.masks) if config.masked else None
        self.crop = RandomCrop(data.resolution, resize=data.resize, random_flip=data.random_flip)
        self.files = list_images(data.root) if data.root is not None else None
        self.urls = expand_shards(data.shards) if data.shards is not None else None

    def _wanted(self, ident: str) -> bool:
        return ident not in self.done and is_selected(ident, self.config.seed, self.config.fraction)

    def _sample(self, img, ident: str) -> dict:
        rng = np.random.default_rng((self.config.seed, _id_key(ident), 1))
        box = self.crop.draw(img.width, img.height, rng)
        sample = {"image": self.crop.apply(img, box), "id": ident, "crop": box.as_tensor()}
        if self.masks is not None:
            _, h, w = sample["image"].shape
            draw = self.masks.draw(h, w, np.random.default_rng((self.config.seed, _id_key(ident), 3)))
            sample["mask"] = torch.from_numpy(draw).reshape(1, h, w)
        return sample

    def __iter__(self):
        from asuka.data.images import _iter_tar_images, open_rgb

        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        slot, slots = self.rank * workers + worker, self.world_size * workers
        if self.files is not None:
            for ident in self.files[slot::slots]:
                if self._wanted(ident):
                    yield self._sample(open_rgb(Path(self.config.data.root) / ident), ident)
        else:
            for url in self.urls[slot::slots]:
                for ident, data in _iter_tar_images(url):
                    if data is not None and self._wanted(ident):
                        yield self._sample(open_rgb(data), ident)


# ------------------------------------------------------------------------------ the run
def _null_condition(config: LatentAugConfig, unet, device, dtype) -> torch.Tensor:
    dim = unet.config.cross_attention_dim
    mode = config.condition
    source = config.backbone.pretrained
    local_without_text = source is not None and Path(source).is_dir() and not Path(source, "text_encoder").is_dir()
    if mode in ("auto", "empty_prompt") and config.backbone.preset is None and source and not local_without_text:
        try:
            from transformers import CLIPTextModel, CLIPTokenizer

            kw = {"local_files_only": config.backbone.local_files_only}
            tok = CLIPTokenizer.from_pretrained(config.backbone.pretrained, subfolder="tokenizer", **kw)
            te = CLIPTextModel.from_pretrained(config.backbone.pretrained, subfolder="text_encoder", **kw)
            ids = tok([""], padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
            with torch.no_grad():
                return te(ids)[0].to(device, dtype)  # (1, 77, 768)
        except (OSError, ValueError) as exc:
            if mode == "empty_prompt":
                raise InputError(f"config condition=empty_prompt: cannot load the backbone's text encoder: {exc}") from None
    elif mode == "empty_prompt":
        raise InputError("config condition=empty_prompt needs backbone.pretrained with a text encoder")
    return torch.zeros(1, 1, dim, device=device, dtype=dtype)


def _flux_null_condition(config: LatentAugConfig, transformer, device, dtype):
    """``(vec0 (1, Dp), txt0 (1, T, Dt))``: the release's files, or zeros (one text token)."""
    tcfg = transformer.config
    if config.condition == "auto" and config.null_condition_dir is not None:
        from asuka.pipeline_flux import read_null_tensor, release_file

        folder = config.null_condition_dir
        vec = read_null_tensor(release_file(folder, "vec.pt", {}), (1, tcfg.pooled_projection_dim))
        txt = read_null_tensor(release_file(folder, "txt_256.pt", {}), (1, None, tcfg.joint_attention_dim))
        return vec.to(device, dtype), txt.to(device, dtype)
    return (torch.zeros(1, tcfg.pooled_projection_dim, device=device, dtype=dtype),
            torch.zeros(1, 1, tcfg.joint_attention_dim, device=device, dtype=dtype))


@torch.no_grad()
def flux_one_step_estimate(transformer, vae, x0: torch.Tensor, image: torch.Tensor, noise: torch.Tensor,
                           s: torch.Tensor, condition, *, guidance: float,
                           mask: torch.Tensor | None = None) -> torch.Tensor:
    """``x0_hat`` from one FLUX-Fill velocity at flow time ``s`` with an all-zero mask (everything
    known) or ``mask`` ``(B, 1, H, W)``, built with :mod:`asuka.flux` as the pipeline does. ``x0``,
    ``noise``: ``(B, C, h, w)`` scaled, shifted latents; ``image``: ``(B, 3, H, W)`` in ``[-1, 1]``;
    ``s``: ``(B,)`` in ``(0, 1]``; ``condition``: ``(pooled (1, Dp), txt (1, T, Dt))``. Returns
    ``(B, C, h, w)``."""
    b, _, h, w = x0.shape
    fill = flux.fill_condition(vae, image, torch.zeros_like(image[:, :1]) if mask is None else mask)
    sv = s.float().view(-1, 1, 1, 1)
    x_s = (1 - sv) * x0.float() + sv * noise.float()
    pooled, txt = (c.expand(b, *c.shape[1:]) for c in condition)
    v = flux.predict_velocity(transformer, flux.pack_latents(x_s), fill, s, pooled=pooled, txt=txt,
                              img_ids=flux.latent_image_ids(h, w, x0.device), guidance=guidance)
    return x_s - sv * flux.unpack_latents(v.float(), h, w)


@torch.no_grad()
def one_step_estimate(unet, scheduler, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                      condition: torch.Tensor, mask_latents: torch.Tensor | None = None,
                      masked_latents: torch.Tensor | None = None) -> torch.Tensor:
    """``z0_hat`` from the UNet's prediction at ``z_t``, by default with an all-zero mask and ``z0``
    as the masked-image latent; or with ``mask_latents`` ``(B, 1, h, w)`` and ``masked_latents``
    (the inpainting inputs of a hole, :func:`asuka.training.stages._diffusion.hole_inputs`).
    ``z0``, ``noise``: ``(B, C, h, w)`` scaled latents; ``t``: ``(B,)``."""
    if (mask_latents is None) != (masked_latents is None):
        raise InputError("one_step_estimate: give both mask_latents and masked_latents, or neither")
    abar = scheduler.alphas_cumprod.to(z0.device)[t].float().view(-1, 1, 1, 1)
    z_t = scheduler.add_noise(z0, noise, t)
    if mask_latents is None:
        mask_latents, masked_latents = torch.zeros_like(z0[:, :1]), z0
    inp = torch.cat([z_t, mask_latents.to(z0), masked_latents.to(z0)], dim=1).to(unet.dtype)
    out = unet(inp, t, encoder_hidden_states=condition.expand(z0.shape[0], -1, -1).to(unet.dtype)).sample.float()
    if scheduler.config.prediction_type == "v_prediction":
        return abar.sqrt() * z_t.float() - (1 - abar).sqrt() * out
    return (z_t.float() - (1 - abar).sqrt() * out) / abar.sqrt()


def make_latent_aug(config: LatentAugConfig) -> int:
    """Write the latents of ``config`` (resuming); returns the number of latents in the store."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from asuka.training.data import check_data_source

    check_data_source(config.data)
    acc = Accelerator(mixed_precision=config.mixed_precision)
    dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[config.mixed_precision]
    store = LatentAugStore(config.output_dir)
    is_flux = config.backbone.is_flux
    unet = load_backbone_part(config.backbone, "model", seed=config.seed + 1).to(acc.device, dtype).eval()
    vae = load_backbone_part(config.backbone, "vae", seed=config.seed + 2).to(acc.device, dtype).eval()
    scheduler = noise_scheduler(config.backbone)
    sf = vae.config.scaling_factor
    if is_flux and config.data.resolution % (2 * 2 ** (len(vae.config.block_out_channels) - 1)):
        raise InputError(f"config data.resolution: a flux backbone needs a multiple of 16, "
                         f"got {config.data.resolution}")
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    if config.data.resolution % factor:
        raise InputError(f"config data.resolution: expected a multiple of the VAE factor {factor}, "
                         f"got {config.data.resolution}")
    if config.t_max > scheduler.config.num_train_timesteps:
        raise InputError(f"config t_max: expected <= {scheduler.config.num_train_timesteps} "
                         f"(the schedule's steps), got {config.t_max}")
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    meta = {"backbone": config.backbone.kind, "resolution": config.data.resolution,
            "latent_channels": vae.config.latent_channels, "downscale_factor": factor, "scaling_factor": sf,
            "shift_factor": shift, "t_range": [config.t_min, config.t_max], "masked": config.masked,
            "seed": config.seed, "fraction": config.fraction, "resize": config.data.resize,
            "format": "z0_hat / scaling_factor + shift_factor (what the VAE's decode takes), float16 (C, h, w); "
                      "crop (resized_w, resized_h, left, top, flip)"}
    if acc.is_main_process:
        (store.root / "parts").mkdir(parents=True, exist_ok=True)
        meta_path = store.root / META_FILE
        if meta_path.is_file():
            old = json.loads(meta_path.read_text())
            changed = [k for k in ("resolution", "latent_channels", "t_range", "seed", "fraction", "masked")
                       if old.get(k, False if k == "masked" else None) != meta[k]]
            if changed:
                raise InputError(f"{store.root} holds latents made with other settings "
                                 f"({', '.join(f'{k}: {old.get(k)} vs {meta[k]}' for k in changed)}); "
                                 "use another output_dir")
        meta_path.write_text(json.dumps(meta, indent=2))
    acc.wait_for_everyone()
    done = set(store.done())
    cond = (_flux_null_condition if is_flux else _null_condition)(config, unet, acc.device, dtype)
    loader = torch.utils.data.DataLoader(_Crops(config, done, acc.process_index, acc.num_processes),
                                         batch_size=config.batch_size, num_workers=config.data.num_workers)
    bar = tqdm(desc="latent augmentation", unit="img", disable=not acc.is_local_main_process)
    for batch in loader:
        images = batch["image"].to(acc.device, dtype)
        z0 = flux.encode_latents(vae, images)  # posterior mode, scaled (and shifted, for FLUX)
        noise, ts = [], []
        for ident in batch["id"]:  # per image, so the result does not depend on batching
            g = torch.Generator().manual_seed(int(np.random.SeedSequence((config.seed, _id_key(ident), 2))
                                                  .generate_state(1)[0]))
            ts.append(int(torch.randint(config.t_min, config.t_max, (1,), generator=g)))
            noise.append(torch.randn(z0.shape[1:], generator=g))
        t = torch.tensor(ts, device=acc.device)
        noise = torch.stack(noise).to(acc.device)
        masks = batch["mask"].to(acc.device, dtype) if config.masked else None
        if is_flux:
            s = t.float() / scheduler.config.num_train_timesteps
            z0_hat = flux_one_step_estimate(unet, vae, z0, images, noise, s, cond, guidance=config.guidance,
                                            mask=masks)
        elif masks is not None:
            from asuka.training.stages._diffusion import hole_inputs

            mask_latents, masked_latents = hole_inputs(vae, images, masks)
            z0_hat = one_step_estimate(unet, scheduler, z0.float(), noise, t, cond, mask_latents.float(),
                                       masked_latents.float())
        else:
            z0_hat = one_step_estimate(unet, scheduler, z0.float(), noise, t, cond)
        z0_hat = flux.latents_to_vae(vae, z0_hat)  # what the decoder takes: / scaling (+ shift)
        for i, ident in enumerate(batch["id"]):
            if not math.isfinite(float(z0_hat[i].abs().max())):
                raise FloatingPointError(f"latent augmentation of {ident}: non-finite estimate at t={ts[i]}")
            store.write(ident, z0_hat[i], batch["crop"][i], ts[i], acc.process_index,
                        mask=None if masks is None else masks[i])
        bar.update(len(batch["id"]))
    bar.close()
    acc.wait_for_everyone()
    count = store.finalize() if acc.is_main_process else 0
    acc.wait_for_everyone()
    return count
