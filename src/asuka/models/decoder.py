"""Mask-conditioned latent decoder (ASUKA's "inpainting-specialised decoder").

A KL-VAE decoder (diffusers' :class:`~diffusers.models.autoencoders.vae.Decoder`, so its
parameters are named exactly like ``AutoencoderKL.decoder.*``) plus a *condition encoder* that reads
``concat(masked image, mask)`` and yields one feature map for every point where the decoder's
features get replaced outside the hole. The data flow, as in the official release
(Asymmetric-VQGAN style)::

    f_0, f_1, ..., f_L = condition_encoder(image * (1 - mask), mask)     # f_0, f_1 full res, f_k at H / 2**(k-1)
    h = mid_block(conv_in(post_quant_conv(z)))                          # (B, C, H / 2**(L-1), W / 2**(L-1))
    for each up level k = L-1 ... 0 (lowest resolution first):
        m = (area_downsample(mask, size(h)) > 0)                        # any hole pixel -> hole
        h = h * m + f_{k+1} * (1 - m)                                   # keep decoder features only in the hole
        h = up_block_k(h)                                               # resnets (+ 2x upsample)
    h = h * mask + f_0 * (1 - mask)                                     # last blend, full resolution, mask as given
    image = conv_out(silu(group_norm(h)))

Consequences worth knowing: with an all-ones mask (everything is hole) nothing is replaced and
the output is exactly ``AutoencoderKL.decode(z)``; with an all-zero mask the output does not depend
on ``z`` at all. The condition features ``f_k`` are taken before the ReLU that feeds the next
condition conv (the release blends pre-activation features).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import Decoder, DecoderOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from asuka.errors import CheckpointError, InputError
from asuka.models._checks import check_state_dict, load_checked, read_checkpoint, report_ignored, take_weights

PRESETS: dict[str, dict] = {
    # SD-1.5 VAE decoder (ch 128, mult 1,2,4,4, 2 res blocks, z=4, with post_quant_conv)
    "full": dict(latent_channels=4, out_channels=3, block_out_channels=(128, 256, 512, 512),
                 layers_per_block=2, norm_num_groups=32, use_post_quant_conv=True),
    # the released decoder: FLUX VAE (z=16, no post_quant_conv), otherwise the same trunk
    "flux": dict(latent_channels=16, out_channels=3, block_out_channels=(128, 256, 512, 512),
                 layers_per_block=2, norm_num_groups=32, use_post_quant_conv=False),
    # diffusers' tiny test VAE: 64 px images -> 32 px latents
    "tiny": dict(latent_channels=4, out_channels=3, block_out_channels=(32, 64),
                 layers_per_block=1, norm_num_groups=32, use_post_quant_conv=True),
}

# Release checkpoint prefixes that are present but not part of this model, with the reason.
_RELEASE_IGNORED = {
    "encoder.": "the VAE encoder (load it with the VAE)",  # frozen during decoder training
    "quant_conv.": "the VAE's quant_conv (encoder side)",
    "loss.": "training-only modules (LPIPS net, discriminator)",
    "decoder.up_layers.": "transposed convs the release builds only to size its condition encoder, never run",
}


def condition_channels_for(block_out_channels) -> tuple[int, ...]:
    """Widths of the condition encoder's feature maps ``f_0 .. f_L`` for a decoder trunk.

    ``f_0`` is blended right before ``conv_norm_out`` (width ``block_out_channels[0]``); ``f_{k+1}`` at
    the input of up level ``k``, whose width is ``block_out_channels[k + 1]`` (the output of the level
    above), or ``block_out_channels[-1]`` for the lowest level, which follows the mid block. For the
    SD/FLUX trunk this gives the release's ``(128, 256, 512, 512, 512)``.
    """
    boc = tuple(block_out_channels)
    levels = len(boc)
    return (boc[0],) + tuple(boc[min(k + 1, levels - 1)] for k in range(levels))


class ConditionEncoder(nn.Module):
    """``concat(masked_image, mask)`` -> one feature map per blend point.

    Two 3x3 convs at full resolution, then ``L - 1`` 4x4 stride-2 convs, ReLU between them.
    ``forward(masked_image (B, C, H, W), mask (B, 1, H, W))`` -> list ``[f_0, ..., f_L]`` with
    ``f_0``, ``f_1`` at ``H x W`` and ``f_k`` at ``H / 2**(k-1)``; features are taken before the ReLU.
    """

    def __init__(self, in_channels: int, channels: tuple[int, ...]):
        super().__init__()
        layers = [nn.Conv2d(in_channels + 1, channels[0], 3, padding=1),
                  nn.Conv2d(channels[0], channels[1], 3, padding=1)]
        layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1) for c_in, c_out in zip(channels[1:-1], channels[2:])]
        self.layers = nn.ModuleList(layers)

    def forward(self, masked_image: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        x = torch.cat([masked_image, mask], dim=1)
        feats = []
        for i, layer in enumerate(self.layers):
            x = layer(x if i == 0 else F.relu(x))
            feats.append(x)
        return feats


def _blend(h: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Keep ``h`` where the area-downsampled mask is > 0 (any hole pixel), ``cond`` elsewhere."""
    m = (F.interpolate(mask, size=h.shape[-2:], mode="area") > 0).to(h.dtype)
    return h * m + cond * (1 - m)


