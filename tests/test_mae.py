"""Tiny-model tests of the MAE prior (asuka.models.mae)."""

import logging

import numpy as np
import pytest
import torch

from asuka.errors import CheckpointError, InputError
from asuka.models.mae import MAEPrior, resize_area, resize_nearest
from release_layout import save_mae_script_checkpoint

S, P, G = 32, 8, 4  # tiny preset: image size, patch, tokens per side


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = MAEPrior.from_preset("tiny").eval()
    with torch.no_grad():  # alpha 1 (the init) would hide the partial-token path
        m.alpha.fill_(0.4)
    return m


def _image(b=2, h=S, w=S, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g) * 2 - 1


def _mask(b=2, h=S, w=S):
    """Sample 0: hole covering token (0,0) fully and half of token (0,1) -> one partial token.
    Other samples: no hole."""
    m = torch.zeros(b, 1, h, w)
    m[0, :, : h // G, : (h // G) * 3 // 2] = 1
    return m


def test_shapes_and_dtypes(model):
    image, mask = _image(), _mask()
    x, m = model.prepare(image, mask)
    assert x.shape == (2, 3, S, S) and m.shape == (2, 1, S, S) and x.dtype == m.dtype == torch.float32
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    with torch.no_grad():
        prior = model.prior(image, mask)
        rec = model.reconstruct(image, mask)
        out = model(image, mask, generator=torch.Generator().manual_seed(0))
    assert prior.shape == (2, G * G, 32) and prior.dtype == torch.float32
    assert rec.shape == (2, 3, S, S) and rec.min() >= -1 and rec.max() <= 1
    assert out.pred.shape == (2, G * G, P * P * 3) and out.token_mask.shape == (2, G * G)
    assert out.pixel_mask.shape == (2, 1, S, S) and out.loss.ndim == 0


def test_any_input_size_is_resized(model):
    with torch.no_grad():
        prior = model.prior(_image(3, 50, 70), torch.zeros(3, 1, 50, 70))
    assert prior.shape == (3, G * G, 32) and torch.isfinite(prior).all()


def test_deterministic(model):
    image, mask = _image(), _mask()
    with torch.no_grad():
        assert torch.equal(model.prior(image, mask), model.prior(image, mask))
        a = model(image, mask, generator=torch.Generator().manual_seed(3))
        b = model(image, mask, generator=torch.Generator().manual_seed(3))
        c = model(image, mask, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.pred, b.pred) and torch.equal(a.token_mask, b.token_mask)
    assert not torch.equal(a.token_mask, c.token_mask)


def test_batch_equals_singles(model):
    image, mask = _image(3), _mask(3)
    mask[2] = 1  # an all-hole sample must not disturb the others
    with torch.no_grad():
        batch = model.prior(image, mask)
        singles = torch.cat([model.prior(image[i : i + 1], mask[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batch, singles, atol=1e-5, rtol=1e-5)


def test_all_hole_is_finite_and_is_the_nothing_known_prior(model):
    image, hole = _image(2), torch.ones(2, 1, S, S)
    with torch.no_grad():
        prior = model.prior(image, hole)
        rec = model.reconstruct(image, hole)
        out = model(image, hole, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(prior).all() and torch.isfinite(rec).all() and torch.isfinite(out.loss)
    # nothing is known, so the image content cannot matter
    torch.testing.assert_close(prior[0], prior[1])
    assert out.token_mask.sum() == 2 * G * G


def test_no_hole_uses_the_whole_image(model):
    image, none = _image(2), torch.zeros(2, 1, S, S)
    with torch.no_grad():
        prior = model.prior(image, none)
        out = model(image, none, generator=torch.Generator().manual_seed(0), mask_ratio=0.75)
    assert torch.isfinite(prior).all() and not torch.allclose(prior[0], prior[1])
    assert (out.token_mask.sum(1) == 12).all()  # 16 - int(16 * 0.25)


def test_hole_pixels_never_reach_the_prior(model):
    image, mask = _image(1), _mask(1)
    other = torch.where(mask.bool(), -image, image)  # different content inside the hole only
    with torch.no_grad():
        torch.testing.assert_close(model.prior(image, mask), model.prior(other, mask), atol=0, rtol=0)
        # prepared level: a fully masked token's pixels are no attention key either
        x, m = model.prepare(image, mask)
        y = x.clone()
        y[..., :P, :P] = 5.0  # token (0,0) lies fully in the hole
        torch.testing.assert_close(model.prior_features(x, m), model.prior_features(y, m), atol=0, rtol=0)


def test_partial_tokens_mix_through_alpha(model):
    image, mask = _image(1), _mask(1)
    full_only = torch.zeros_like(mask)
    full_only[..., :P, :P] = 1  # whole tokens only: no partial token
    with torch.no_grad():
        base, base_full = model.prior(image, mask), model.prior(image, full_only)
        model.alpha.fill_(1.0)
        try:
            one, one_full = model.prior(image, mask), model.prior(image, full_only)
        finally:
            model.alpha.fill_(0.4)
    assert (base - one).abs().max() > 1e-3  # the partial token's known pixels enter via alpha
    torch.testing.assert_close(base_full, one_full, atol=0, rtol=0)


def test_training_masks_hole_tokens_and_at_least_the_ratio():
    torch.manual_seed(0)
    model = MAEPrior.from_preset("tiny")
    image = _image(4)
    mask = torch.zeros(4, 1, S, S)
    mask[0, :, 3:10, 3:20] = 1  # 6 hole tokens
    mask[1, :, :, : S - 2] = 1  # every token has a hole pixel: more than the ratio
    mask[2, :, 20:21, 20:21] = 1  # a single pixel
    out = model(image, mask, generator=torch.Generator().manual_seed(0), mask_ratio=0.5)
    assert torch.isfinite(out.loss)
    hole_tokens = torch.nn.functional.avg_pool2d(model.prepare(image, mask)[1], P).flatten(1) > 0
    assert (out.token_mask[hole_tokens] == 1).all()
    assert (out.token_mask.sum(1) >= 8).all() and out.token_mask[1].sum() == 16
    assert out.token_mask[3].sum() == 8  # no hole: exactly L - int(L * (1 - ratio))
    # the loss looks at the hole pixels and at whole random-masked tokens, nowhere else
    x, m = model.prepare(image, mask)
    assert (out.pixel_mask >= m).all()
    assert torch.equal(
        torch.nn.functional.avg_pool2d(out.pixel_mask, P).flatten(1) > 0, out.token_mask.bool()
    )
    out.loss.backward()
    assert model.alpha.grad is not None and model.patch_embed.proj.weight.grad.abs().sum() > 0


def test_a_few_steps_lower_the_loss():
    torch.manual_seed(0)
    model = MAEPrior.from_preset("tiny")
    image, mask = _image(2), _mask(2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        out = model(image, mask, generator=torch.Generator().manual_seed(0))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_patchify_roundtrip_and_layout(model):
    x = torch.randn(2, 3, S, S)
    patches = model.patchify(x)
    assert patches.shape == (2, G * G, P * P * 3)
    assert torch.equal(model.unpatchify(patches), x)
    # token 1 is row 0, column 1; inside a patch: (row, column, channel)
    assert torch.equal(patches[0, 1].view(P, P, 3), x[0, :, :P, P : 2 * P].permute(1, 2, 0))


def test_reconstruct_paste_known(model):
    image, mask = _image(1), _mask(1)
    with torch.no_grad():
        rec = model.reconstruct(image, mask, paste_known=True)
        x, m = model.prepare(image, mask)
    known = model.to_pixels(x)
    assert torch.allclose(rec[m.expand_as(rec) == 0], known[m.expand_as(rec) == 0])


def test_prepare_matches_opencv_on_uint8():
    cv2 = pytest.importorskip("cv2")
    model = MAEPrior.from_preset("tiny")
    rng = np.random.default_rng(0)
    for h, w in [(64, 64), (96, 80), (32, 32)]:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        hole = (rng.random((h, w)) > 0.6).astype(np.float32)
        # the release's preprocessing, written out
        ref = cv2.resize(img, (S, S), interpolation=cv2.INTER_AREA) / 255.0
        ref = (ref - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
        ref_mask = cv2.resize(hole, (S, S), interpolation=cv2.INTER_NEAREST)
        ref = torch.from_numpy(ref.transpose(2, 0, 1) * (ref_mask < 0.5)).float()
        x, m = model.prepare(
            torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1, torch.from_numpy(hole)[None, None]
        )
        assert torch.equal(m[0, 0], torch.from_numpy(ref_mask))
        torch.testing.assert_close(x[0], ref, atol=1e-5, rtol=0)


def test_resizers_match_opencv_in_float():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(1)
    for h, w in [(70, 45), (20, 30), (64, 16)]:  # shrink, enlarge, mixed
        a = rng.random((h, w)).astype(np.float32)
        t = torch.from_numpy(a)[None, None]
        np.testing.assert_allclose(resize_area(t, 32)[0, 0].numpy(), cv2.resize(a, (32, 32), interpolation=cv2.INTER_AREA), atol=1e-6)
        np.testing.assert_array_equal(resize_nearest(t, 32)[0, 0].numpy(), cv2.resize(a, (32, 32), interpolation=cv2.INTER_NEAREST))


def test_save_load_roundtrip(model, tmp_path):
    model.save_pretrained(tmp_path / "mae")
    loaded = MAEPrior.from_pretrained(tmp_path / "mae").eval()
    assert {k: v for k, v in loaded.config.items() if not k.startswith("_")} == {
        k: v for k, v in model.config.items() if not k.startswith("_")
    }
    image, mask = _image(), _mask()
    with torch.no_grad():
        assert torch.equal(model.prior(image, mask), loaded.prior(image, mask))


# ------------------------------------------------------------------ release converter
def _release_pos_embed(dim, grid):
    """Independent rewrite of the release's 2-D sin-cos table (columns first, then rows)."""
    omega = 1.0 / 10000 ** (np.arange(dim // 4) / (dim / 4))
    rows, cols = np.divmod(np.arange(grid * grid), grid)
    parts = [f(np.outer(c, omega)) for c in (cols, rows) for f in (np.sin, np.cos)]
    return torch.from_numpy(np.concatenate(parts, axis=1)).float()[None]


def _release_state_dict(embed=32, depth=2, dec=32, dec_depth=2, patch=8, grid=4, seed=0):
    """A state dict in the release's layout (MaskedAutoencoderViTFinetune), random values."""
    g = torch.Generator().manual_seed(seed)
    shapes = {
        "pos_embed": None, "decoder_pos_embed": None, "mask_token": (1, 1, dec), "alpha": (),
        "patch_embed.proj.weight": (embed, 3, patch, patch), "patch_embed.proj.bias": (embed,),
        "norm.weight": (embed,), "norm.bias": (embed,),
        "decoder_embed.weight": (dec, embed), "decoder_embed.bias": (dec,),
        "decoder_norm.weight": (dec,), "decoder_norm.bias": (dec,),
        "decoder_pred.weight": (patch * patch * 3, dec), "decoder_pred.bias": (patch * patch * 3,),
        "decoder_patch_embed.proj.weight": (dec, 4, patch, patch), "decoder_patch_embed.proj.bias": (dec,),
    }
    for prefix, d, n in (("blocks", embed, depth), ("decoder_blocks", dec, dec_depth)):
        for i in range(n):
            for name, shape in {
                "norm1.weight": (d,), "norm1.bias": (d,), "attn.qkv.weight": (3 * d, d), "attn.qkv.bias": (3 * d,),
                "attn.proj.weight": (d, d), "attn.proj.bias": (d,), "norm2.weight": (d,), "norm2.bias": (d,),
                "mlp.fc1.weight": (4 * d, d), "mlp.fc1.bias": (4 * d,), "mlp.fc2.weight": (d, 4 * d), "mlp.fc2.bias": (d,),
            }.items():
                shapes[f"{prefix}.{i}.{name}"] = shape
    sd = {k: torch.randn(s, generator=g) * 0.1 for k, s in shapes.items() if s is not None}
    sd["pos_embed"] = _release_pos_embed(embed, grid)
    sd["decoder_pos_embed"] = _release_pos_embed(dec, grid)
    return sd


def test_from_release_loads_every_tensor(tmp_path, caplog):
    """``mae_300.pth`` as MAE's training script writes it (optimizer, epoch, scaler, an argparse
    ``args``): read safely, everything but the weights ignored, and said so."""
    sd = _release_state_dict()
    save_mae_script_checkpoint(tmp_path / "mae_300.pth", sd)
    with caplog.at_level(logging.WARNING, logger="asuka.convert"):
        model = MAEPrior.from_release(tmp_path / "mae_300.pth", num_heads=2, decoder_num_heads=2, prior_layers=1)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "asuka.convert"]
    assert "training state: args, epoch, optimizer, scaler" in line
    assert model.config.image_size == S and model.config.patch_size == P and model.config.depth == 2
    ours = model.state_dict()
    for key, value in sd.items():
        if key.endswith("pos_embed"):
            torch.testing.assert_close(getattr(model, key), value, atol=1e-6, rtol=0)
        else:
            assert torch.equal(ours[key], value), key
    with torch.no_grad():
        assert torch.isfinite(model.prior(_image(), _mask())).all()


def test_from_release_refuses_unknown_head_counts(tmp_path):
    """Heads are not in the weights: a small MAE without them would load and give another prior."""
    sd = _release_state_dict(embed=32, dec=32)
    with pytest.raises(CheckpointError, match=r"head counts cannot be read.*encoder 32 x 2.*num_heads=\.\.\. and "
                                              r"decoder_num_heads=\.\.\."):
        MAEPrior.from_release(sd)
    with pytest.raises(CheckpointError, match=r"pass decoder_num_heads=\.\.\. \("):
        MAEPrior.from_release(sd, num_heads=2)
    # given: loads, and the heads are what was given (4 vs 2 heads differ on the same weights)
    a = MAEPrior.from_release(sd, num_heads=2, decoder_num_heads=2, prior_layers=1).eval()
    b = MAEPrior.from_release(sd, num_heads=4, decoder_num_heads=4, prior_layers=1).eval()
    assert (a.config.num_heads, b.config.decoder_num_heads) == (2, 4)
    with torch.no_grad():
        assert not torch.allclose(a.prior(_image(), _mask()), b.prior(_image(), _mask()))


def _meta_release_state_dict(embed, depth, dec, dec_depth, patch):
    """The keys the converter reads sizes from, at a given size, as meta tensors (no memory)."""
    meta = lambda *shape: torch.empty(shape, device="meta")  # noqa: E731
    sd = {"patch_embed.proj.weight": meta(embed, 3, patch, patch), "decoder_embed.weight": meta(dec, embed),
          "pos_embed": meta(1, (256 // patch) ** 2, embed)}
    sd.update({f"blocks.{i}.mlp.fc1.weight": meta(4 * embed, embed) for i in range(depth)})
    sd.update({f"decoder_blocks.{i}.mlp.fc1.weight": meta(4 * dec, dec) for i in range(dec_depth)})
    return sd


@pytest.mark.parametrize("arch, heads", [((768, 12, 512, 8, 16), (12, 16)),  # ViT-B/16: the release
                                         ((1024, 24, 512, 8, 16), (16, 16)),
                                         ((1280, 32, 512, 8, 14), (16, 16))])
def test_from_release_knows_the_mae_architectures(arch, heads):
    from asuka.models.mae import _KNOWN_HEADS, _architecture, _infer_release_config

    sd = _meta_release_state_dict(*arch)
    cfg = _infer_release_config(sd, "test")
    assert _KNOWN_HEADS[_architecture(cfg)] == heads
    assert (cfg["image_size"], cfg["mlp_ratio"], cfg["prior_layers"]) == (256 // arch[-1] * arch[-1], 4.0, 6)


def test_from_release_rejects_wrong_state_dicts():
    sd = _release_state_dict()
    heads = dict(num_heads=2, decoder_num_heads=2)
    missing = {k: v for k, v in sd.items() if k != "blocks.1.mlp.fc2.bias"}
    with pytest.raises(CheckpointError, match=r"missing keys: blocks\.1\.mlp\.fc2\.bias"):
        MAEPrior.from_release(missing, **heads)
    with pytest.raises(CheckpointError, match=r"unexpected keys: extra\.weight"):
        MAEPrior.from_release({**sd, "extra.weight": torch.zeros(1)}, **heads)
    bad = dict(sd, **{"decoder_pred.bias": torch.zeros(5)})
    with pytest.raises(CheckpointError, match=r"decoder_pred\.bias: expected \(192,\), found \(5,\)"):
        MAEPrior.from_release(bad, **heads)
    with pytest.raises(CheckpointError, match=r"alpha: expected \(\) or \(1,\), found \(3,\)"):
        MAEPrior.from_release(dict(sd, alpha=torch.ones(3)), **heads)
    assert MAEPrior.from_release(dict(sd, alpha=torch.full((1,), 0.3)), **heads).alpha.item() == pytest.approx(0.3)
    with pytest.raises(CheckpointError, match="decoder_pos_embed"):
        MAEPrior.from_release(dict(sd, decoder_pos_embed=sd["decoder_pos_embed"] + 1), **heads)
    with pytest.raises(CheckpointError, match="not found"):
        MAEPrior.from_release("/nonexistent/mae_300.pth")


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "image, mask, match",
    [
        (torch.zeros(1, 3, S, S), torch.zeros(1, S, S), "mask"),
        (torch.zeros(1, 1, S, S), torch.zeros(1, 1, S, S), "image"),
        (torch.zeros(1, 3, S, S), torch.zeros(2, 1, S, S), "batch and size"),
        (torch.full((1, 3, S, S), 2.0), torch.zeros(1, 1, S, S), r"\[-1, 1\]"),
        (torch.zeros(1, 3, S, S, dtype=torch.uint8), torch.zeros(1, 1, S, S), "float"),
    ],
)
def test_bad_inputs_raise_input_error(model, image, mask, match):
    with pytest.raises(InputError, match=match):
        model.prior(image, mask)


def test_bad_config_and_preset():
    with pytest.raises(InputError, match="preset"):
        MAEPrior.from_preset("huge")
    with pytest.raises(InputError, match="prior_layers"):
        MAEPrior.from_preset("tiny", prior_layers=5)
    with pytest.raises(InputError, match="unknown config"):
        MAEPrior.from_preset("tiny", width=3)
