"""AsukaAligner: shapes, determinism, save/load, null condition, release converter."""

import logging

import pytest
import torch
import torch.nn.functional as F

from asuka.errors import CheckpointError, InputError
from asuka.models.aligner import AsukaAligner


@pytest.fixture
def aligner():
    torch.manual_seed(0)
    return AsukaAligner.from_preset("tiny").eval()


def release_state_dict(in_dim=24, dim=32, n=2, head_dim=16, mlp_hidden=128, seed=0):
    """A state dict in the release's nn.Sequential layout, random values (scales away from 1)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * (s[-1] ** -0.5 if len(s) > 1 else 0.3)  # noqa: E731
    sd = {"0.weight": r(dim, in_dim), "0.bias": r(dim)}
    for i in range(1, n + 1):
        sd[f"{i}.linear1.weight"] = r(3 * dim + mlp_hidden, dim)
        sd[f"{i}.linear1.bias"] = r(3 * dim + mlp_hidden)
        sd[f"{i}.linear2.weight"] = r(dim, dim + mlp_hidden)
        sd[f"{i}.linear2.bias"] = r(dim)
        sd[f"{i}.norm.query_norm.scale"] = 1 + r(head_dim)
        sd[f"{i}.norm.key_norm.scale"] = 1 + r(head_dim)
        sd[f"{i}.modulation.lin.weight"] = r(3 * dim, dim)  # exists in the release, never used
        sd[f"{i}.modulation.lin.bias"] = r(3 * dim)
    sd[f"{n + 1}.weight"] = 1 + r(dim)
    sd[f"{n + 1}.bias"] = r(dim)
    return sd


def release_forward(sd, x, n, head_dim):
    """The release's computation written out from its description, on the release-layout dict."""
    x = F.linear(x, sd["0.weight"], sd["0.bias"])
    dim = x.shape[-1]
    heads = dim // head_dim
    for i in range(1, n + 1):
        y = F.layer_norm(x, (dim,), eps=1e-6)
        qkv, mlp = F.linear(y, sd[f"{i}.linear1.weight"], sd[f"{i}.linear1.bias"]).split(
            [3 * dim, sd[f"{i}.linear1.weight"].shape[0] - 3 * dim], -1)
        b, n_tok, _ = qkv.shape
        q, k, v = qkv.reshape(b, n_tok, 3, heads, head_dim).permute(2, 0, 3, 1, 4)

        def rms(t, s):
            return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-6) * s

        q, k = rms(q, sd[f"{i}.norm.query_norm.scale"]), rms(k, sd[f"{i}.norm.key_norm.scale"])
        w = (q @ k.transpose(-1, -2) / head_dim ** 0.5).softmax(-1)
        a = (w @ v).transpose(1, 2).reshape(b, n_tok, dim)
        x = x + F.linear(torch.cat([a, F.gelu(mlp, approximate="tanh")], -1),
                         sd[f"{i}.linear2.weight"], sd[f"{i}.linear2.bias"])
    return F.layer_norm(x, (dim,), sd[f"{n + 1}.weight"], sd[f"{n + 1}.bias"], eps=1e-5)


def test_shapes_any_length(aligner):
    for length in (1, 7, 256):
        out = aligner(torch.randn(2, length, 32))
        assert out.shape == (2, length, 32) and torch.isfinite(out).all()


@pytest.mark.parametrize("bad", [torch.randn(2, 5, 31), torch.randn(5, 32), torch.randn(1, 2, 5, 32)])
def test_bad_prior_shape(aligner, bad):
    with pytest.raises(InputError, match=r"\(B, L, 32\)"):
        aligner(bad)


def test_bad_config():
    with pytest.raises(InputError, match="multiple of head_dim"):
        AsukaAligner(dim=40, head_dim=16)
    with pytest.raises(InputError, match="unknown preset"):
        AsukaAligner.from_preset("huge")


