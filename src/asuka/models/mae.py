"""The MAE prior: a ViT masked auto-encoder that sees only the unmasked pixels.

ASUKA conditions the frozen inpainting UNet on features of a masked auto-encoder fine-tuned
for inpainting (MAE-FAR style) instead of a text prompt. :class:`MAEPrior` reproduces the
official release's ``MaskedAutoencoderViTFinetune`` (ViT-B/16 encoder at 256 px, no class
token, fixed 2-D sin-cos position embeddings, 8-block decoder, plus a 4-channel
``decoder_patch_embed`` and a scalar ``alpha`` for tokens that are only partly in the hole):

* :meth:`MAEPrior.prepare` -- image in ``[-1, 1]`` + mask at any size -> the MAE's input
  (``image_size`` square, ImageNet-normalised, holes zeroed) and mask, as the release's data
  pipeline makes them;
* :meth:`MAEPrior.prior` -- the prior ``F_MAE``: ``(B, L, decoder_embed_dim)`` tokens after
  ``prior_layers`` decoder blocks (release: ``forward_return_feature(x, m, decoder_layer=6)``);
* :meth:`MAEPrior.forward` -- the fine-tuning reconstruction loss with adaptive masking;
* :meth:`MAEPrior.reconstruct` -- the reconstructed image (``forward_return_image``);
* :meth:`MAEPrior.from_release` -- converter for the release's ``mae_300.pth``.

Token masks: ``1 = masked`` (the token contains hole pixels / is removed), as in the release.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from asuka.errors import CheckpointError, InputError
from asuka.models._checks import load_checked, read_checkpoint, report_ignored, take_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

PRESETS: dict[str, dict] = {
    # The release's MAE (get_mae_model("mae_vit_base_patch16", finetune=True)).
    "full": dict(
        image_size=256, patch_size=16, in_channels=3, embed_dim=768, depth=12, num_heads=12,
        decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16, mlp_ratio=4.0,
        norm_eps=1e-6, prior_layers=6, norm_pix_loss=False,
    ),
    # For tests: 4x4 tokens, runs in milliseconds.
    "tiny": dict(
        image_size=32, patch_size=8, in_channels=3, embed_dim=32, depth=2, num_heads=2,
        decoder_embed_dim=32, decoder_depth=2, decoder_num_heads=2, mlp_ratio=4.0,
        norm_eps=1e-6, prior_layers=1, norm_pix_loss=False,
    ),
}


# ----------------------------------------------------------------------------- helpers
def sincos_pos_embed_2d(dim: int, grid_size: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding, ``(grid_size**2, dim)`` float32.

    Token ``i`` sits at row ``i // grid_size``, column ``i % grid_size``. The first half of
    the channels encodes the column, the second half the row (the MAE/MoCo-v3 layout, which
    the released weights were trained with); each half is ``[sin(pos*w), cos(pos*w)]`` with
    ``w_k = 10000 ** (-k / (dim/4))``. Computed in float64, then rounded once.
    """
    if dim % 4:
        raise InputError(f"MAE position embedding: width must be divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))
    coords = np.arange(grid_size, dtype=np.float64)
    cols, rows = np.meshgrid(coords, coords)  # cols varies along the last axis

    def one_axis(pos):
        out = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    emb = np.concatenate([one_axis(cols), one_axis(rows)], axis=1)
    return torch.from_numpy(emb).float()


def _cv2_area_weights(n_in: int, n_out: int, true_area: bool) -> torch.Tensor:
    """``(n_out, n_in)`` float64 resampling matrix of OpenCV's ``INTER_AREA`` along one axis.

    ``true_area`` (OpenCV uses it when *both* axes shrink or keep their size): each output
    pixel is the overlap-weighted mean of the input pixels its footprint covers. Otherwise
    OpenCV emulates area resampling with a 2-tap linear filter whose phase is
    ``(d + 1) - (s + 1) * n_out / n_in`` (its ``area_mode`` coefficients), clamped at the border.
    """
    w = torch.zeros(n_out, n_in, dtype=torch.float64)
    scale = n_in / n_out
    if true_area:
        for d in range(n_out):
            lo, hi = d * scale, (d + 1) * scale
            for s in range(math.floor(lo), min(math.ceil(hi), n_in)):
                w[d, s] = min(hi, s + 1) - max(lo, s)
        return w / scale
    inv = n_out / n_in
    for d in range(n_out):
        s = math.floor(d * scale)
        f = (d + 1) - (s + 1) * inv
        f = 0.0 if f <= 0 else f - math.floor(f)
        if s >= n_in - 1:
            s, f = n_in - 1, 0.0
        w[d, s] += 1 - f
        if f:
            w[d, s + 1] += f
    return w


def resize_area(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``(B, C, H, W)`` to ``(size, size)`` like ``cv2.resize(..., INTER_AREA)`` in float.

    The release resizes its uint8 image with OpenCV before anything else; this is the same
    linear map (``torch``'s ``"area"`` mode differs for non-integer factors). Computed in
    float32 whatever ``x``'s dtype; returns float32.
    """
    h, w = x.shape[-2:]
    true_area = h >= size and w >= size
    wh = _cv2_area_weights(h, size, true_area).to(x.device, torch.float32)
    ww = _cv2_area_weights(w, size, true_area).to(x.device, torch.float32)
    return torch.matmul(torch.matmul(wh, x.float()), ww.T)


def resize_nearest(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize to ``(size, size)`` like ``cv2.resize(..., INTER_NEAREST)``: source index
    ``min(floor(d * n_in / n_out), n_in - 1)`` (computed in float64, as OpenCV does)."""
    h, w = x.shape[-2:]
    rows = torch.clamp(torch.floor(torch.arange(size, dtype=torch.float64) * (h / size)), max=h - 1).long()
    cols = torch.clamp(torch.floor(torch.arange(size, dtype=torch.float64) * (w / size)), max=w - 1).long()
    return x[..., rows.to(x.device), :][..., cols.to(x.device)]


def _round_like_cv2(v: torch.Tensor, halving: bool) -> torch.Tensor:
    """Round resized uint8-scale values as OpenCV stores them: its 2x2 averaging rounds half
    up, every other path rounds half to even. Snapping to 1/1024 first removes float noise
    so exact ties (multiples of 1/2**k) are recognised."""
    v = torch.round(v * 1024) / 1024
    return torch.floor(v + 0.5) if halving else torch.round(v)


# ----------------------------------------------------------------------------- blocks
class PatchEmbed(nn.Module):
    """Non-overlapping ``patch x patch`` convolution: ``(B, C, H, W) -> (B, L, dim)``."""

    def __init__(self, patch_size: int, in_channels: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention (fused qkv with bias) through ``scaled_dot_product_attention``."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_keep: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` (B, L, D); ``key_keep`` (B, L) bool, False = this token is not attended to.
        Every row of ``key_keep`` must keep at least one token."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        attn_mask = None if key_keep is None else key_keep[:, None, None, :]
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm ViT block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, key_keep: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), key_keep)
        return x + self.mlp(self.norm2(x))


@dataclass
class MAEOutput(BaseOutput):
    """Result of :meth:`MAEPrior.forward` (one fine-tuning step).

    loss: scalar, mean squared error over the masked pixels (``pixel_mask``), all channels.
    pred: (B, L, patch_size**2 * in_channels), predicted ImageNet-normalised patches
        (per-patch normalised if ``norm_pix_loss``); see :meth:`MAEPrior.unpatchify`.
    token_mask: (B, L) float, 1 = token removed from the encoder (every token with a hole pixel
        plus random extra tokens).
    pixel_mask: (B, 1, S, S) float, 1 = pixel the loss is computed on: the hole pixels plus the
        whole area of the random extra tokens (the release's ``irr_mask``).
    """

    loss: torch.Tensor
    pred: torch.Tensor
    token_mask: torch.Tensor
    pixel_mask: torch.Tensor


# ----------------------------------------------------------------------------- model
class MAEPrior(ModelMixin, ConfigMixin):
    """ViT masked auto-encoder whose decoder features are ASUKA's prior.

    Architecture (state-dict names follow the release): ``patch_embed`` -> + ``pos_embed`` ->
    ``blocks`` (keys of masked tokens excluded in attention) -> ``norm`` -> ``decoder_embed``;
    masked tokens become ``mask_token``; tokens only partly in the hole become
    ``x * alpha + decoder_patch_embed(cat(masked image, mask)) * (1 - alpha)``; +
    ``decoder_pos_embed`` -> ``decoder_blocks`` -> ``decoder_norm`` -> ``decoder_pred``.
    The prior is the sequence after the first ``prior_layers`` decoder blocks.

    The position embeddings are fixed and kept as non-persistent buffers (recomputed, not
    saved); :meth:`from_release` checks the release's copies against them.

    Args:
        image_size: side of the square MAE input; inputs of any size are resized to it.
        patch_size: token side in pixels; ``L = (image_size / patch_size) ** 2`` tokens.
        in_channels: image channels (3).
        embed_dim, depth, num_heads: encoder width, blocks, heads.
        decoder_embed_dim, decoder_depth, decoder_num_heads: decoder width, blocks, heads.
        mlp_ratio: MLP hidden width / block width.
        norm_eps: LayerNorm epsilon.
        prior_layers: decoder blocks run for :meth:`prior` (the release uses 6 of 8).
        norm_pix_loss: train against per-patch normalised pixels (the release's fine-tuning
            does not); :meth:`reconstruct` then cannot return pixels.
    """

    @register_to_config
    def __init__(
        self,
        image_size: int = 256,
        patch_size: int = 16,
        in_channels: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        mlp_ratio: float = 4.0,
        norm_eps: float = 1e-6,
        prior_layers: int = 6,
        norm_pix_loss: bool = False,
    ):
        super().__init__()
        problems = []
        if image_size % patch_size:
            problems.append(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        if embed_dim % num_heads:
            problems.append(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        if decoder_embed_dim % decoder_num_heads:
            problems.append(
                f"decoder_embed_dim {decoder_embed_dim} is not divisible by decoder_num_heads {decoder_num_heads}"
            )
        if not 0 <= prior_layers <= decoder_depth:
            problems.append(f"prior_layers must be in [0, decoder_depth={decoder_depth}], got {prior_layers}")
        if problems:
            raise InputError("MAEPrior config: " + "; ".join(problems))
        self.grid_size = image_size // patch_size
        self.num_tokens = self.grid_size**2

        self.patch_embed = PatchEmbed(patch_size, in_channels, embed_dim)
        self.register_buffer("pos_embed", sincos_pos_embed_2d(embed_dim, self.grid_size)[None], persistent=False)
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio, norm_eps) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)

        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        # masked image (in_channels) + mask (1) -> decoder width, for partly masked tokens
        self.decoder_patch_embed = PatchEmbed(patch_size, in_channels + 1, decoder_embed_dim)
        self.alpha = nn.Parameter(torch.tensor(1.0))
        self.register_buffer(
            "decoder_pos_embed", sincos_pos_embed_2d(decoder_embed_dim, self.grid_size)[None], persistent=False
        )
        self.decoder_blocks = nn.ModuleList(
            [Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, norm_eps) for _ in range(decoder_depth)]
        )
        self.decoder_norm = nn.LayerNorm(decoder_embed_dim, eps=norm_eps)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size**2 * in_channels)
        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self._init_weights()

    def _init_weights(self) -> None:
        # As the release: patch convs like flattened linears, xavier linears, zero biases,
        # N(0, 0.02) mask token, alpha = 1 (partly masked tokens start as plain MAE tokens).
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for embed in (self.patch_embed, self.decoder_patch_embed):
            nn.init.xavier_uniform_(embed.proj.weight.view(embed.proj.weight.shape[0], -1))
            nn.init.zeros_(embed.proj.bias)
        nn.init.normal_(self.mask_token, std=0.02)
        with torch.no_grad():
            self.alpha.fill_(1.0)

    @classmethod
    def from_preset(cls, name: str = "full", **overrides) -> "MAEPrior":
        """``"full"`` (the release's ViT-B/16 MAE) or ``"tiny"`` (tests), with config overrides."""
        if name not in PRESETS:
            raise InputError(f"MAEPrior preset: expected one of {sorted(PRESETS)}, got {name!r}")
        unknown = set(overrides) - set(PRESETS[name])
        if unknown:
            raise InputError(f"MAEPrior preset: unknown config fields {sorted(unknown)}; expected {sorted(PRESETS[name])}")
        return cls(**{**PRESETS[name], **overrides})

    # ------------------------------------------------------------------ input handling
    def _check_inputs(self, image: torch.Tensor, mask: torch.Tensor, *, size: int | None = None) -> None:
        c = self.config.in_channels
        if not torch.is_tensor(image) or image.ndim != 4 or image.shape[1] != c:
            raise InputError(f"MAE image: expected a (B, {c}, H, W) tensor, got {_describe(image)}")
        if not torch.is_tensor(mask) or mask.ndim != 4 or mask.shape[1] != 1:
            raise InputError(f"MAE mask: expected a (B, 1, H, W) tensor, got {_describe(mask)}")
        if mask.shape[0] != image.shape[0] or mask.shape[-2:] != image.shape[-2:]:
            raise InputError(
                f"MAE mask: expected batch and size of the image {(image.shape[0], *image.shape[-2:])}, "
                f"got {(mask.shape[0], *mask.shape[-2:])}"
            )
        if size is not None and tuple(image.shape[-2:]) != (size, size):
            raise InputError(f"MAE prepared input: expected {size}x{size}, got {tuple(image.shape[-2:])}")
        if not image.is_floating_point() or not mask.is_floating_point():
            raise InputError(f"MAE inputs: expected float tensors, got image {image.dtype}, mask {mask.dtype}")

    def prepare(self, image: torch.Tensor, mask: torch.Tensor, *, zero_holes: bool = True, quantize: bool = True):
        """Turn an image + mask into the MAE's input, as the release's data pipeline does.

        Args:
            image: (B, 3, H, W) in ``[-1, 1]``, any size and aspect ratio.
            mask: (B, 1, H, W), 1 = hole; binarised at 0.5 (values >= 0.5 are hole).
            zero_holes: set hole pixels to 0 (= the ImageNet mean colour) as the release does
                for its input; the training target uses ``False``.
            quantize: round the resized image to 1/255 steps, as the release's uint8 resize does.

        Returns:
            ``(mae_image, mae_mask)``: (B, 3, S, S) float32 ImageNet-normalised
            (``(x01 - mean) / std``), and (B, 1, S, S) float32 in {0, 1}; ``S = image_size``.

        The release resizes the *uint8* image with ``cv2.INTER_AREA`` (a square ``S x S``,
        aspect ratio not kept), divides by 255, normalises, and resizes the mask with
        ``cv2.INTER_NEAREST``. Here the same resampling matrices run in float32 on the float
        image and, with ``quantize``, the result is rounded to the uint8 grid as OpenCV rounds.
        Measured on uint8 images: identical (to float error) for integer shrink factors
        (512 or 1024 -> 256) and 640x480; one uint8 step off for ~0.05 % of values for other
        shrink factors, and for ~10 % when enlarging (OpenCV's 11-bit fixed-point weights).
        Without ``quantize`` the difference is the release's rounding (<= 0.5/255 before
        normalisation, ~0.009 after). The mask is exact.
        """
        self._check_inputs(image, mask)
        if not torch.isfinite(image).all() or image.min() < -1.001 or image.max() > 1.001:
            raise InputError(
                f"MAE image: expected finite values in [-1, 1], got range "
                f"[{image.min().item():.4g}, {image.max().item():.4g}]"
            )
        size = self.config.image_size
        hole = (resize_nearest(mask.float(), size) >= 0.5).float()
        x = resize_area((image.float().clamp(-1, 1) + 1) / 2, size)
        if quantize:
            x = _round_like_cv2(x * 255, halving=tuple(image.shape[-2:]) == (2 * size, 2 * size)) / 255
        x = (x - self.image_mean) / self.image_std
        if zero_holes:
            x = x * (1 - hole)
        return x, hole

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-normalised (B, 3, H, W) -> ``[-1, 1]`` (clamped)."""
        x01 = x.float() * self.image_std + self.image_mean
        return (x01 * 2 - 1).clamp(-1, 1)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> (B, L, p*p*C), each patch row-major in (row, column, channel) order."""
        p, g = self.config.patch_size, self.grid_size
        b, c = x.shape[:2]
        x = x.reshape(b, c, g, p, g, p).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(b, g * g, p * p * c)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, p*p*C) -> (B, C, S, S); the inverse of :meth:`patchify`."""
        p, g = self.config.patch_size, self.grid_size
        b = x.shape[0]
        c = x.shape[-1] // (p * p)
        x = x.reshape(b, g, g, p, p, c).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(b, c, g * p, g * p)

    def _token_masks(self, pixel_mask: torch.Tensor):
        """Pixel mask (B, 1, S, S) -> per-token ``(any hole pixel, only partly hole)`` (B, L) bool.

        Computed in float32 so "fully in the hole" (mean == 1) is exact whatever the model dtype.
        """
        frac = F.avg_pool2d(pixel_mask.float(), self.config.patch_size).flatten(1)  # (B, L)
        return frac > 0, (frac > 0) & (frac < 1)

    # ------------------------------------------------------------------ shared stages
    def _encode(self, x: torch.Tensor, key_keep: torch.Tensor | None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, key_keep)
        return self.norm(x)

    def _decoder_input(self, latent, token_masked, mae_image, pixel_mask):
        """Encoder tokens (B, L, E) -> decoder tokens (B, L, D) with position embedding.

        Masked tokens become ``mask_token`` (selected with ``where``, so whatever the encoder
        produced for them -- even NaN -- cannot leak); partly masked tokens are mixed with the
        patch embedding of (masked image, mask) through ``alpha``.
        """
        x = self.decoder_embed(latent)
        x = torch.where(token_masked[..., None], self.mask_token.to(x.dtype), x)
        _, partial = self._token_masks(pixel_mask)
        pm = pixel_mask.to(x.dtype)
        img_embed = self.decoder_patch_embed(torch.cat([mae_image.to(x.dtype) * (1 - pm), pm], dim=1))
        alpha = self.alpha.clamp(0.0, 1.0).to(x.dtype)
        x = torch.where(partial[..., None], x * alpha + img_embed * (1 - alpha), x)
        return x + self.decoder_pos_embed.to(x.dtype)

    def _encode_with_key_mask(self, mae_image, mae_mask):
        """Release's ``forward_encoder_with_mask``: all tokens stay, masked ones are not keys."""
        self._check_inputs(mae_image, mae_mask, size=self.config.image_size)
        dtype = self.patch_embed.proj.weight.dtype
        x = self.patch_embed(mae_image.to(dtype)) + self.pos_embed.to(dtype)
        token_masked, _ = self._token_masks(mae_mask)
        key_keep = ~token_masked
        # A sample whose every token is masked has no key left: the release gets NaN there
        # (and the FLUX pipeline zeroes the whole batch). Its encoder output is replaced by
        # mask tokens anyway, so let it attend to everything instead: finite, and every
        # other sample is unaffected.
        key_keep = key_keep | ~key_keep.any(dim=1, keepdim=True)
        return self._encode(x, key_keep), token_masked

    # ------------------------------------------------------------------ inference
    def prior_features(self, mae_image: torch.Tensor, mae_mask: torch.Tensor, num_layers: int | None = None):
        """The prior from already prepared inputs (see :meth:`prepare`).

        Equals the release's ``forward_return_feature(mae_image, mae_mask, decoder_layer=num_layers)``
        except for samples whose every token touches the hole: the release returns NaN for them,
        here they get the decoder's answer to "nothing known" (mask tokens only), finite.

        Args:
            mae_image: (B, 3, S, S) ImageNet-normalised, holes zeroed.
            mae_mask: (B, 1, S, S) in {0, 1}, 1 = hole.
            num_layers: decoder blocks to run (default ``config.prior_layers``).

        Returns:
            (B, L, decoder_embed_dim) in the model's dtype.
        """
        num_layers = self.config.prior_layers if num_layers is None else num_layers
        if not 0 <= num_layers <= self.config.decoder_depth:
            raise InputError(f"MAE prior: num_layers must be in [0, {self.config.decoder_depth}], got {num_layers}")
        latent, token_masked = self._encode_with_key_mask(mae_image, mae_mask)
        x = self._decoder_input(latent, token_masked, mae_image, mae_mask)
        for block in self.decoder_blocks[:num_layers]:
            x = block(x)
        return x

    def prior(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ASUKA's prior ``F_MAE`` from an image and its mask.

        Args:
            image: (B, 3, H, W) in ``[-1, 1]``, any size (resized to ``image_size``).
            mask: (B, 1, H, W), 1 = hole. An all-hole mask gives a finite prior (see
                :meth:`prior_features`); an all-zero mask gives the "reconstructed" prior of
                the whole image.

        Returns:
            (B, L, decoder_embed_dim), ``L = (image_size / patch_size) ** 2`` (256 x 512 at full size).
        """
        return self.prior_features(*self.prepare(image, mask))

    def reconstruct_patches(self, mae_image: torch.Tensor, mae_mask: torch.Tensor) -> torch.Tensor:
        """Release's ``forward_return_image`` before unpatchify: (B, L, p*p*C) normalised pixels."""
        latent, token_masked = self._encode_with_key_mask(mae_image, mae_mask)
        x = self._decoder_input(latent, token_masked, mae_image, mae_mask)
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))

    def reconstruct(self, image: torch.Tensor, mask: torch.Tensor, *, paste_known: bool = False) -> torch.Tensor:
        """The MAE's reconstruction, (B, 3, S, S) in ``[-1, 1]`` at ``S = image_size``.

        Args:
            image: (B, 3, H, W) in ``[-1, 1]``; mask: (B, 1, H, W), 1 = hole.
            paste_known: put the (resized) known pixels back outside the hole.
        """
        if self.config.norm_pix_loss:
            raise InputError("MAE reconstruct: this model predicts per-patch normalised pixels "
                             "(norm_pix_loss=True), expected a model with norm_pix_loss=False")
        mae_image, mae_mask = self.prepare(image, mask)
        out = self.to_pixels(self.unpatchify(self.reconstruct_patches(mae_image, mae_mask).float()))
        if paste_known:
            out = torch.where(mae_mask.bool(), out, self.to_pixels(mae_image))
        return out

    # ------------------------------------------------------------------ training
    def forward(self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None,
                mask_ratio: float = 0.75) -> MAEOutput:
        """One fine-tuning step's loss (the release's ``MaskedAutoencoderViTFinetune.forward``).

        Args:
            image: (B, 3, H, W) in ``[-1, 1]`` (resized to ``image_size``; the *whole* image is
                the target, the model never sees hole pixels).
            mask: (B, 1, H, W), 1 = hole.
            generator: draws the random extra tokens (on the model's device).
            mask_ratio: fraction of tokens removed from the encoder, at least.
        """
        mae_image, mae_mask = self.prepare(image, mask, zero_holes=False)
        return self.forward_prepared(mae_image, mae_mask, generator=generator, mask_ratio=mask_ratio)

    def forward_prepared(self, mae_image: torch.Tensor, mae_mask: torch.Tensor,
                         generator: torch.Generator | None = None, mask_ratio: float = 0.75) -> MAEOutput:
        """:meth:`forward` on prepared inputs (``prepare(..., zero_holes=False)``).

        Adaptive masking: every token with a hole pixel is removed, then the tokens with the
        largest uniform noise until ``L - int(L * (1 - mask_ratio))`` are removed. Where the
        hole touches more tokens than that, the release keeps some hole tokens (and would show
        the encoder hole pixels); here every hole token is removed, so more than ``mask_ratio``
        of the tokens can be masked. Otherwise (same noise) the result is the release's.
        """
        if not 0.0 <= mask_ratio < 1.0:
            raise InputError(f"MAE forward: mask_ratio must be in [0, 1), got {mask_ratio}")
        self._check_inputs(mae_image, mae_mask, size=self.config.image_size)
        b, n = mae_image.shape[0], self.num_tokens
        dtype = self.patch_embed.proj.weight.dtype
        hole_token, _ = self._token_masks(mae_mask)

        # 1. choose tokens: hole tokens get noise 1 (the largest), so they are removed first.
        noise = torch.rand(b, n, generator=generator, device=mae_image.device)
        noise = torch.clamp(noise + hole_token.float(), 0.0, 1.0)
        keep_count = int(n * (1 - mask_ratio))
        ids_keep = torch.argsort(noise, dim=1)[:, :keep_count]  # (B, K)
        token_mask = torch.ones(b, n, dtype=torch.bool, device=mae_image.device)
        token_mask.scatter_(1, ids_keep, False)
        token_mask |= hole_token
        keep_valid = ~torch.gather(hole_token, 1, ids_keep)  # (B, K): kept slot holds no hole

        # 2. pixels the loss (and the decoder's partial-token path) treat as unknown: the hole
        # itself inside hole tokens, the whole area of the random extra tokens.
        up = lambda t: resize_nearest(t.float().view(b, 1, self.grid_size, self.grid_size), self.config.image_size)
        pixel_mask = mae_mask * up(token_mask & hole_token) + up(token_mask & ~hole_token)

        # 3. encode the kept tokens only (slots that fell on hole tokens are not attended to).
        x = self.patch_embed(mae_image.to(dtype)) + self.pos_embed.to(dtype)
        x = torch.gather(x, 1, ids_keep[..., None].expand(-1, -1, x.shape[-1]))
        if keep_count:
            key_keep = keep_valid | ~keep_valid.any(dim=1, keepdim=True)
            x = self._encode(x, None if bool(keep_valid.all()) else key_keep)
        latent = torch.zeros(b, n, x.shape[-1], dtype=x.dtype, device=x.device)
        latent = latent.scatter(1, ids_keep[..., None].expand(-1, -1, x.shape[-1]), x)

        # 4. decode all tokens and predict every patch.
        x = self._decoder_input(latent, token_mask, mae_image, pixel_mask)
        for block in self.decoder_blocks:
            x = block(x)
        pred = self.decoder_pred(self.decoder_norm(x))

        # 5. loss over the masked pixels (every channel), as the release's fine-tuning loss.
        target = self.patchify(mae_image.float())
        if self.config.norm_pix_loss:
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        weight = self.patchify(pixel_mask.expand(-1, self.config.in_channels, -1, -1))
        loss = (((pred.float() - target) ** 2) * weight).sum() / weight.sum().clamp_min(1.0)
        return MAEOutput(loss=loss, pred=pred, token_mask=token_mask.float(), pixel_mask=pixel_mask)

    # ------------------------------------------------------------------ conversion
    @classmethod
    def from_release(cls, path_or_state_dict, **config_overrides) -> "MAEPrior":
        """Build from the release's MAE checkpoint, inferring sizes from tensor shapes.

        Accepts ``mae_300.pth`` as MAE's training script writes it (``{'model': state_dict,
        'optimizer', 'epoch', 'scaler', 'args'}``, ``args`` an ``argparse.Namespace``; everything but
        ``model`` is ignored, and a log line says so) or a bare state dict.

        Head counts cannot be read from the weights. They are known for the MAE architectures:
        ViT-B/16 with the 512-wide, 8-block decoder (the release: 12 encoder and 16 decoder heads,
        prior after 6 decoder blocks), ViT-L/16 and ViT-H/14 (16 and 16). Any other size is refused
        unless ``num_heads`` and ``decoder_num_heads`` are given (a wrong guess would load without
        error and give another prior). ``image_size`` comes from ``pos_embed`` if present, else 256.
        Other config fields may be overridden too. Every key and shape is checked
        (:class:`CheckpointError` names the missing, unexpected or mis-shaped keys, with the
        expected and the found shape). The release's ``pos_embed`` and ``decoder_pos_embed`` are
        fixed sin-cos tables: they are checked against ours, not loaded.
        """
        what = "MAE release checkpoint"
        sd, extras = take_weights(read_checkpoint(path_or_state_dict, what=what, weights_key="model"),
                                  what=what, keys=("model",))
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
        config = _infer_release_config(sd, what)
        unknown = set(config_overrides) - set(config)
        if unknown:
            raise InputError(f"{what}: unknown config overrides {sorted(unknown)}; expected some of {sorted(config)}")
        heads = _KNOWN_HEADS.get(_architecture(config))
        missing = [name for name in ("num_heads", "decoder_num_heads") if name not in config_overrides]
        if heads is None and missing:
            raise CheckpointError(
                f"{what}: the head counts cannot be read from the weights, and this is not a known MAE "
                f"architecture (patch {config['patch_size']}, encoder {config['embed_dim']} x {config['depth']} "
                f"blocks, decoder {config['decoder_embed_dim']} x {config['decoder_depth']}; known: ViT-B/16 "
                f"as released, ViT-L/16, ViT-H/14 with the 512 x 8 decoder); pass "
                + " and ".join(f"{name}=..." for name in missing)
                + " (e.g. MAEPrior.from_release(path, num_heads=H, decoder_num_heads=H_dec))")
        if heads is not None:
            config.update(num_heads=heads[0], decoder_num_heads=heads[1])
        config.update(config_overrides)
        model = cls(**config)
        for key in ("pos_embed", "decoder_pos_embed"):
            if key in sd:
                ours, theirs = getattr(model, key), sd.pop(key).float()
                if tuple(theirs.shape) != tuple(ours.shape) or (theirs - ours).abs().max() > 1e-5:
                    raise CheckpointError(
                        f"{what}: {key} {tuple(theirs.shape)} is not the fixed 2-D sin-cos table "
                        f"{tuple(ours.shape)} this model uses (check image_size/patch_size)"
                    )
        alpha = sd.get("alpha")
        if alpha is not None:  # a scalar; (1,) is the same number
            if alpha.numel() != 1:
                raise CheckpointError(f"{what}: state dict does not match the model (shape mismatch: alpha: "
                                      f"expected () or (1,), found {tuple(alpha.shape)})")
            sd["alpha"] = alpha.reshape(())
        report_ignored(what, {"training state": extras})
        return load_checked(model, sd, what=what)


