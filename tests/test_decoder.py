"""MaskConditionedDecoder: blend semantics, AutoencoderKL transfer, save/load, release converter."""

import copy
import logging

import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from asuka.errors import CheckpointError, InputError
from asuka.models.decoder import MaskConditionedDecoder, condition_channels_for
from release_layout import save_lightning_checkpoint


def tiny_vae(seed=0, use_post_quant_conv=True):
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        use_post_quant_conv=use_post_quant_conv,
    ).eval()
    with torch.no_grad():  # non-trivial norms, so that misplaced norm weights would show
        for name, p in vae.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return vae


@pytest.fixture(scope="module")
def vae():
    return tiny_vae()


@pytest.fixture(scope="module")
def model(vae):
    return MaskConditionedDecoder.from_autoencoder_kl(vae, seed=0).eval()


def inputs(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, 4, 8, 8, generator=g)
    image = torch.rand(b, 3, 16, 16, generator=g) * 2 - 1
    mask = torch.zeros(b, 1, 16, 16)
    mask[0, :, 3:11, 5:14] = 1  # edges off the 2-px grid of the lower level
    mask[1:, :, 9:, :7] = 1
    return z, image, mask


@torch.no_grad()
def test_shapes_and_return_types(model):
    z, image, mask = inputs()
    out = model.decode(z, image, mask)
    assert out.sample.shape == (2, 3, 16, 16) and torch.isfinite(out.sample).all()
    (tup,) = model(z, image, mask, return_dict=False)
    assert torch.equal(tup, out.sample)


def _all_hole_against_vae(model, vae):
    # in float64: the float32 results differ by ~1e-6 because ours makes the mid-block attention's
    # channels_last output contiguous (see test_mid_block_attention_output_is_contiguous)
    model, vae = copy.deepcopy(model).double(), copy.deepcopy(vae).double()
    z, image, _ = inputs()
    z, image = z.double(), image.double()
    ours = model.decode(z, image, torch.ones(2, 1, 16, 16, dtype=torch.float64)).sample
    torch.testing.assert_close(ours, vae.decode(z).sample, rtol=0, atol=1e-12)


@torch.no_grad()
def test_all_hole_mask_equals_autoencoder_kl(model, vae):
    """Everything is hole -> nothing is replaced -> exactly the VAE's decoder (incl. post_quant_conv)."""
    _all_hole_against_vae(model, vae)
    z, image, _ = inputs()
    torch.testing.assert_close(model.decode(z, image, torch.ones(2, 1, 16, 16)).sample, vae.decode(z).sample,
                               rtol=0, atol=1e-5)


@torch.no_grad()
def test_all_hole_without_post_quant_conv():
    vae = tiny_vae(seed=1, use_post_quant_conv=False)
    model = MaskConditionedDecoder.from_autoencoder_kl(vae, seed=0).eval()
    assert model.post_quant_conv is None and not model.config.use_post_quant_conv
    _all_hole_against_vae(model, vae)


@torch.no_grad()
def test_from_flux_style_vae():
    """FLUX's VAE: z=16, no quant convs, scaling 0.3611 and shift 0.1159. The decoder takes what the
    VAE's decode takes (the transformer's latents x as x / 0.3611 + 0.1159), so all-hole = vae.decode."""
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(32, 32), latent_channels=16, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, use_quant_conv=False, use_post_quant_conv=False,
                        scaling_factor=0.3611, shift_factor=0.1159).eval().double()
    model = MaskConditionedDecoder.from_autoencoder_kl(vae, seed=0)
    assert (model.config.latent_channels, model.post_quant_conv) == (16, None)
    x = torch.randn(1, 16, 8, 8, dtype=torch.float64)
    z = x / vae.config.scaling_factor + vae.config.shift_factor
    image, mask = torch.zeros(1, 3, 16, 16, dtype=torch.float64), torch.ones(1, 1, 16, 16, dtype=torch.float64)
    ours = model.decode(z, image, mask)
    torch.testing.assert_close(ours.sample, vae.decode(z).sample, rtol=0, atol=1e-12)