def test_full_preset_config():
    cfg = AsukaAligner.from_preset("full", num_blocks=1).config  # one block keeps it light
    assert (cfg.in_dim, cfg.dim, cfg.head_dim, cfg.mlp_ratio, cfg.null_tokens) == (512, 768, 64, 4.0, 1)


def test_deterministic_and_batch_equals_singles(aligner):
    x = torch.randn(3, 9, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = aligner(x), aligner(x)
        singles = torch.cat([aligner(x[i : i + 1]) for i in range(3)])
    assert torch.equal(a, b)
    torch.testing.assert_close(a, singles, atol=1e-5, rtol=1e-5)


def test_null_default_and_expansion(aligner):
    null = aligner.null(3)
    assert null.shape == (3, 1, 32) and not null.any()
    cond = torch.randn(5, 32)
    aligner.set_null_condition(cond)
    assert aligner.config.null_tokens == 5
    assert torch.equal(aligner.null(2)[1], cond)
    longer = aligner.null(2, num_tokens=8)
    assert longer.shape == (2, 8, 32)
    assert torch.equal(longer[0, :5], cond) and torch.equal(longer[0, 5:], cond[-1:].expand(3, -1))
    assert torch.equal(aligner.null(1, num_tokens=3)[0], cond[:3])
    aligner.set_null_condition(cond[None, :2])  # (1, T, dim) accepted
    assert aligner.null(1).shape == (1, 2, 32)


def test_null_bad_input(aligner):
    with pytest.raises(InputError, match=r"\(T, 32\).*\(77, 31\)"):
        aligner.set_null_condition(torch.zeros(77, 31))
    with pytest.raises(InputError, match="NaN"):
        aligner.set_null_condition(torch.full((2, 32), float("nan")))
    with pytest.raises(InputError, match="num_tokens"):
        aligner.null(1, num_tokens=0)


def test_save_load_round_trip(aligner, tmp_path):
    aligner.set_null_condition(torch.randn(77, 32))
    aligner.save_pretrained(tmp_path)
    loaded = AsukaAligner.from_pretrained(tmp_path).eval()
    assert loaded.config.null_tokens == 77
    assert torch.equal(loaded.null_condition, aligner.null_condition)
    x = torch.randn(2, 6, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), aligner(x))


