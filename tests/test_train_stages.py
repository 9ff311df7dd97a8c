"""Every training stage lowers its loss on tiny models; the substitution schedule; exports."""

import json
import numpy as np
import pytest
import torch
from PIL import Image

from asuka.errors import InputError
from asuka.training import get_stage, load_config, train
from asuka.training.checkpoint import latest_checkpoint, read_checkpoint
from asuka.training.data import build_dataset
from asuka.training.logs import read_metrics
from asuka.training.stages.align import SubstitutionConfig

TINY_UNET = ["unet.block_out_channels=[32, 64]", "unet.down_block_types=[DownBlock2D, CrossAttnDownBlock2D]",
             "unet.up_block_types=[CrossAttnUpBlock2D, UpBlock2D]", "unet.layers_per_block=1",
             "unet.cross_attention_dim=32"]
STAGE_ARGS = {
    "mae": ["model=tiny"],
    "align": ["mae=tiny", "aligner=tiny", "backbone.preset=tiny", "substitution.decay_steps=5"],
    "decoder": ["backbone.preset=tiny", "loss.perceptual=off"],
    "vae": ["vae.block_out_channels=[32, 64]", "vae.scale_samples=4", "loss.perceptual=off"],
    "unet": ["backbone.preset=tiny", *TINY_UNET],
}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Four smooth 'photos' of different sizes (smooth, so the autoencoders can fit them)."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(40, 48), (36, 36), (48, 40), (44, 52)]):
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        c = rng.random((3, 3))
        arr = np.stack([c[k, 0] + c[k, 1] * xx + c[k, 2] * yy for k in range(3)], -1)
        Image.fromarray((arr / arr.max() * 255).astype(np.uint8)).save(root / f"p{i}.png")
    return root


def tiny_config(stage: str, out, root, *extra: str):
    args = [f"output_dir={out}", f"data.root={root}", "data.resolution=32", "data.num_workers=0",
            "batch_size=4", "log_every=1", "checkpoint_every=1000", "optim.lr=1e-3",
            "optim.schedule=constant", "optim.warmup_steps=0", *STAGE_ARGS[stage], *extra]
    return load_config(get_stage(stage).config_class, [], args, stage=stage)


def fixed_batch_loss(stage, batch) -> float:
    with torch.no_grad():
        return float(stage.loss(batch, 10_000, generator=torch.Generator().manual_seed(123)).loss)


@pytest.mark.parametrize("name, steps, lr, factor", [
    ("mae", 30, 1e-3, 0.8), ("align", 25, 3e-2, 0.997), ("decoder", 25, 3e-3, 0.8), ("vae", 25, 1e-3, 0.8),
    ("unet", 20, 1e-3, 0.8)])
def test_stage_lowers_its_loss(name, steps, lr, factor, images, tmp_path):
    """The loss of a fixed batch (fixed noise, masks, timesteps) drops after a few dozen steps.

    The aligner only steers a frozen *random* UNet through its cross-attention: on this batch
    the whole range the condition can reach is about 1.165 (zero condition) to 1.150 (10x the
    untrained aligner's), so a 0.3% gain is most of what is reachable; hence its own threshold.
    """
    stage_cls = get_stage(name)
    cfg = tiny_config(name, tmp_path / name, images, f"max_steps={steps}", f"optim.lr={lr}")
    probe = stage_cls(cfg, device=torch.device("cpu"), weight_dtype=torch.float32)
    probe.build()
    data = build_dataset(cfg, transform=probe.dataset_transform())
    batch = torch.utils.data.default_collate([data[(i, 99)] for i in range(4)])
    before = fixed_batch_loss(probe, batch)

    result = train(stage_cls, cfg)
    assert result.step == steps and result.exported
    state = read_checkpoint(latest_checkpoint(result.run_dir))
    for key, module in probe.models.items():
        module.load_state_dict(state["models"][key])
    after = fixed_batch_loss(probe, batch)
    assert after < factor * before, (before, after)
    rows = read_metrics(result.run_dir)
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
    assert all(np.isfinite(r["loss"]) and r["samples_per_s"] > 0 for r in rows)
    assert (result.run_dir / "config.yaml").is_file() and any((result.run_dir / "tensorboard").iterdir())


