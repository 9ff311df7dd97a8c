"""Weight decay only on the weights of linear and conv layers (MAE's recipe), in the training loop."""

import torch

from asuka.models.aligner import AsukaAligner
from asuka.models.mae import MAEPrior
from asuka.training import get_stage, load_config
from asuka.training.loop import _Trainer, weight_decay_groups


def _names(model, group):
    ids = {id(p) for p in group["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_mae_decays_only_matrix_weights():
    torch.manual_seed(0)
    mae = MAEPrior.from_preset("tiny")
    decay, exempt = weight_decay_groups([mae], 0.05)
    assert (decay["weight_decay"], exempt["weight_decay"]) == (0.05, 0.0)
    decayed, spared = _names(mae, decay), _names(mae, exempt)
    assert decayed | spared == {n for n, _ in mae.named_parameters()} and not decayed & spared
    assert {"mask_token", "alpha", "norm.weight", "decoder_norm.bias", "blocks.0.norm1.weight",
            "blocks.0.attn.qkv.bias", "decoder_patch_embed.proj.bias"} <= spared
    assert {"blocks.0.attn.qkv.weight", "blocks.1.mlp.fc2.weight", "patch_embed.proj.weight",
            "decoder_embed.weight", "decoder_pred.weight"} <= decayed
    assert all(n.endswith("weight") and p.ndim >= 2 for n, p in mae.named_parameters() if n in decayed)


def test_aligner_norm_scales_and_embeddings_are_spared():
    aligner = AsukaAligner.from_preset("tiny")
    emb = torch.nn.Sequential(torch.nn.Embedding(10, 8), torch.nn.GroupNorm(2, 8), torch.nn.Linear(8, 8))
    emb.register_parameter("pos_embed", torch.nn.Parameter(torch.zeros(1, 4, 8)))
    decay, exempt = weight_decay_groups([aligner, emb], 0.01)
    assert _names(aligner, exempt) >= {"blocks.0.norm_q.weight", "blocks.1.norm_k.weight", "norm_out.weight",
                                       "proj_in.bias"}
    linears = {f"blocks.{i}.linear{j}.weight" for i in (0, 1) for j in (1, 2)}
    assert _names(aligner, decay) == {"proj_in.weight", *linears}
    assert _names(emb, decay) == {"2.weight"}  # Embedding, GroupNorm and the position table: no decay


def test_no_decay_is_one_group_in_parameter_order():
    aligner = AsukaAligner.from_preset("tiny")
    (group,) = weight_decay_groups([aligner], 0.0)
    assert [id(p) for p in group["params"]] == [id(p) for p in aligner.parameters()]


def test_the_trainer_builds_its_optimizers_with_the_groups(tmp_path):
    (tmp_path / "img").mkdir()
    cfg = load_config(get_stage("mae").config_class, [], [
        f"output_dir={tmp_path / 'run'}", f"data.root={tmp_path / 'img'}", "data.resolution=32",
        "model=tiny", "optim.weight_decay=0.05"], stage="mae")
    trainer = _Trainer(get_stage("mae"), cfg)
    mae = trainer.raw["mae"]
    decay, exempt = trainer.optimizers["main"].param_groups
    assert (decay["weight_decay"], exempt["weight_decay"]) == (0.05, 0.0)
    assert any(p is mae.mask_token for p in exempt["params"]) and any(p is mae.alpha for p in exempt["params"])
    assert sum(len(g["params"]) for g in (decay, exempt)) == len(list(mae.parameters()))
