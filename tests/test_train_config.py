"""Training configs: YAML files, key=value overrides, type checks, saved resolved config, CLI."""

from pathlib import Path

import pytest
import yaml

from asuka.errors import InputError
from asuka.training.config import load_config, parse_override, save_config, to_dict
from asuka.training.stages import STAGES, get_stage

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_files_then_overrides_in_order(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("stage: align\nmax_steps: 5\noptim: {lr: 1.0e-3, betas: [0.8, 0.9]}\n"
                 "substitution: {decay_steps: 10}\n")
    b = tmp_path / "b.yaml"
    b.write_text("max_steps: 7\n")
    cls = get_stage("align").config_class
    cfg = load_config(cls, [a, b], ["optim.lr=2e-4", "substitution.p_end=0.2", "backbone.preset=tiny",
                                     "mixed_precision=no"], stage="align")
    assert cfg.max_steps == 7  # the later file wins
    assert cfg.optim.lr == 2e-4 and cfg.optim.betas == (0.8, 0.9)  # "2e-4" read as a number
    assert cfg.substitution.decay_steps == 10 and cfg.substitution.p_end == 0.2
    assert cfg.substitution.p_start == 1.0  # untouched default
    assert cfg.backbone.preset == "tiny" and cfg.mixed_precision == "no"  # "no" stays a string
    assert cfg.data.resolution == 512  # the align stage's own default


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=1", "unknown key(s) optim.lrr; valid keys under optim: betas, eps, lr"),
    ("max_steps=1.5", "max_steps: expected an integer, got 1.5"),
    ("optim.lr=fast", "optim.lr: expected a number, got 'fast'"),
    ("optim.betas=[0.9]", "optim.betas: expected 2 values"),
    ("ema.enabled=maybe", "ema.enabled: expected true or false"),
    ("mixed_precision=fp8", "mixed_precision: expected one of no, fp16, bf16, got 'fp8'"),
    ("batch_size=0", "batch_size: expected an integer >= 1, got 0"),
    ("substitution.p_end=1.5", "substitution.p_end: expected a probability, got 1.5"),
    ("optim", "expected key=value"),
])
def test_bad_values_name_key_expected_and_given(override, message):
    with pytest.raises(InputError, match=None) as info:
        load_config(get_stage("align").config_class, [], [override], stage="align")
    assert message in str(info.value)


def test_partial_section_keeps_the_stage_defaults(tmp_path):
    f = tmp_path / "u.yaml"
    f.write_text("backbone: {preset: tiny}\ndata: {root: /x}\n")
    cfg = load_config(get_stage("unet").config_class, [f], [], stage="unet")
    # the unet stage's backbone has no SD-1.5 default and its data a 128 px default
    assert cfg.backbone.pretrained is None and cfg.backbone.preset == "tiny"
    assert cfg.data.resolution == 128 and cfg.data.root == "/x"


def test_stage_mismatch_and_missing_file(tmp_path):
    f = tmp_path / "d.yaml"
    f.write_text("stage: decoder\n")
    with pytest.raises(InputError, match="this command trains 'mae', the config says 'decoder'"):
        load_config(get_stage("mae").config_class, [f], [], stage="mae")
    with pytest.raises(InputError, match="config file not found"):
        load_config(get_stage("mae").config_class, [tmp_path / "nope.yaml"], [], stage="mae")


def test_parse_override_nests_and_uses_yaml_scalars():
    assert parse_override("a.b.c=[1, 2]") == {"a": {"b": {"c": [1, 2]}}}
    assert parse_override("x=null") == {"x": None}
    assert parse_override("x=off") == {"x": "off"} and parse_override("x=true") == {"x": True}


def test_saved_config_round_trips(tmp_path):
    cls = get_stage("decoder").config_class
    cfg = load_config(cls, [], ["loss.gan_start=7", "latent_aug.dir=/x", "data.root=/d"], stage="decoder")
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(cls, [tmp_path / "config.yaml"], [], stage="decoder")
    assert to_dict(again) == to_dict(cfg)
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["loss"]["gan_start"] == 7


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_config_validates(path):
    data = yaml.safe_load(path.read_text())
    if "stage" in data:
        assert data["stage"] in STAGES
        load_config(get_stage(data["stage"]).config_class, [path], [], stage=data["stage"])
    else:
        from asuka.training.latent_aug import LatentAugConfig

        load_config(LatentAugConfig, [path], [])


def test_cli_print_config_and_error(capsys):
    from asuka.cli import main

    assert main(["train", "mae", "--config", str(CONFIGS / "mae_tiny.yaml"), "--set", "optim.lr=0.5",
                 "max_steps=3", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["optim"]["lr"] == 0.5 and printed["max_steps"] == 3 and printed["model"] == "tiny"
    assert main(["train", "unet", "unet.layers=2"]) == 2
    assert "unknown key(s) unet.layers" in capsys.readouterr().err
    assert main(["train", "align", "data.root=/no/such/folder"]) == 2  # before any model is loaded
    assert "image folder not found: /no/such/folder" in capsys.readouterr().err
    assert main(["make-latent-aug", "fraction=0", "--print-config"]) == 2
    assert "fraction: expected a value in (0, 1]" in capsys.readouterr().err
