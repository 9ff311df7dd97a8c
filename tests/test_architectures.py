"""Production code does not import asuka.testing (the test helpers); the configs build the stated sizes."""

import re
import subprocess
import sys
from pathlib import Path

import asuka


def test_production_modules_do_not_import_asuka_testing():
    root = Path(asuka.__file__).parent
    imports = re.compile(r"^\s*(from asuka\.testing import|import asuka\.testing|from asuka import .*\btesting\b)", re.M)
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if p.name != "testing.py" and imports.search(p.read_text())]
    assert offenders == []
    code = ("import sys, asuka.pipeline, asuka.pipeline_flux, asuka.flux, asuka.training.components, asuka.cli.inpaint;"
            "print('asuka.testing' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_flux_configs_follow_the_channel_rule():
    from asuka.architectures import flux_fill_transformer_config, flux_vae_config, tiny_flux_transformer_config

    for t in (flux_fill_transformer_config(), tiny_flux_transformer_config()):
        c, s = flux_vae_config()["latent_channels"], 2 ** (len(flux_vae_config()["block_out_channels"]) - 1)
        assert (t["in_channels"], t["out_channels"]) == (8 * c + 4 * s * s, 4 * c)
        assert sum(t["axes_dims_rope"]) == t["attention_head_dim"]