def test_from_release_matches_release_computation(tmp_path):
    sd = release_state_dict()
    torch.save(sd, tmp_path / "asuka_alignment_clip.pt")
    model = AsukaAligner.from_release(tmp_path / "asuka_alignment_clip.pt").eval()
    cfg = model.config
    assert (cfg.in_dim, cfg.dim, cfg.num_blocks, cfg.head_dim, cfg.mlp_ratio) == (24, 32, 2, 16, 4.0)
    assert torch.equal(model.blocks[1].norm_k.weight, sd["2.norm.key_norm.scale"])
    assert not model.null_condition.any()
    x = torch.randn(2, 10, 24, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(model(x), release_forward(sd, x, n=2, head_dim=16), atol=1e-5, rtol=1e-5)


def test_from_release_infers_width_and_blocks():
    model = AsukaAligner.from_release(release_state_dict(in_dim=8, dim=48, n=3, head_dim=8, mlp_hidden=96))
    cfg = model.config
    assert (cfg.in_dim, cfg.dim, cfg.num_blocks, cfg.head_dim, cfg.mlp_ratio) == (8, 48, 3, 8, 2.0)


def test_from_release_rejects_wrong_dicts():
    sd = release_state_dict()
    del sd["2.linear2.bias"]
    with pytest.raises(CheckpointError, match=r"missing keys: 2\.linear2\.bias"):
        AsukaAligner.from_release(sd)
    sd = release_state_dict()
    sd["3.extra"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"unexpected keys: 3\.extra"):
        AsukaAligner.from_release(sd)
    sd = release_state_dict()
    sd["1.norm.key_norm.scale"] = torch.ones(8)
    with pytest.raises(CheckpointError, match=r"1\.norm\.key_norm\.scale: expected \(16,\), found \(8,\)"):
        AsukaAligner.from_release(sd)
    with pytest.raises(CheckpointError, match="linear1"):
        AsukaAligner.from_release({"0.weight": torch.zeros(4, 4), "0.bias": torch.zeros(4)})
    with pytest.raises(CheckpointError, match="file not found"):
        AsukaAligner.from_release("/nonexistent/asuka_alignment_clip.pt")


@pytest.mark.parametrize("edit, message", [
    (lambda sd: sd.pop("2.linear1.weight"), r"missing keys: 2\.linear1\.weight"),
    (lambda sd: sd.pop("1.linear1.weight"), r"missing keys: 1\.linear1\.weight"),  # sizes from block 2
    (lambda sd: [sd.pop(k) for k in [k for k in sd if k.startswith("2.")]], r"missing keys: 2\.linear1\.bias, "
                                                                                r"2\.linear1\.weight"),
    (lambda sd: [sd.pop(f"{i}.norm.query_norm.scale") for i in (1, 2, 3)],
     r"missing key '1\.norm\.query_norm\.scale' \(expected in each of the blocks 1\.\.3"),
    (lambda sd: sd.__setitem__("0.bias", torch.zeros(2, 16)), r"0\.bias: expected \(32,\), found \(2, 16\)"),
    (lambda sd: sd.__setitem__("3.linear2.weight", torch.zeros(32, 150)),
     r"3\.linear2\.weight: expected \(32, 160\), found \(32, 150\)"),
    (lambda sd: sd.__setitem__("4.weight", torch.zeros(32, 32)), r"4\.weight: expected \(32,\), found \(32, 32\)"),
    (lambda sd: sd.__setitem__("0.weight", torch.zeros(32)),
     r"'0\.weight': expected a 2-D tensor, found shape \(32,\)"),
])
def test_from_release_names_each_broken_key_as_in_the_file(edit, message, tmp_path):
    sd = release_state_dict(n=3)
    edit(sd)
    torch.save(sd, tmp_path / "asuka_alignment_t5.pt")
    with pytest.raises(CheckpointError, match=message):
        AsukaAligner.from_release(tmp_path / "asuka_alignment_t5.pt")


def test_from_release_drops_and_reports_the_unused_modulation(tmp_path, caplog):
    """The release saves each block's ``modulation.lin`` (201 M of the t5 aligner's 1.01 B
    parameters) but never runs it: not loaded, not kept, and the log line says how much was dropped."""
    sd = release_state_dict(dim=32, n=2)
    torch.save(sd, tmp_path / "asuka_alignment_t5.pt")
    with caplog.at_level(logging.WARNING, logger="asuka.convert"):
        model = AsukaAligner.from_release(tmp_path / "asuka_alignment_t5.pt")
    assert not [k for k in model.state_dict() if "modulation" in k]
    dropped = sum(v.numel() for k, v in sd.items() if "modulation" in k)
    kept = sum(v.numel() for k, v in sd.items() if "modulation" not in k)
    assert sum(p.numel() for p in model.parameters()) == kept
    (line,) = [r.getMessage() for r in caplog.records if r.name == "asuka.convert"]
    assert f"{{1..2}}.modulation.lin.* (4 keys, {dropped / 1e6:.1f} M parameters)" in line
    assert "never used" in line


def test_zero_blocks_is_linear_alignment():
    # the paper's "linear alignment" ablation: Linear + LayerNorm, no transformer block
    aligner = AsukaAligner(in_dim=8, dim=16, num_blocks=0, head_dim=8)
    assert len(aligner.blocks) == 0
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = torch.nn.functional.layer_norm(aligner.proj_in(x), (16,), aligner.norm_out.weight,
                                                  aligner.norm_out.bias)
        torch.testing.assert_close(aligner(x), expected)
    with pytest.raises(InputError, match="num_blocks"):
        AsukaAligner(in_dim=8, dim=16, num_blocks=-1, head_dim=8)