def _architecture(config: dict) -> tuple:
    return (config["patch_size"], config["embed_dim"], config["depth"],
            config["decoder_embed_dim"], config["decoder_depth"])


#: (patch, width, depth, decoder width, decoder depth) -> (heads, decoder heads): the MAE paper's
#: models (``mae_vit_{base_patch16,large_patch16,huge_patch14}``); the first is the release's.
_KNOWN_HEADS = {(16, 768, 12, 512, 8): (12, 16), (16, 1024, 24, 512, 8): (16, 16), (14, 1280, 32, 512, 8): (16, 16)}


def _infer_release_config(sd: Mapping[str, torch.Tensor], what: str) -> dict:
    """Every size the tensors tell; head counts are left at the release's (see ``from_release``)."""
    def need(key):
        if key not in sd:
            raise CheckpointError(f"{what}: missing key {key} (needed to infer the model size); "
                                  f"got keys {sorted(sd)[:8]}")
        return sd[key]

    patch_w = need("patch_embed.proj.weight")  # (E, C, p, p)
    embed_dim, in_channels, patch_size = patch_w.shape[0], patch_w.shape[1], patch_w.shape[-1]
    decoder_embed_dim = need("decoder_embed.weight").shape[0]
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    decoder_depth = len({k.split(".")[1] for k in sd if k.startswith("decoder_blocks.")})
    mlp_ratio = need("blocks.0.mlp.fc1.weight").shape[0] / embed_dim
    image_size = 256
    if "pos_embed" in sd:
        image_size = math.isqrt(sd["pos_embed"].shape[-2]) * patch_size
    return dict(
        image_size=image_size, patch_size=patch_size, in_channels=in_channels, embed_dim=embed_dim, depth=depth,
        num_heads=12, decoder_embed_dim=decoder_embed_dim, decoder_depth=decoder_depth, decoder_num_heads=16,
        mlp_ratio=mlp_ratio, norm_eps=1e-6, prior_layers=min(6, decoder_depth), norm_pix_loss=False,
    )


def _describe(x) -> str:
    if torch.is_tensor(x):
        return f"tensor of shape {tuple(x.shape)} ({x.dtype})"
    return type(x).__name__