def test_mae_starts_from_our_folder_or_the_release_layout(images, tmp_path):
    """``model`` may be a preset (random init), a save_pretrained folder or a release ``.pth``."""
    from asuka.models.mae import MAEPrior

    torch.manual_seed(0)
    start = MAEPrior.from_preset("tiny")
    start.save_pretrained(tmp_path / "ours")
    torch.save({"model": start.state_dict()}, tmp_path / "mae_300.pth")  # the release's layout
    heads = {tmp_path / "ours": [], tmp_path / "mae_300.pth": [  # not in a release file's weights
        "model_config={num_heads: 2, decoder_num_heads: 2, prior_layers: 1}"]}
    for source in (tmp_path / "ours", tmp_path / "mae_300.pth"):
        cfg = tiny_config("mae", tmp_path / source.stem, images, f"model={source}", "max_steps=1", *heads[source])
        stage = get_stage("mae")(cfg, device=torch.device("cpu"), weight_dtype=torch.float32)
        stage.build()
        assert all(torch.equal(a, b) for a, b in zip(stage.models["mae"].state_dict().values(),
                                                      start.state_dict().values()))
        assert train(get_stage("mae"), cfg).step == 1
    cfg = tiny_config("mae", tmp_path / "x", images, f"model={tmp_path / 'ours'}", "model_config={depth: 1}")
    with pytest.raises(InputError, match=r"config fields \['depth'\] only apply to a preset.*or a release file"):
        get_stage("mae")(cfg, device=torch.device("cpu"), weight_dtype=torch.float32).build()


def test_substitution_schedule():
    s = SubstitutionConfig()  # the paper's: 1.0 -> 0.1 over 2,000 steps, then fixed
    assert s.p(0) == 1.0 and s.p(1000) == pytest.approx(0.55) and s.p(1999) == pytest.approx(0.10045)
    assert s.p(2000) == s.p(10**6) == pytest.approx(0.1)
    other = SubstitutionConfig(p_start=0.5, p_end=0.0, decay_steps=10)
    assert [round(other.p(k), 3) for k in (0, 5, 10, 11)] == [0.5, 0.25, 0.0, 0.0]
    assert SubstitutionConfig(decay_steps=0).p(0) == pytest.approx(0.1)


def test_align_timestep_range(images, tmp_path):
    """``timestep_range`` bounds the align stage's timesteps as the UNet stage's (the shared
    :class:`DenoisingConfig`); by default every timestep; a range past the schedule fails at
    build, and a flux backbone refuses it."""
    stage_cls = get_stage("align")
    default = stage_cls(tiny_config("align", tmp_path / "d", images), device=torch.device("cpu"),
                        weight_dtype=torch.float32)
    default.build()
    assert default.timestep_bounds() == (0, default.scheduler.config.num_train_timesteps - 1)
    cfg = tiny_config("align", tmp_path / "a", images, "timestep_range=[999, 999]", "max_steps=1")
    stage = stage_cls(cfg, device=torch.device("cpu"), weight_dtype=torch.float32)
    stage.build()
    drawn = []
    real_add = stage.scheduler.add_noise
    stage.scheduler.add_noise = lambda x, n, t: drawn.append(t) or real_add(x, n, t)
    batch = torch.utils.data.default_collate(
        [build_dataset(cfg, transform=stage.dataset_transform())[(i, 0)] for i in range(4)])
    stage.loss(batch, 0, generator=torch.Generator().manual_seed(0))
    assert drawn[-1].tolist() == [999] * 4
    with pytest.raises(InputError, match="0-999"):
        stage_cls(tiny_config("align", tmp_path / "b", images, "timestep_range=[0, 1000]"),
                  device=torch.device("cpu"), weight_dtype=torch.float32).build()
    with pytest.raises(InputError, match="only for an sd15 backbone"):
        tiny_config("align", tmp_path / "c", images, "timestep_range=[999, 999]", "backbone.kind=flux").validate()


