"""Training on the FLUX.1-Fill backbone (``backbone.kind=flux``), with the tiny FLUX transformer and
VAE of :mod:`asuka.testing`: align (flow matching, both aligners), make-latent-aug (one-step
estimate), decoder (z=16). Seconds each on a CPU."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from asuka import flux
from asuka.errors import InputError
from asuka.testing import TINY_FLUX_JOINT_DIM, TINY_FLUX_POOLED_DIM, flux_scheduler_config
from asuka.training import get_stage, load_config, train
from asuka.training.checkpoint import latest_checkpoint, read_checkpoint
from asuka.training.data import build_dataset
from asuka.training.latent_aug import LatentAugConfig, LatentAugStore, flux_one_step_estimate, make_latent_aug
from asuka.training.logs import read_metrics
from asuka.training.stages._diffusion import flow_time
from test_train_stages import images  # noqa: F401 -- the same smooth 'photos' (a module fixture)

FLUX = ["backbone.kind=flux", "backbone.preset=tiny"]
ALIGN = ["mae=tiny", "aligner=tiny", "t5_aligner=tiny", "aligner_config={head_dim: 8}", *FLUX,
         "substitution.decay_steps=5"]


def _config(stage, out, root, *extra):
    args = [f"output_dir={out}", f"data.root={root}", "data.resolution=32", "data.num_workers=0", "batch_size=4",
            "log_every=1", "checkpoint_every=1000", "optim.schedule=constant", *extra]
    return load_config(get_stage(stage).config_class, [], args, stage=stage)


def _fixed_batch_loss(stage, cfg):
    data = build_dataset(cfg, transform=stage.dataset_transform())
    batch = torch.utils.data.default_collate([data[(i, 99)] for i in range(4)])
    with torch.no_grad():
        return float(stage.loss(batch, 10_000, generator=torch.Generator().manual_seed(123)).loss)


def _trained_loss(stage_cls, cfg):
    probe = stage_cls(cfg, device=torch.device("cpu"), weight_dtype=torch.float32)
    probe.build()
    before = _fixed_batch_loss(probe, cfg)
    result = train(stage_cls, cfg)
    state = read_checkpoint(latest_checkpoint(result.run_dir))
    for key, module in probe.models.items():
        module.load_state_dict(state["models"][key])
    return before, _fixed_batch_loss(probe, cfg), result


# ------------------------------------------------------------------------------------ align
def test_flux_align_lowers_the_flow_matching_loss_and_exports_both_aligners(images, tmp_path):
    """Both aligners on the frozen (random) transformer: a fixed batch's loss drops (1.477 -> 1.393
    measured), and the export is the FLUX pipeline's clip_aligner/ and t5_aligner/."""
    from asuka.models.aligner import AsukaAligner
    from asuka.testing import tiny_flux_components
    from asuka.pipeline_flux import AsukaFluxFillPipeline

    nulls = tmp_path / "release" / "ckpt"  # the release's null conditions travel into the export
    nulls.mkdir(parents=True)
    vec0, txt0 = torch.randn(1, TINY_FLUX_POOLED_DIM), torch.randn(1, 7, TINY_FLUX_JOINT_DIM)
    torch.save(vec0, nulls / "vec.pt")
    torch.save(txt0, nulls / "txt_256.pt")
    cfg = _config("align", tmp_path / "run", images, *ALIGN, "max_steps=25", "optim.lr=3e-2",
                  f"null_condition_dir={tmp_path / 'release'}")
    before, after, result = _trained_loss(get_stage("align"), cfg)
    assert after < 0.97 * before, (before, after)
    assert [p.name for p in result.exported] == ["clip_aligner", "t5_aligner"]
    clip, t5 = (AsukaAligner.from_pretrained(p) for p in result.exported)
    assert (clip.config.dim, t5.config.dim) == (TINY_FLUX_POOLED_DIM, TINY_FLUX_JOINT_DIM)
    assert torch.equal(clip.null_condition, vec0) and torch.equal(t5.null_condition, txt0[0])
    # they drop into the pipeline in place of its aligners
    parts = tiny_flux_components()
    parts.update(clip_aligner=clip.eval(), t5_aligner=t5.eval())
    pipe = AsukaFluxFillPipeline(**parts)
    pipe.set_progress_bar_config(disable=True)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1
    out = pipe(torch.rand(1, 3, 32, 32) * 2 - 1, mask, num_inference_steps=1, output_type="pt",
               generator=torch.Generator().manual_seed(0)).images
    assert torch.isfinite(out).all()