@torch.no_grad()
def test_mid_block_attention_output_is_contiguous(model):
    """diffusers' attention hands back a channels_last tensor; the GroupNorm of the next resnet is
    far less precise on that layout on CPU (4.3e-4 vs 8.5e-6 for the release's decoder at 320 x 384),
    so the decoder makes it contiguous before that resnet."""
    seen = []
    hook = model.decoder.mid_block.resnets[1].register_forward_pre_hook(
        lambda m, args: seen.append(args[0].is_contiguous()))
    try:
        z, image, mask = inputs()
        model.decode(z, image, mask)
    finally:
        hook.remove()
    assert seen == [True]


@torch.no_grad()
def test_no_hole_output_ignores_latents(model):
    """No hole -> every decoder feature is replaced by condition features -> z has no influence."""
    z, image, _ = inputs()
    keep = torch.zeros(2, 1, 16, 16)
    a = model.decode(z, image, keep).sample
    b = model.decode(torch.randn_like(z) * 3, image, keep).sample
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert not torch.allclose(a, model.decode(z, image.flip(-1), keep).sample)


@torch.no_grad()
def test_hole_content_is_ignored(model):
    z, image, mask = inputs()
    other = torch.where(mask.bool(), torch.rand_like(image), image)
    torch.testing.assert_close(model.decode(z, image, mask).sample, model.decode(z, other, mask).sample,
                               rtol=0, atol=0)


@torch.no_grad()
def test_blends_at_every_level(model):
    """Features entering each up block and conv_norm_out equal the condition features outside the
    (area-downsampled, any-hole-pixel) hole and differ inside it. One hole pixel at 16 px marks its
    whole 2x2 cell as hole at 8 px."""
    z, image, _ = inputs(b=1)
    mask = torch.zeros(1, 1, 16, 16)
    mask[0, 0, 4:9, 5:11] = 1
    mask[0, 0, 13, 2] = 1  # a lone pixel: cell (6, 1) at 8 px
    seen = {}
    hooks = [blk.register_forward_pre_hook(lambda m, a, i=i: seen.__setitem__(i, a[0].clone()))
             for i, blk in enumerate(model.decoder.up_blocks)]
    hooks.append(model.decoder.conv_norm_out.register_forward_pre_hook(
        lambda m, a: seen.__setitem__("out", a[0].clone())))
    try:
        model.decode(z, image, mask)
    finally:
        for h in hooks:
            h.remove()
    feats = model.condition_encoder(image * (1 - mask), mask)
    assert [f.shape[1:] for f in feats] == [(32, 16, 16), (64, 16, 16), (64, 8, 8)]
    hole8 = F.max_pool2d(mask, 2).bool()  # area > 0 at 8 px
    assert hole8[0, 0, 6, 1]
    hole16 = mask.bool()
    for h, f, hole in ((seen[0], feats[2], hole8), (seen[1], feats[1], hole16), (seen["out"], feats[0], hole16)):
        keep = ~hole.expand_as(h)
        assert torch.equal(h[keep], f[keep])
        assert (h[~keep] - f[~keep]).abs().amin() > 0  # decoder features kept in the hole
        assert (h[keep] < 0).any()  # the release blends pre-ReLU condition features


@torch.no_grad()
def test_deterministic_and_batch_equals_singles(model):
    z, image, mask = inputs(b=3)
    a = model.decode(z, image, mask).sample
    assert torch.equal(a, model.decode(z, image, mask).sample)
    singles = torch.cat([model.decode(z[i : i + 1], image[i : i + 1], mask[i : i + 1]).sample for i in range(3)])
    torch.testing.assert_close(a, singles, rtol=1e-5, atol=1e-5)


def test_save_load_round_trip(model, tmp_path):
    model.save_pretrained(tmp_path)
    loaded = MaskConditionedDecoder.from_pretrained(tmp_path).eval()
    assert tuple(loaded.config.condition_channels) == (32, 64, 64)
    z, image, mask = inputs()
    with torch.no_grad():
        assert torch.equal(loaded.decode(z, image, mask).sample, model.decode(z, image, mask).sample)