def test_align_substitutes_the_unmasked_prior(images, tmp_path):
    """With probability p the MAE sees an all-zero mask (the prior of the unmasked image)."""
    stage_cls = get_stage("align")
    cfg = tiny_config("align", tmp_path, images, "substitution.p_start=1.0", "substitution.p_end=0.0",
                      "substitution.decay_steps=100", "masks.kind=rect")
    stage = stage_cls(cfg, device=torch.device("cpu"), weight_dtype=torch.float32)
    stage.build()
    seen = []
    original = stage.mae.prior
    stage.mae.prior = lambda image, mask: seen.append(mask.flatten(1).amax(1)) or original(image, mask)
    batch = torch.utils.data.default_collate(
        [build_dataset(cfg, transform=stage.dataset_transform())[(i, 0)] for i in range(4)] * 16)
    g = torch.Generator().manual_seed(0)
    _, logs = stage.condition(batch, 0, g)  # p = 1: every prior from the unmasked image
    assert logs["p"] == 1.0 and float(logs["substituted"]) == 1.0 and seen[-1].max() == 0
    _, logs = stage.condition(batch, 100, g)  # p = 0: every prior from the masked image
    assert float(logs["substituted"]) == 0.0 and seen[-1].min() == 1
    _, logs = stage.condition(batch, 50, g)  # p = 0.5: about half
    assert logs["p"] == pytest.approx(0.5) and 0.3 < float(logs["substituted"]) < 0.7
    assert torch.equal((seen[-1] == 0).float().mean(), logs["substituted"])


@pytest.mark.slow
@pytest.mark.parametrize("name, resolution, args", [
    ("mae", 256, ["model=full"]),
    ("align", 512, ["mae=full", "aligner=full", "backbone.preset=sd15", "gradient_checkpointing=true"]),
    ("decoder", 256, ["backbone.preset=sd15", "loss.gan_start=0", "loss.perceptual=off"]),
])
def test_full_size_step(name, resolution, args, tmp_path):
    """One optimizer step of each ASUKA stage at the paper's sizes (random weights; minutes on a CPU)."""
    root = tmp_path / "img"
    root.mkdir()
    Image.fromarray(np.zeros((resolution, resolution + 16, 3), np.uint8)).save(root / "a.png")
    cfg = load_config(get_stage(name).config_class, [], [
        f"output_dir={tmp_path / 'run'}", f"data.root={root}", f"data.resolution={resolution}",
        "data.num_workers=0", "batch_size=1", "max_steps=1", *args], stage=name)
    result = train(get_stage(name), cfg)
    assert result.step == 1 and result.exported


