"""Alignment module: maps the MAE prior into the frozen UNet's condition space.

``AsukaAligner`` is ``Linear(in_dim -> dim)``, ``num_blocks`` single-stream transformer blocks
and a final ``LayerNorm(dim)``, the layout of the official ASUKA release (FLUX variant, where
``dim = 768`` is the CLIP branch). For SD-1.5 the ``256 x dim`` output is passed to the UNet as
``encoder_hidden_states`` in place of the CLIP text embedding.

Each block (parallel attention + MLP, as in ViT-22B / FLUX single-stream blocks, without the
timestep modulation)::

    y = LayerNorm(x)                               # no affine, eps 1e-6
    q, k, v, m = split(linear1(y))                 # one matmul for qkv and the MLP hidden
    q, k = RMSNorm(q), RMSNorm(k)                  # per head, learnable scale
    a = softmax(q k^T / sqrt(head_dim)) v          # all tokens, no mask, no position embedding
    x = x + linear2(concat(a, gelu_tanh(m)))
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from asuka.errors import CheckpointError, InputError
from asuka.models._checks import check_state_dict, read_checkpoint, report_ignored, take_weights

PRESETS: dict[str, dict] = {
    # the release's CLIP-branch alignment; dim 768 = SD-1.5's cross_attention_dim
    "full": dict(in_dim=512, dim=768, num_blocks=4, head_dim=64, mlp_ratio=4.0, null_tokens=1),
    # for tests: seconds on a CPU
    "tiny": dict(in_dim=32, dim=32, num_blocks=2, head_dim=16, mlp_ratio=4.0, null_tokens=1),
}


class SingleStreamBlock(nn.Module):
    """Pre-norm transformer block with fused ``qkv + mlp_in`` and ``attn_out + mlp_out`` linears.

    Input and output ``(B, L, dim)``.
    """

    def __init__(self, dim: int, head_dim: int, mlp_ratio: float):
        super().__init__()
        self.dim, self.head_dim, self.heads = dim, head_dim, dim // head_dim
        # int() as in the release; the epsilon only absorbs float error of a ratio read back from shapes
        self.mlp_hidden = int(dim * mlp_ratio + 1e-6)
        self.pre_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear1 = nn.Linear(dim, 3 * dim + self.mlp_hidden)
        self.linear2 = nn.Linear(dim + self.mlp_hidden, dim)
        self.norm_q = nn.RMSNorm(head_dim, eps=1e-6)
        self.norm_k = nn.RMSNorm(head_dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv, mlp = self.linear1(self.pre_norm(x)).split([3 * self.dim, self.mlp_hidden], dim=-1)
        # channel order of qkv is (3, heads, head_dim)
        q, k, v = qkv.view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x (B, H, L, D)
        q, k = self.norm_q(q).to(v.dtype), self.norm_k(k).to(v.dtype)
        attn = F.scaled_dot_product_attention(q, k, v)  # (B, H, L, D)
        attn = attn.transpose(1, 2).reshape(b, n, self.dim)
        return x + self.linear2(torch.cat([attn, F.gelu(mlp, approximate="tanh")], dim=-1))


class AsukaAligner(ModelMixin, ConfigMixin):
    """Alignment module of ASUKA.

    Args:
        in_dim: width of the MAE prior tokens (512 for the released MAE decoder width).
        dim: output width; must equal the UNet's ``cross_attention_dim`` (768 for SD-1.5).
        num_blocks: number of single-stream blocks (0: ``Linear`` + ``LayerNorm`` only, the
            paper's linear-alignment ablation).
        head_dim: attention head width (heads = ``dim // head_dim``).
        mlp_ratio: MLP hidden width / ``dim``.
        null_tokens: number of tokens of the stored null condition (see :meth:`null`).

    ``forward(prior)``: ``prior`` ``(B, L, in_dim)`` -> ``(B, L, dim)``; tokens are independent of
    position (no position embedding), so any ``L >= 1`` works (256 for the 16x16 MAE grid).
    """

    @register_to_config
    def __init__(
        self,
        in_dim: int = 512,
        dim: int = 768,
        num_blocks: int = 4,
        head_dim: int = 64,
        mlp_ratio: float = 4.0,
        null_tokens: int = 1,
    ):
        super().__init__()
        for name, value in (("in_dim", in_dim), ("dim", dim), ("head_dim", head_dim), ("null_tokens", null_tokens)):
            if int(value) != value or value < 1:
                raise InputError(f"AsukaAligner: {name} must be a positive integer, got {value!r}")
        # num_blocks = 0: Linear + LayerNorm only, the paper's "linear alignment" ablation
        if int(num_blocks) != num_blocks or num_blocks < 0:
            raise InputError(f"AsukaAligner: num_blocks must be an integer >= 0, got {num_blocks!r}")
        if dim % head_dim:
            raise InputError(f"AsukaAligner: dim must be a multiple of head_dim, got dim={dim}, head_dim={head_dim}")
        if mlp_ratio <= 0:
            raise InputError(f"AsukaAligner: mlp_ratio must be > 0, got {mlp_ratio}")
        self.proj_in = nn.Linear(in_dim, dim)
        self.blocks = nn.ModuleList(SingleStreamBlock(dim, head_dim, mlp_ratio) for _ in range(num_blocks))
        self.norm_out = nn.LayerNorm(dim)  # affine, eps 1e-5 (torch default), as released
        # The condition the UNet gets for "no prior" (classifier-free guidance, prior dropout).
        # A buffer, so it is saved with the weights and follows .to(device/dtype).
        self.register_buffer("null_condition", torch.zeros(null_tokens, dim), persistent=True)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_preset(cls, name: str = "full", **overrides) -> "AsukaAligner":
        """``"full"`` (512 -> 768, 4 blocks, head_dim 64) or ``"tiny"`` (32 -> 32, 2 blocks, head_dim 16);
        keyword overrides replace single config fields."""
        if name not in PRESETS:
            raise InputError(f"AsukaAligner: unknown preset {name!r}; expected one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    # ------------------------------------------------------------------ forward
    def forward(self, prior: torch.Tensor) -> torch.Tensor:
        """``prior`` ``(B, L, in_dim)`` (the MAE prior) -> aligned condition ``(B, L, dim)``."""
        if not isinstance(prior, torch.Tensor) or prior.ndim != 3 or prior.shape[-1] != self.config.in_dim:
            got = tuple(prior.shape) if isinstance(prior, torch.Tensor) else type(prior).__name__
            raise InputError(f"AsukaAligner: prior must have shape (B, L, {self.config.in_dim}), got {got}")
        x = self.proj_in(prior.to(self.proj_in.weight.dtype))
        for block in self.blocks:
            x = block(x)
        return self.norm_out(x)

    # ------------------------------------------------------------------ null condition
    def set_null_condition(self, condition: torch.Tensor) -> None:
        """Store the null condition: ``(T, dim)`` or ``(1, T, dim)``, e.g. the CLIP text embedding of
        the empty prompt for SD-1.5 (``77 x 768``). Resizes the buffer and sets ``config.null_tokens = T``
        so that ``save_pretrained``/``from_pretrained`` keep it."""
        if not isinstance(condition, torch.Tensor):
            raise InputError(f"AsukaAligner.set_null_condition: expected a tensor, got {type(condition).__name__}")
        if condition.ndim == 3 and condition.shape[0] == 1:
            condition = condition[0]
        dim = self.config.dim
        if condition.ndim != 2 or condition.shape[1] != dim or condition.shape[0] < 1:
            raise InputError(
                f"AsukaAligner.set_null_condition: expected shape (T, {dim}) or (1, T, {dim}), "
                f"got {tuple(condition.shape)}"
            )
        if not torch.isfinite(condition).all():
            raise InputError("AsukaAligner.set_null_condition: the condition contains NaN or Inf")
        buf = self.null_condition
        self.null_condition = condition.detach().to(device=buf.device, dtype=buf.dtype).clone()
        self.register_to_config(null_tokens=int(condition.shape[0]))

    def null(self, batch_size: int, num_tokens: int | None = None) -> torch.Tensor:
        """The null condition expanded to ``(batch_size, num_tokens, dim)`` (a view; clone before
        writing into it). ``num_tokens`` defaults to ``config.null_tokens``.

        When ``num_tokens`` differs, the sequence is cut to its first ``num_tokens`` tokens or extended
        by repeating its last token. Why: conditional and unconditional UNet inputs are batched together,
        so they need the same length (256 aligned tokens vs 77 CLIP tokens). The CLIP empty-prompt
        embedding is ``[BOS, EOS, pad, pad, ...]`` and its tail is padding, so repeating the last token
        is the natural way to lengthen it (the extra copies are near-duplicates of the existing padding
        tokens, not new content). This is not exactly equivalent to attending over the original 77
        tokens -- duplicated keys receive more attention mass -- so prefer the stored length where the
        backbone allows it. Truncation keeps BOS and the first tokens.
        """
        if int(batch_size) != batch_size or batch_size < 1:
            raise InputError(f"AsukaAligner.null: batch_size must be a positive integer, got {batch_size!r}")
        cond = self.null_condition
        if num_tokens is not None:
            if int(num_tokens) != num_tokens or num_tokens < 1:
                raise InputError(f"AsukaAligner.null: num_tokens must be a positive integer, got {num_tokens!r}")
            t = cond.shape[0]
            if num_tokens < t:
                cond = cond[:num_tokens]
            elif num_tokens > t:
                cond = torch.cat([cond, cond[-1:].expand(num_tokens - t, -1)], dim=0)
        return cond.unsqueeze(0).expand(int(batch_size), -1, -1)

    # ------------------------------------------------------------------ release converter
    @classmethod
    def from_release(cls, path_or_state_dict) -> "AsukaAligner":
        """Build an aligner from the official release (``asuka_alignment_clip.pt`` /
        ``asuka_alignment_t5.pt``: a raw ``nn.Sequential`` state dict).

        Release layout: ``0.*`` (input Linear), ``{1..N}.linear1.*``, ``{1..N}.linear2.*``,
        ``{1..N}.norm.query_norm.scale``, ``{1..N}.norm.key_norm.scale``, ``{1..N}.modulation.lin.*``
        (built but never used in the release's forward: dropped, and said so in a log line; for the
        t5 aligner these are 201 M of its 1.01 B parameters), ``{N+1}.*`` (final LayerNorm).
        ``in_dim``, ``dim``, ``N``, ``head_dim`` and ``mlp_ratio`` are read from the tensor shapes;
        every key and shape is then checked, and the error names what is missing, unexpected or
        mis-shaped, as the key is spelled in the file. The file is memory-mapped, so the dropped
        tensors are never read. The null condition stays zeros (the release keeps it in separate
        files, ``ckpt/vec.pt`` and ``ckpt/txt_256.pt``); set it with :meth:`set_null_condition`.
        """
        what = "AsukaAligner.from_release"
        sd, extras = take_weights(read_checkpoint(path_or_state_dict, what=what), what=what, keys=())
        config = _infer_release_config(sd, what)
        model = cls(**config)
        n = config["num_blocks"]
        rename = _release_names(n)  # ours -> release
        ours_sd = model.state_dict()
        expected = {rel: ours_sd[ours] for ours, rel in rename.items()}
        unused = tuple(f"{i}.modulation." for i in range(1, n + 1))
        check_state_dict(expected, sd, what=what, ignore_unexpected=unused)
        dropped = [k for k in sd if k.startswith(unused)]
        report_ignored(what, {
            "never used in the release's forward": dropped and (
                f"{{1..{n}}}.modulation.lin.* ({len(dropped)} keys, "
                f"{sum(sd[k].numel() for k in dropped) / 1e6:.1f} M parameters)"),
            "non-tensor entries": extras,
        })
        ours = {o: sd[r] for o, r in rename.items()}
        ours["null_condition"] = model.null_condition
        model.load_state_dict(ours, strict=True)
        return model


def _release_names(num_blocks: int) -> dict[str, str]:
    """Our parameter name -> the release's ``nn.Sequential`` key."""
    names = {"proj_in.weight": "0.weight", "proj_in.bias": "0.bias",
             "norm_out.weight": f"{num_blocks + 1}.weight", "norm_out.bias": f"{num_blocks + 1}.bias"}
    for i in range(num_blocks):
        r = i + 1
        for p in ("weight", "bias"):
            names[f"blocks.{i}.linear1.{p}"] = f"{r}.linear1.{p}"
            names[f"blocks.{i}.linear2.{p}"] = f"{r}.linear2.{p}"
        names[f"blocks.{i}.norm_q.weight"] = f"{r}.norm.query_norm.scale"
        names[f"blocks.{i}.norm_k.weight"] = f"{r}.norm.key_norm.scale"
    return names


def _infer_release_config(sd: Mapping[str, torch.Tensor], what: str) -> dict:
    """Sizes from the shapes. Only what the sizes need is required here; every other key is then
    checked by name (so a missing ``2.linear1.weight`` is reported as exactly that)."""
    def need(key: str, ndim: int) -> torch.Tensor:
        t = sd.get(key)
        if t is None:
            raise CheckpointError(f"{what}: missing key {key!r} (keys present: {_first(sd)})")
        if t.ndim != ndim:
            raise CheckpointError(f"{what}: {key!r}: expected a {ndim}-D tensor, found shape {tuple(t.shape)}")
        return t

    dim, in_dim = need("0.weight", 2).shape
    indices = {int(k.split(".", 1)[0]) for k in sd if k.split(".", 1)[0].isdigit()}
    last = max(indices)
    if last < 1 or f"{last}.weight" not in sd:
        raise CheckpointError(
            f"{what}: not an alignment state dict: expected '0.*', blocks '1..N' ('<i>.linear1.weight', ...) "
            f"and the final LayerNorm '<N+1>.weight', '<N+1>.bias'; found no '{last}.weight' "
            f"(keys present: {_first(sd)})")
    n = last - 1
    if n == 0:  # Linear + LayerNorm only: head size unused
        return dict(in_dim=int(in_dim), dim=int(dim), num_blocks=0, head_dim=int(dim), mlp_ratio=4.0, null_tokens=1)

    def first_block_with(suffix: str, ndim: int) -> torch.Tensor:
        for i in range(1, n + 1):
            if f"{i}.{suffix}" in sd:
                return need(f"{i}.{suffix}", ndim)
        raise CheckpointError(f"{what}: missing key '1.{suffix}' (expected in each of the blocks 1..{n} "
                              f"before the final LayerNorm '{last}.*'; no block has it)")

    head_dim = first_block_with("norm.query_norm.scale", 1).shape[0]
    fused = first_block_with("linear1.weight", 2).shape[0]
    if head_dim < 1 or dim % head_dim or fused <= 3 * dim:
        raise CheckpointError(f"{what}: inconsistent shapes: dim {dim} (from 0.weight), head_dim {head_dim} "
                              f"(from norm.query_norm.scale), linear1 out {fused} (expected > 3 * dim = {3 * dim})")
    return dict(in_dim=int(in_dim), dim=int(dim), num_blocks=n, head_dim=int(head_dim),
                mlp_ratio=(fused - 3 * dim) / dim, null_tokens=1)


def _first(sd: Mapping, limit: int = 6) -> str:
    keys = sorted(map(str, sd))
    return ", ".join(keys[:limit]) + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")