def test_from_autoencoder_kl_transfer(vae):
    a = MaskConditionedDecoder.from_autoencoder_kl(vae, seed=3)
    b = MaskConditionedDecoder.from_autoencoder_kl(vae, seed=3)
    ref = vae.state_dict()
    for k, v in a.state_dict().items():
        if k.startswith(("decoder.", "post_quant_conv.")):
            assert torch.equal(v, ref[k]), k
        else:
            assert k.startswith("condition_encoder.") and torch.equal(v, b.state_dict()[k]), k
    assert {k for k in a.state_dict() if k.startswith("condition_encoder.")} == {
        f"condition_encoder.layers.{i}.{p}" for i in range(3) for p in ("weight", "bias")}
    with pytest.raises(InputError, match="AutoencoderKL"):
        MaskConditionedDecoder.from_autoencoder_kl(vae.decoder)


def test_presets_and_widths():
    tiny = MaskConditionedDecoder.from_preset("tiny")
    assert tuple(tiny.config.block_out_channels) == (32, 64) and tiny.downscale_factor == 2
    assert condition_channels_for((128, 256, 512, 512)) == (128, 256, 512, 512, 512)  # the release's widths
    with pytest.raises(InputError, match="unknown preset"):
        MaskConditionedDecoder.from_preset("xl")
    with pytest.raises(InputError, match=r"expected \(32, 64, 64\)"):
        MaskConditionedDecoder.from_preset("tiny", condition_channels=(32, 32, 32))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda z, i, m: (z[:, :3], i, m), r"z must have 4 channels"),
        (lambda z, i, m: (z, i[..., :15], m), r"image must have shape \(2, 3, 16, 16\)"),
        (lambda z, i, m: (z, i, m.expand(-1, 3, -1, -1)), r"mask must have shape \(2, 1, 16, 16\)"),
        (lambda z, i, m: (z, i, m[:1]), r"mask must have shape \(2, 1, 16, 16\)"),
        (lambda z, i, m: (z, i, m * 255), r"mask values must be in \[0, 1\].*255"),
        (lambda z, i, m: (z[0], i, m), r"z must be a 4-D tensor"),
    ],
)
def test_input_errors(model, change, message):
    with pytest.raises(InputError, match=message):
        model.decode(*change(*inputs()))


def test_gradient_checkpointing_same_result(vae):
    model = MaskConditionedDecoder.from_autoencoder_kl(vae, seed=0)
    z, image, mask = inputs()
    plain = model.decode(z, image, mask).sample
    model.enable_gradient_checkpointing()
    ckpt = model.decode(z, image, mask).sample
    ckpt.square().mean().backward()
    torch.testing.assert_close(plain, ckpt)
    assert model.condition_encoder.layers[0].weight.grad is not None


# ---------------------------------------------------------------- release layout
def release_state_dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, z=4, post_quant_conv=True, seed=0):
    """A Lightning checkpoint in the release's key layout (ldm KL decoder + condition encoder), random values."""
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def conv(name, c_out, c_in, k):
        sd[name + ".weight"] = torch.randn(c_out, c_in, k, k, generator=g) / (c_in * k * k) ** 0.5
        sd[name + ".bias"] = 0.1 * torch.randn(c_out, generator=g)

    def norm(name, c):
        sd[name + ".weight"] = 1 + 0.1 * torch.randn(c, generator=g)
        sd[name + ".bias"] = 0.1 * torch.randn(c, generator=g)

    def resnet(name, c_in, c_out):
        norm(name + ".norm1", c_in), conv(name + ".conv1", c_out, c_in, 3)
        norm(name + ".norm2", c_out), conv(name + ".conv2", c_out, c_out, 3)
        if c_in != c_out:
            conv(name + ".nin_shortcut", c_out, c_in, 1)

    top = ch * ch_mult[-1]
    conv("decoder.conv_in", top, z, 3)
    resnet("decoder.mid.block_1", top, top)
    norm("decoder.mid.attn_1.norm", top)
    for p in ("q", "k", "v", "proj_out"):
        conv(f"decoder.mid.attn_1.{p}", top, top, 1)
    resnet("decoder.mid.block_2", top, top)
    block_in = top
    for i in reversed(range(len(ch_mult))):
        for j in range(num_res_blocks + 1):
            resnet(f"decoder.up.{i}.block.{j}", block_in, ch * ch_mult[i])
            block_in = ch * ch_mult[i]
        if i:
            conv(f"decoder.up.{i}.upsample.conv", block_in, block_in, 3)
    norm("decoder.norm_out", ch)
    conv("decoder.conv_out", 3, ch, 3)
    widths = condition_channels_for([ch * m for m in ch_mult])
    conv("decoder.encoder.layers.0", widths[0], 4, 3)
    conv("decoder.encoder.layers.1", widths[1], widths[0], 3)
    for k in range(2, len(widths)):
        conv(f"decoder.encoder.layers.{k}", widths[k], widths[k - 1], 4)
    conv("decoder.up_layers.0.deconv", 8, 8, 4)  # built by the release, unused: ignored
    conv("encoder.conv_in", ch, 3, 3)  # the VAE encoder: ignored
    if post_quant_conv:
        conv("post_quant_conv", z, z, 1)
    return {"state_dict": sd}