class MaskConditionedDecoder(ModelMixin, ConfigMixin):
    """KL-VAE decoder whose features outside the hole are replaced by features of the known pixels.

    Args:
        latent_channels: channels of ``z`` (4 for SD, 16 for FLUX).
        out_channels: image channels (3); also the condition encoder's image input.
        block_out_channels, layers_per_block, norm_num_groups, act_fn, mid_block_add_attention:
            as in :class:`diffusers.AutoencoderKL` (the trunk is built from them).
        use_post_quant_conv: apply a 1x1 ``post_quant_conv`` to ``z`` first, as
            ``AutoencoderKL._decode`` does (SD VAE: yes; FLUX VAE: no).
        condition_channels: widths of the condition features; fixed by the trunk (see
            :func:`condition_channels_for`), stored in the config for reference. ``None`` = derive.

    Parameter names: ``post_quant_conv.*`` and ``decoder.*`` equal ``AutoencoderKL``'s;
    ``condition_encoder.layers.{i}.*`` are new.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 4,
        out_channels: int = 3,
        block_out_channels: tuple[int, ...] = (128, 256, 512, 512),
        layers_per_block: int = 2,
        norm_num_groups: int = 32,
        act_fn: str = "silu",
        mid_block_add_attention: bool = True,
        use_post_quant_conv: bool = True,
        condition_channels: tuple[int, ...] | None = None,
    ):
        super().__init__()
        block_out_channels = tuple(int(c) for c in block_out_channels)
        if not block_out_channels or any(c < 1 or c % norm_num_groups for c in block_out_channels):
            raise InputError(
                f"MaskConditionedDecoder: block_out_channels must be non-empty multiples of norm_num_groups="
                f"{norm_num_groups}, got {block_out_channels}"
            )
        derived = condition_channels_for(block_out_channels)
        if condition_channels is not None and tuple(condition_channels) != derived:
            raise InputError(
                f"MaskConditionedDecoder: condition_channels must match the decoder widths at the blend points, "
                f"expected {derived}, got {tuple(condition_channels)}"
            )
        self.register_to_config(condition_channels=derived)

        self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, 1) if use_post_quant_conv else None
        self.decoder = Decoder(
            in_channels=latent_channels,
            out_channels=out_channels,
            up_block_types=("UpDecoderBlock2D",) * len(block_out_channels),
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            act_fn=act_fn,
            mid_block_add_attention=mid_block_add_attention,
        )
        self.condition_encoder = ConditionEncoder(out_channels, derived)

    @property
    def downscale_factor(self) -> int:
        """Image size / latent size (8 for SD and FLUX)."""
        return 2 ** (len(self.config.block_out_channels) - 1)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_preset(cls, name: str = "full", **overrides) -> "MaskConditionedDecoder":
        """``"full"`` (SD-1.5 VAE trunk, z=4), ``"flux"`` (FLUX VAE trunk, z=16, no post_quant_conv) or
        ``"tiny"`` (diffusers' tiny test VAE: block_out_channels (32, 64)); overrides replace fields."""
        if name not in PRESETS:
            raise InputError(f"MaskConditionedDecoder: unknown preset {name!r}; expected one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def from_autoencoder_kl(cls, vae, seed: int | None = None) -> "MaskConditionedDecoder":
        """Start from a diffusers ``AutoencoderKL`` (e.g. the SD-1.5 VAE), the paper's initialisation.

        Transferred (copied, checked key by key): ``post_quant_conv.*`` (if the VAE has one) and every
        ``decoder.*`` weight -- conv_in, mid block (resnets + attention), up blocks (resnets, upsamplers),
        conv_norm_out, conv_out. Fresh: ``condition_encoder.*`` (PyTorch's default conv init, drawn from
        ``seed`` if given, else from the global RNG). Not used: the VAE's encoder and ``quant_conv``.
        Until the condition encoder is trained, only all-hole masks give sensible images (they reproduce
        ``vae.decode(z)`` exactly). The result is on the VAE's device and dtype.
        """
        from diffusers import AutoencoderKL

        if not isinstance(vae, AutoencoderKL):
            raise InputError(f"MaskConditionedDecoder.from_autoencoder_kl: expected a diffusers AutoencoderKL, "
                             f"got {type(vae).__name__}")
        cfg = vae.config
        if any(t != "UpDecoderBlock2D" for t in cfg.up_block_types):
            raise InputError(f"MaskConditionedDecoder.from_autoencoder_kl: only UpDecoderBlock2D up blocks are "
                             f"supported, got {tuple(cfg.up_block_types)}")
        config = dict(
            latent_channels=cfg.latent_channels,
            out_channels=cfg.out_channels,
            block_out_channels=tuple(cfg.block_out_channels),
            layers_per_block=cfg.layers_per_block,
            norm_num_groups=cfg.norm_num_groups,
            act_fn=cfg.act_fn,
            mid_block_add_attention=getattr(cfg, "mid_block_add_attention", True),
            use_post_quant_conv=vae.post_quant_conv is not None,
        )
        if seed is None:
            model = cls(**config)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = cls(**config)
        what = "MaskConditionedDecoder.from_autoencoder_kl"
        load_checked(model.decoder, vae.decoder.state_dict(), what=what + " (decoder)")
        if model.post_quant_conv is not None:
            load_checked(model.post_quant_conv, vae.post_quant_conv.state_dict(), what=what + " (post_quant_conv)")
        model.to(vae.device)
        if vae.dtype != model.dtype:  # (diffusers warns on every dtype cast, so only cast when needed)
            model.to(vae.dtype)
        return model

    # ------------------------------------------------------------------ forward
    def forward(self, z: torch.Tensor, image: torch.Tensor, mask: torch.Tensor,
                return_dict: bool = True) -> DecoderOutput | tuple[torch.Tensor]:
        """Decode ``z`` conditioned on the known pixels.

        Args:
            z: *unscaled* latents ``(B, latent_channels, h, w)`` -- what ``AutoencoderKL.decode`` takes
                (for SD: ``latents / scaling_factor``).
            image: the original image ``(B, out_channels, H, W)`` in ``[-1, 1]``, ``H = h * downscale_factor``;
                only ``image * (1 - mask)`` is used, so hole content does not matter.
            mask: ``(B, 1, H, W)`` in ``[0, 1]``, 1 = hole. Binary masks are expected; like the release,
                soft values are used as given in the full-resolution blend and count as hole wherever
                > 0 at lower resolutions.
            return_dict: return a :class:`~diffusers.models.autoencoders.vae.DecoderOutput` (``.sample``)
                instead of a 1-tuple.

        Returns:
            the decoded image ``(B, out_channels, H, W)``, roughly in ``[-1, 1]`` (not clamped).
        """
        self._check_inputs(z, image, mask)
        dtype = self.decoder.conv_in.weight.dtype
        z, image, mask = z.to(dtype), image.to(dtype), mask.to(dtype)
        feats = self.condition_encoder(image * (1 - mask), mask)

        dec = self.decoder
        checkpointing = torch.is_grad_enabled() and dec.gradient_checkpointing

        def run(block, *args):
            return dec._gradient_checkpointing_func(block, *args) if checkpointing else block(*args)

        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        h = dec.conv_in(z)
        h = self._mid_block(h, run)
        levels = len(dec.up_blocks)
        for j, up_block in enumerate(dec.up_blocks):  # up_blocks[0] is the lowest resolution
            h = _blend(h, feats[levels - j], mask)
            h = run(up_block, h)
        h = h * mask + feats[0] * (1 - mask)  # the release blends with the raw (full-resolution) mask here
        h = dec.conv_out(dec.conv_act(dec.conv_norm_out(h)))
        return DecoderOutput(sample=h) if return_dict else (h,)

    def _mid_block(self, h: torch.Tensor, run) -> torch.Tensor:
        """diffusers' ``UNetMidBlock2D`` (resnet, then attention + resnet pairs), with the attention
        output made contiguous. Why: the attention returns its ``(B, HW, C)`` result reshaped to
        ``(B, C, H, W)``, i.e. in channels_last strides, and the next resnet's GroupNorm on CPU is
        much less precise on that layout (the release's decoder on a 320 x 384 input: 4.3e-4 max
        error instead of 8.5e-6). ``run`` applies gradient checkpointing per sub-block."""
        mid = self.decoder.mid_block
        h = run(mid.resnets[0], h, None)  # (no time embedding)
        for attn, resnet in zip(mid.attentions, mid.resnets[1:]):
            if attn is not None:
                h = run(attn, h).contiguous()
            h = run(resnet, h, None)
        return h

    def decode(self, z: torch.Tensor, image: torch.Tensor, mask: torch.Tensor,
               return_dict: bool = True) -> DecoderOutput | tuple[torch.Tensor]:
        """Same as calling the model; named like ``AutoencoderKL.decode`` (see :meth:`forward`)."""
        return self(z, image, mask, return_dict=return_dict)

    def _check_inputs(self, z, image, mask) -> None:
        cfg, f = self.config, self.downscale_factor
        for name, t in (("z", z), ("image", image), ("mask", mask)):
            if not isinstance(t, torch.Tensor) or t.ndim != 4:
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise InputError(f"MaskConditionedDecoder.decode: {name} must be a 4-D tensor (B, C, H, W), got {got}")
        b, c, h, w = z.shape
        if c != cfg.latent_channels:
            raise InputError(f"MaskConditionedDecoder.decode: z must have {cfg.latent_channels} channels, "
                             f"got shape {tuple(z.shape)}")
        want_img, want_mask = (b, cfg.out_channels, h * f, w * f), (b, 1, h * f, w * f)
        if tuple(image.shape) != want_img:
            raise InputError(f"MaskConditionedDecoder.decode: image must have shape {want_img} for z of shape "
                             f"{tuple(z.shape)} (x{f}), got {tuple(image.shape)}")
        if tuple(mask.shape) != want_mask:
            raise InputError(f"MaskConditionedDecoder.decode: mask must have shape {want_mask} for z of shape "
                             f"{tuple(z.shape)} (x{f}), got {tuple(mask.shape)}")
        lo, hi = torch.aminmax(mask.detach())
        if lo < 0 or hi > 1:
            raise InputError(f"MaskConditionedDecoder.decode: mask values must be in [0, 1] (1 = hole), "
                             f"got range [{lo.item():.3g}, {hi.item():.3g}]")

    # ------------------------------------------------------------------ release converter
    @classmethod
    def from_release(cls, path_or_state_dict, latent_channels: int | None = None) -> "MaskConditionedDecoder":
        """Build the decoder from the official release (``asuka_decoder.ckpt``) or any checkpoint in its layout.

        Accepts a Lightning checkpoint (``state_dict`` next to ``optimizer_states``, ``callbacks``,
        ``loops``, ``hyper_parameters``, ...: all of that is ignored) or the bare state dict. Keys used:
        ``decoder.*`` (ldm-style KL decoder: ``conv_in``, ``mid.block_1/attn_1/block_2``,
        ``up.{i}.block.{j}``, ``up.{i}.upsample``, ``norm_out``, ``conv_out``; the 1x1-conv attention
        weights become linear ones), ``decoder.encoder.layers.{i}.*`` -> ``condition_encoder.layers.{i}.*``,
        and ``post_quant_conv.*`` if present. Ignored, as the release ignores them, and listed in a
        log line: ``encoder.*`` (the VAE encoder, loaded with the VAE), ``quant_conv.*``, ``loss.*``
        (training-only), ``decoder.up_layers.*`` (transposed convs that only size the condition
        encoder and never run; 15.2 M parameters in the release).

        The trunk's widths, depth, latent and output channels are read from the tensors
        (``norm_num_groups`` is 32, as in the release); ``latent_channels``, if given, must agree:
        16 for the released FLUX decoder, which takes what the FLUX VAE's ``decode`` takes, i.e. the
        transformer's latents ``x`` as ``x / 0.3611 + 0.1159`` (the VAE config's ``scaling_factor``
        and ``shift_factor``; :func:`asuka.flux.latents_to_vae`). Every key and shape is checked;
        anything missing, unknown or mis-shaped is named as it is spelled in the file, with the
        expected and the found shape.
        """
        what = "MaskConditionedDecoder.from_release"
        sd, extras = take_weights(read_checkpoint(path_or_state_dict, what=what, weights_key="state_dict"),
                                  what=what, keys=("state_dict",))
        ignored = {prefix: [k for k in sd if k.startswith(prefix)] for prefix in _RELEASE_IGNORED}
        used = {k: v for k, v in sd.items() if not k.startswith(tuple(_RELEASE_IGNORED))}
        trunk = {k: v for k, v in used.items() if k.startswith("decoder.") and not k.startswith("decoder.encoder.")}
        pqc = {k: v for k, v in used.items() if k.startswith("post_quant_conv.")}

        config = _infer_release_config(trunk, pqc, latent_channels, what)
        model = cls(**config)
        ours = model.state_dict()
        names = {key: _release_key(key, len(config["block_out_channels"])) for key in ours}  # ours -> file
        expected = {names[k]: _release_shape(k, v) for k, v in ours.items()}
        check_state_dict(expected, used, what=what)
        report_ignored(what, {
            **{reason: ignored[prefix] and f"{prefix}* ({len(ignored[prefix])} keys)"
               for prefix, reason in _RELEASE_IGNORED.items()},
            "training state": extras,
        })
        model.load_state_dict({k: used[names[k]].reshape(v.shape) for k, v in ours.items()}, strict=True)
        return model


# Our (diffusers) decoder names -> the release's (ldm) names, applied in order to a key. Written
# out rather than taken from diffusers' one-way ``convert_ldm_vae_checkpoint`` because errors must
# name the file's key, which needs the mapping in this direction.
def _release_key(key: str, levels: int) -> str:
    up = lambda m: f"decoder.up.{levels - 1 - int(m[1])}."  # noqa: E731 -- up_blocks[0] is the lowest level
    rules = (
        (r"^condition_encoder\.", lambda m: "decoder.encoder."),
        (r"^decoder\.mid_block\.resnets\.(\d+)\.", lambda m: f"decoder.mid.block_{int(m[1]) + 1}."),
        (r"^decoder\.mid_block\.attentions\.0\.group_norm\.", lambda m: "decoder.mid.attn_1.norm."),
        (r"^decoder\.mid_block\.attentions\.0\.to_(q|k|v)\.", lambda m: f"decoder.mid.attn_1.{m[1]}."),
        (r"^decoder\.mid_block\.attentions\.0\.to_out\.0\.", lambda m: "decoder.mid.attn_1.proj_out."),
        (r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.", lambda m: up(m) + f"block.{m[2]}."),
        (r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.", lambda m: up(m) + "upsample."),
        (r"\.conv_shortcut\.", lambda m: ".nin_shortcut."),
        (r"^decoder\.conv_norm_out\.", lambda m: "decoder.norm_out."),
    )
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


def _release_shape(key: str, value: torch.Tensor) -> tuple[int, ...]:
    """The shape of our tensor ``key`` in the release file (its attention projections are 1x1 convs)."""
    if re.match(r"^decoder\.mid_block\.attentions\.0\.(to_q|to_k|to_v|to_out\.0)\.weight$", key):
        return (*value.shape, 1, 1)
    return tuple(value.shape)


def _infer_release_config(trunk: Mapping[str, torch.Tensor], pqc: Mapping[str, torch.Tensor],
                          latent_channels: int | None, what: str) -> dict:
    def need(key: str, ndim: int) -> torch.Tensor:
        t = trunk.get(key)
        if not isinstance(t, torch.Tensor) or t.ndim != ndim:
            got = "missing" if t is None else f"shape {tuple(getattr(t, 'shape', ()))}"
            raise CheckpointError(f"{what}: expected a {ndim}-D tensor at {key!r}, got {got} "
                                  f"(decoder keys present: {_preview(trunk, 6)})")
        return t

    z = need("decoder.conv_in.weight", 4).shape[1]
    if latent_channels is not None and latent_channels != z:
        raise CheckpointError(f"{what}: latent_channels={latent_channels} was requested but the checkpoint's "
                              f"decoder.conv_in takes {z} channels")
    levels = sorted({int(k.split(".")[2]) for k in trunk if k.startswith("decoder.up.") and k.split(".")[2].isdigit()})
    if not levels or levels != list(range(len(levels))):
        raise CheckpointError(f"{what}: decoder.up.<i> levels must be 0..L-1, got {levels}")
    block_out = tuple(int(need(f"decoder.up.{i}.block.0.conv2.weight", 4).shape[0]) for i in levels)
    n_blocks = len({k.split(".")[4] for k in trunk if k.startswith("decoder.up.0.block.")})
    return dict(
        latent_channels=int(z),
        out_channels=int(need("decoder.conv_out.weight", 4).shape[0]),
        block_out_channels=block_out,
        layers_per_block=n_blocks - 1,
        norm_num_groups=32,  # the release's Normalize(); group count is not stored in weights
        mid_block_add_attention=any(k.startswith("decoder.mid.attn_1.") for k in trunk),
        use_post_quant_conv=bool(pqc),
    )


def _preview(keys, limit: int = 8) -> str:
    keys = sorted(map(str, keys))
    return ", ".join(keys[:limit]) + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")