def test_flux_align_condition_is_the_pipelines(images, tmp_path):
    """The condition the aligners are trained with is asuka.flux.flux_condition of the prior."""
    cfg = _config("align", tmp_path, images, *ALIGN, "condition_weight=0.5", "substitution.p_start=0.0",
                  "substitution.p_end=0.0")
    stage = get_stage("align")(cfg, device=torch.device("cpu"), weight_dtype=torch.float32)
    stage.build()
    batch = torch.utils.data.default_collate([build_dataset(cfg, transform=stage.dataset_transform())[(i, 0)]
                                              for i in range(2)])
    (pooled, txt), logs = stage.condition(batch, 0, torch.Generator().manual_seed(0))
    pair = stage.models["aligners"]
    with torch.no_grad():
        prior = stage.mae.prior(batch["image"], batch["mask"])
        ref = flux.flux_condition(prior, pair.clip_aligner, pair.t5_aligner, condition_weight=0.5)
    assert pooled.shape == (2, TINY_FLUX_POOLED_DIM) and txt.shape == (2, prior.shape[1], TINY_FLUX_JOINT_DIM)
    torch.testing.assert_close(pooled, ref[0]) and torch.testing.assert_close(txt, ref[1])
    assert float(logs["substituted"]) == 0.0


def test_flux_align_resumes_exactly(images, tmp_path):
    extra = [*ALIGN, "max_steps=6", "checkpoint_every=2", "optim.lr=1e-2", "batch_size=2"]
    stage = get_stage("align")
    train(stage, _config("align", tmp_path / "full", images, *extra))
    assert train(stage, _config("align", tmp_path / "part", images, *extra), stop_after=3).step == 3
    train(stage, _config("align", tmp_path / "part", images, *extra))
    full, part = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "part")
    assert [r["loss"] for r in full] == [r["loss"] for r in part] and len(full) == 6
    for name in ("clip_aligner", "t5_aligner"):
        a = load_file(str(tmp_path / "full" / "export" / name / "diffusion_pytorch_model.safetensors"))
        b = load_file(str(tmp_path / "part" / "export" / name / "diffusion_pytorch_model.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_flux_backbone_config_errors(images, tmp_path):
    with pytest.raises(InputError, match="multiple of 16"):
        _config("align", tmp_path, images, *ALIGN, "data.resolution=40")
    with pytest.raises(InputError, match="backbone.kind: expected one of sd15, flux"):
        _config("align", tmp_path, images, *ALIGN, "backbone.kind=sdxl")
    with pytest.raises(InputError, match="use backbone.transformer"):
        _config("align", tmp_path, images, *ALIGN, "backbone.unet=/x")


def test_training_times_follow_the_inference_schedule():
    """Uniform u through flow_time gives exactly the shifted sigmas the sampler uses for the same
    token count (FLUX's dynamic shift), so training and inference see the same times."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler.from_config(flux_scheduler_config())
    for tokens in (256, 1024, 4096):
        flux.set_flow_timesteps(sched, 50, tokens)
        u = torch.from_numpy(np.linspace(1.0, 1.0 / 50, 50)).float()
        torch.testing.assert_close(flow_time(sched, u, tokens), sched.sigmas[:-1].float(), atol=1e-6, rtol=0)


# ------------------------------------------------------------------------- latent augmentation
class _OracleTransformer(torch.nn.Module):
    """Returns a given packed velocity; checks the fill input of an all-zero mask."""

    def __init__(self, velocity, mask_channels):
        super().__init__()
        self.velocity, self.mask_channels = velocity, mask_channels
        self.config = type("C", (), {"guidance_embeds": True})()
        self.dtype = torch.float32

    def forward(self, hidden_states, **kwargs):
        assert torch.all(hidden_states[..., -self.mask_channels:] == 0)  # nothing is hole
        return (self.velocity,)


def test_flux_one_step_estimate_formula():
    from diffusers import AutoencoderKL

    from asuka.testing import tiny_flux_vae_config

    torch.manual_seed(0)
    vae = AutoencoderKL(**tiny_flux_vae_config()).eval()
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 3, 32, 32, generator=g) * 2 - 1
    x0 = torch.randn(3, 16, 4, 4, generator=g)
    noise = torch.randn(3, 16, 4, 4, generator=g)
    s = torch.tensor([0.5, 0.75, 0.99])
    cond = (torch.zeros(1, 8), torch.zeros(1, 1, 8))
    exact = flux.pack_latents(noise - x0)  # the true velocity recovers x0
    out = flux_one_step_estimate(_OracleTransformer(exact, 256), vae, x0, image, noise, s, cond, guidance=30.0)
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)
    zero = flux_one_step_estimate(_OracleTransformer(torch.zeros_like(exact), 256), vae, x0, image, noise, s, cond,
                                  guidance=30.0)
    sv = s.view(-1, 1, 1, 1)
    torch.testing.assert_close(zero, (1 - sv) * x0 + sv * noise)  # no velocity: x_s itself


def test_flux_latent_aug_then_decoder_z16(images, tmp_path):
    """make-latent-aug with FLUX writes 16-channel latents in the VAE's decode space; the decoder
    stage (z=16, from the FLUX VAE's decoder) trains on them and lowers its loss."""
    out = tmp_path / "la"
    cfg = load_config(LatentAugConfig, [], [f"output_dir={out}", f"data.root={images}", "data.resolution=32",
                                            "data.num_workers=0", *FLUX, "batch_size=3", "fraction=1.0"])
    assert make_latent_aug(cfg) == 4
    store = LatentAugStore(out)
    meta = store.meta()
    assert (meta["backbone"], meta["latent_channels"], meta["scaling_factor"], meta["shift_factor"]) == (
        "flux", 16, 0.3611, 0.1159)
    for ident in store.boxes():
        d = load_file(str(store.latent_path(ident)))
        assert d["z0_hat"].shape == (16, 4, 4) and torch.isfinite(d["z0_hat"].float()).all()
    with pytest.raises(InputError, match="empty_prompt"):
        load_config(LatentAugConfig, [], [f"output_dir={out}", *FLUX, "condition=empty_prompt"]).validate()
    # masked: the fill input carries a drawn hole, stored with the estimate, which then differs
    holed = tmp_path / "la_holed"
    assert make_latent_aug(load_config(LatentAugConfig, [], [
        f"output_dir={holed}", f"data.root={images}", "data.resolution=32", "data.num_workers=0", *FLUX,
        "batch_size=3", "fraction=1.0", "masked=true"])) == 4
    for ident in store.boxes():
        d = load_file(str(LatentAugStore(holed).latent_path(ident)))
        assert d["mask"].shape == (1, 32, 32) and 0 < d["mask"].float().mean() < 1
        assert not torch.equal(d["z0_hat"], load_file(str(store.latent_path(ident)))["z0_hat"])

    dcfg = _config("decoder", tmp_path / "dec", images, *FLUX, "loss.perceptual=off", "max_steps=25",
                   "optim.lr=3e-3", f"latent_aug.dir={out}", "latent_aug.p=0.5")
    before, after, result = _trained_loss(get_stage("decoder"), dcfg)
    assert after < 0.8 * before, (before, after)
    from asuka.models.decoder import MaskConditionedDecoder

    decoder = MaskConditionedDecoder.from_pretrained(result.exported[0])
    assert decoder.config.latent_channels == 16 and not decoder.config.use_post_quant_conv
    rows = read_metrics(result.run_dir)
    assert 0 < np.mean([r["latent_aug"] for r in rows]) < 1


def test_cli_trains_the_tiny_flux_config(images, tmp_path):
    from pathlib import Path

    from asuka.cli import main

    config = Path(__file__).resolve().parents[1] / "configs" / "align_flux_tiny.yaml"
    assert main(["train", "align", "--config", str(config), f"output_dir={tmp_path / 'run'}", f"data.root={images}",
                 "max_steps=2", "log_every=1"]) == 0
    assert (tmp_path / "run" / "export" / "clip_aligner" / "config.json").is_file()
    assert (tmp_path / "run" / "export" / "t5_aligner" / "config.json").is_file()