def test_unet_schedule_and_init(images, tmp_path, monkeypatch):
    """``schedule`` re-parameterises the noise schedule (v-prediction, zero terminal SNR, trailing
    timesteps): the loss targets the velocity, the export carries the schedule to the pipeline's
    DDIM, and a UNet continued from ``unet.init`` is exported with this run's sample size."""
    from diffusers import UNet2DConditionModel

    stage_cls = get_stage("unet")
    schedule = ["schedule.prediction_type=v_prediction", "schedule.rescale_betas_zero_snr=true",
                "schedule.timestep_spacing=trailing"]
    first = train(stage_cls, tiny_config("unet", tmp_path / "a", images, "max_steps=1"))
    init = first.run_dir / "export"
    assert UNet2DConditionModel.load_config(init / "unet")["sample_size"] == 32 // 2
    cfg = tiny_config("unet", tmp_path / "b", images, *schedule, f"unet.init={init}", "data.resolution=48",
                      "max_steps=2")
    stage = stage_cls(cfg, device=torch.device("cpu"), weight_dtype=torch.float32)
    stage.build()
    sched = stage.scheduler.config
    assert sched.prediction_type == "v_prediction" and sched.rescale_betas_zero_snr
    assert float(stage.scheduler.alphas_cumprod[-1]) < 1e-6  # pure noise at t = T
    # the loss is the MSE to the velocity: a UNet that outputs the velocity has zero loss
    from types import SimpleNamespace

    from asuka.training.stages import _diffusion

    data = build_dataset(cfg, transform=stage.dataset_transform())
    batch = torch.utils.data.default_collate([data[(i, 0)] for i in range(2)])
    seen = {}
    real = _diffusion.inpainting_latents

    def spy(vae, image, mask, generator):
        seen["latents"], mask_latents, masked = real(vae, image, mask, generator)
        return seen["latents"], mask_latents, masked

    class Oracle(torch.nn.Module):  # returns the true velocity of its noisy input
        def __init__(self):
            super().__init__()
            self.dummy = torch.nn.Parameter(torch.zeros(()))

        def forward(self, model_input, t, encoder_hidden_states):
            x0 = seen["latents"]
            abar = stage.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
            noise = (model_input[:, : x0.shape[1]] - abar.sqrt() * x0) / (1 - abar).sqrt()
            return SimpleNamespace(sample=stage.scheduler.get_velocity(x0, noise, t))

    monkeypatch.setattr(_diffusion, "inpainting_latents", spy)
    oracle = Oracle()
    monkeypatch.setattr(stage, "unet", lambda: oracle)
    assert float(stage.loss(batch, 0, generator=torch.Generator().manual_seed(0)).loss) < 1e-8
    result = train(stage_cls, cfg)
    exported = result.run_dir / "export"
    ddim = json.loads((exported / "scheduler" / "scheduler_config.json").read_text())
    assert ddim["_class_name"] == "DDIMScheduler" and ddim["prediction_type"] == "v_prediction"
    assert ddim["rescale_betas_zero_snr"] is True and ddim["timestep_spacing"] == "trailing"
    assert UNet2DConditionModel.load_config(exported / "unet")["sample_size"] == 48 // 2
    for bad in ("schedule.beta_end=0.02", "schedule.prediction_type=sample"):
        with pytest.raises(InputError, match="config schedule"):
            tiny_config("unet", tmp_path / "c", images, bad).validate()


def test_unet_lowres_caption_condition(images, tmp_path):
    """``condition.kind=lowres``: the UNet is trained on tokens of a low-resolution view of the
    whole image (one per block, depending on the image), zeros for the ``p_null`` share; the
    caption encoder trains with the UNet and only the UNet (+ scheduler) is exported."""
    from asuka.training.stages.unet import LowResCaption

    stage_cls = get_stage("unet")
    cfg = tiny_config("unet", tmp_path / "u", images, "condition.kind=lowres", "condition.grid=4",
                      "condition.cell=2", "condition.p_null=0.5", "max_steps=3")
    stage = stage_cls(cfg, device=torch.device("cpu"), weight_dtype=torch.float32)
    stage.build()
    assert list(stage.models) == ["unet", "caption"] and stage.ema_model() == "unet"
    data = build_dataset(cfg, transform=stage.dataset_transform())
    batch = torch.utils.data.default_collate([data[(i, 0)] for i in range(4)])
    cond, logs = stage.condition(batch, 0, torch.Generator().manual_seed(1))
    assert cond.shape == (4, 16, 32)
    null = cond.flatten(1).abs().amax(1) == 0
    assert 0 < int(null.sum()) < 4 and logs["null"] == pytest.approx(float(null.float().mean()))
    # a token depends on its own block of the image only
    cap = LowResCaption(8, grid=2, cell=1)
    img = torch.zeros(1, 3, 8, 8)
    base = cap(img)
    img[..., :4, :4] = 1.0  # top-left block
    changed = (cap(img) - base).abs().amax(-1)[0] > 1e-6
    assert changed.tolist() == [True, False, False, False]
    result = train(stage_cls, cfg)
    assert result.step == 3 and result.exported
    assert "caption" in read_checkpoint(latest_checkpoint(result.run_dir))["models"]
    with pytest.raises(InputError, match="condition.kind"):
        tiny_config("unet", tmp_path / "v", images, "condition.kind=text").validate()