@pytest.mark.parametrize("old_callbacks", [True, False])
def test_from_release_maps_keys(tmp_path, caplog, old_callbacks):
    """A Lightning checkpoint as the release's training wrote it: optimizer states, callbacks (keyed by
    class before Lightning 1.5), loops, an AttributeDict of hyper-parameters -- read safely, ignored, said."""
    ckpt = release_state_dict()
    sd = ckpt["state_dict"]
    save_lightning_checkpoint(tmp_path / "asuka_decoder.ckpt", sd, old_callbacks=old_callbacks)
    with caplog.at_level(logging.WARNING, logger="asuka.convert"):
        model = MaskConditionedDecoder.from_release(tmp_path / "asuka_decoder.ckpt")
    (line,) = [r.getMessage() for r in caplog.records if r.name == "asuka.convert"]
    for said in ("decoder.up_layers.* (2 keys)", "never run", "encoder.* (2 keys)", "optimizer_states",
                 "callbacks", "loops", "hyper_parameters"):
        assert said in line, (said, line)
    cfg = model.config
    assert (cfg.latent_channels, tuple(cfg.block_out_channels), cfg.layers_per_block, cfg.use_post_quant_conv) == (
        4, (32, 64), 1, True)
    dec = model.decoder
    pairs = [
        (dec.up_blocks[0].resnets[1].conv2.weight, sd["decoder.up.1.block.1.conv2.weight"]),  # lowest level first
        (dec.up_blocks[0].upsamplers[0].conv.bias, sd["decoder.up.1.upsample.conv.bias"]),
        (dec.up_blocks[1].resnets[0].conv_shortcut.weight, sd["decoder.up.0.block.0.nin_shortcut.weight"]),
        (dec.mid_block.attentions[0].to_k.weight, sd["decoder.mid.attn_1.k.weight"][:, :, 0, 0]),
        (dec.mid_block.attentions[0].to_out[0].weight, sd["decoder.mid.attn_1.proj_out.weight"][:, :, 0, 0]),
        (dec.mid_block.attentions[0].group_norm.bias, sd["decoder.mid.attn_1.norm.bias"]),
        (dec.mid_block.resnets[1].norm1.weight, sd["decoder.mid.block_2.norm1.weight"]),
        (dec.conv_norm_out.weight, sd["decoder.norm_out.weight"]),
        (model.condition_encoder.layers[2].weight, sd["decoder.encoder.layers.2.weight"]),
        (model.post_quant_conv.weight, sd["post_quant_conv.weight"]),
    ]
    for ours, theirs in pairs:
        assert torch.equal(ours, theirs)
    z, image, mask = inputs()
    with torch.no_grad():
        assert torch.isfinite(model.decode(z, image, mask).sample).all()


def test_from_release_infers_flux_latents():
    model = MaskConditionedDecoder.from_release(release_state_dict(z=16, post_quant_conv=False, num_res_blocks=2))
    assert model.config.latent_channels == 16 and model.post_quant_conv is None
    assert model.config.layers_per_block == 2
    with pytest.raises(CheckpointError, match="latent_channels=4 was requested.*16"):
        MaskConditionedDecoder.from_release(release_state_dict(z=16, post_quant_conv=False), latent_channels=4)