def test_unet_prior_condition_and_timestep_range(images, tmp_path):
    """``condition.kind=prior``: the UNet is trained on the pipeline's condition, the frozen
    aligner's output for the MAE prior of the *masked* image (the aligner's null for the
    ``p_null`` share); ``timestep_range`` bounds the training timesteps (here the last one)."""
    from asuka.models.aligner import AsukaAligner
    from asuka.models.mae import MAEPrior

    torch.manual_seed(0)
    MAEPrior.from_preset("tiny").save_pretrained(tmp_path / "mae")
    aligner = AsukaAligner.from_preset("tiny")
    aligner.set_null_condition(torch.full((1, 32), 0.5))
    aligner.save_pretrained(tmp_path / "aligner")
    stage_cls = get_stage("unet")
    cfg = tiny_config("unet", tmp_path / "u", images, "condition.kind=prior", f"condition.mae={tmp_path / 'mae'}",
                      f"condition.aligner={tmp_path / 'aligner'}", "condition.p_null=0.5",
                      "timestep_range=[999, 999]", "max_steps=2")
    stage = stage_cls(cfg, device=torch.device("cpu"), weight_dtype=torch.float32)
    stage.build()
    assert list(stage.models) == ["unet"] and not stage.aligner.training
    data = build_dataset(cfg, transform=stage.dataset_transform())
    batch = torch.utils.data.default_collate([data[(i, 0)] for i in range(4)] * 2)
    seen = []
    real_prior = stage.mae.prior
    stage.mae.prior = lambda image, mask: seen.append(mask) or real_prior(image, mask)
    cond, logs = stage.condition(batch, 0, torch.Generator().manual_seed(1))
    assert torch.equal(seen[-1], batch["mask"])  # the prior of the masked image, as at inference
    expected = stage.aligner(real_prior(batch["image"], batch["mask"]))
    null = (cond == 0.5).flatten(1).all(1)
    assert 0 < int(null.sum()) < 8 and logs["null"] == pytest.approx(float(null.float().mean()))
    assert torch.allclose(cond[~null], expected[~null])
    # every training timestep is the last one
    drawn = []
    real_add = stage.scheduler.add_noise
    stage.scheduler.add_noise = lambda x, n, t: drawn.append(t) or real_add(x, n, t)
    stage.loss(batch, 0, generator=torch.Generator().manual_seed(0))
    assert drawn[-1].tolist() == [999] * 8
    assert train(stage_cls, cfg).step == 2
    plain = stage_cls(tiny_config("unet", tmp_path / "p", images), device=torch.device("cpu"), weight_dtype=torch.float32)
    plain.build()
    assert plain.timestep_bounds() == (0, 999)  # the default: every timestep
    for bad, match in (("timestep_range=[5, 2]", "timestep_range"), ("timestep_range=[0, 1000]", "0-999"),
                       ("condition.kind=prior", "needs condition.mae")):
        with pytest.raises(InputError, match=match):
            c = tiny_config("unet", tmp_path / "w", images, bad)
            c.validate()
            stage_cls(c, device=torch.device("cpu"), weight_dtype=torch.float32).build()
    small = AsukaAligner.from_preset("tiny", dim=16)
    small.save_pretrained(tmp_path / "aligner16")
    c = tiny_config("unet", tmp_path / "x", images, "condition.kind=prior", f"condition.mae={tmp_path / 'mae'}",
                    f"condition.aligner={tmp_path / 'aligner16'}")
    with pytest.raises(InputError, match="aligner dim 16 != the UNet's cross_attention_dim 32"):
        stage_cls(c, device=torch.device("cpu"), weight_dtype=torch.float32).build()