@pytest.mark.parametrize(
    "edit, message",
    [  # every key named as the file spells it (not by our diffusers names)
        (lambda sd: sd.pop("decoder.up.0.block.1.conv2.bias"), r"missing keys: decoder\.up\.0\.block\.1\.conv2\.bias"),
        (lambda sd: sd.pop("decoder.up.1.block.0.conv1.weight"),
         r"missing keys: decoder\.up\.1\.block\.0\.conv1\.weight"),
        (lambda sd: sd.pop("decoder.up.1.upsample.conv.bias"), r"missing keys: decoder\.up\.1\.upsample\.conv\.bias"),
        (lambda sd: sd.pop("decoder.encoder.layers.1.weight"), r"missing keys: decoder\.encoder\.layers\.1\.weight"),
        (lambda sd: sd.pop("decoder.mid.attn_1.norm.weight"), r"missing keys: decoder\.mid\.attn_1\.norm\.weight"),
        (lambda sd: sd.__setitem__("model.diffusion.x", torch.zeros(1)), r"unexpected keys.*model\.diffusion\.x"),
        (lambda sd: sd.__setitem__("decoder.up.0.attn.0.q.weight", torch.zeros(1)),
         r"unexpected keys: decoder\.up\.0\.attn\.0\.q\.weight"),
        (lambda sd: sd.__setitem__("decoder.encoder.layers.0.weight", torch.zeros(32, 3, 3, 3)),
         r"decoder\.encoder\.layers\.0\.weight: expected \(32, 4, 3, 3\), found \(32, 3, 3, 3\)"),
        (lambda sd: sd.__setitem__("decoder.mid.attn_1.q.weight", torch.zeros(64, 64)),
         r"decoder\.mid\.attn_1\.q\.weight: expected \(64, 64, 1, 1\), found \(64, 64\)"),
        (lambda sd: sd.__setitem__("decoder.up.1.block.0.norm1.bias", torch.zeros(63)),
         r"decoder\.up\.1\.block\.0\.norm1\.bias: expected \(64,\), found \(63,\)"),
        (lambda sd: sd.pop("decoder.conv_in.weight"), r"decoder\.conv_in\.weight"),
    ],
)
def test_from_release_rejects_wrong_dicts(edit, message, tmp_path):
    ckpt = release_state_dict()
    edit(ckpt["state_dict"])
    save_lightning_checkpoint(tmp_path / "asuka_decoder.ckpt", ckpt["state_dict"])
    with pytest.raises(CheckpointError, match=message):
        MaskConditionedDecoder.from_release(tmp_path / "asuka_decoder.ckpt")


def test_from_release_refuses_unknown_pickled_types(tmp_path):
    """Anything outside the allow-list is never unpickled: the error names the type and what to do."""
    save_lightning_checkpoint(tmp_path / "asuka_decoder.ckpt", release_state_dict()["state_dict"],
                              extra={"datamodule": torch.optim.lr_scheduler.StepLR})
    with pytest.raises(CheckpointError, match=r"torch\.optim\.lr_scheduler\.StepLR.*weights_only=False.*"
                                              r"torch\.save\(\{'state_dict': c\['state_dict'\]\}"):
        MaskConditionedDecoder.from_release(tmp_path / "asuka_decoder.ckpt")


@pytest.mark.slow
def test_full_size_release_layout_converts():
    """The release's real trunk (ch 128, mult 1,2,4,4, 2 res blocks) for SD (z=4) and FLUX (z=16)."""
    for z, pqc in ((4, True), (16, False)):
        model = MaskConditionedDecoder.from_release(
            release_state_dict(ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2, z=z, post_quant_conv=pqc)).eval()
        assert tuple(model.config.condition_channels) == (128, 256, 512, 512, 512)
        preset = MaskConditionedDecoder.from_preset("full" if z == 4 else "flux")
        shapes = {k: v.shape for k, v in preset.state_dict().items()}
        assert {k: v.shape for k, v in model.state_dict().items()} == shapes
        mask = torch.zeros(1, 1, 64, 64)
        mask[..., 10:40, 20:50] = 1
        with torch.no_grad():
            out = model.decode(torch.randn(1, z, 8, 8), torch.rand(1, 3, 64, 64) * 2 - 1, mask).sample
        assert out.shape == (1, 3, 64, 64) and torch.isfinite(out).all()
