"""The whole small ASUKA through the command line: vae -> unet -> mae -> align ->
make-latent-aug -> decoder, all exporting into one folder that the pipeline then loads."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from asuka.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_small_asuka_end_to_end(tmp_path, capsys):
    root = tmp_path / "photos"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / f"{i}.png")
    model = tmp_path / "model"
    common = [f"data.root={root}", f"export_dir={model}", "max_steps=2", "log_every=1", "data.num_workers=0"]

    def run(stage, *extra):
        assert main(["train", stage, "--config", str(CONFIGS / f"{stage}_tiny.yaml"),
                     f"output_dir={tmp_path / stage}", *common, *extra]) == 0

    run("vae", "vae.scale_samples=4", "loss.perceptual=off")
    run("unet", "backbone.preset=null", f"backbone.vae={model / 'vae'}")
    run("mae")
    assert not (model / "model_index.json").exists()  # no aligner yet
    run("align", f"mae={model / 'mae'}", "backbone.preset=null", f"backbone.pretrained={model}")
    assert (model / "model_index.json").is_file()  # mae, aligner, unet, vae, scheduler: a pipeline
    assert main(["make-latent-aug", "--config", str(CONFIGS / "latent_aug_tiny.yaml"), f"output_dir={tmp_path / 'la'}",
                 f"data.root={root}", "backbone.preset=null", f"backbone.pretrained={model}"]) == 0
    run("decoder", "backbone.preset=null", f"backbone.pretrained={model}", f"latent_aug.dir={tmp_path / 'la'}",
        "loss.perceptual=off")
    out = capsys.readouterr().out
    assert str(model / "decoder") in out and "latents in" in out
    # every run can re-export its newest checkpoint without training
    assert main(["train", "mae", "--config", str(CONFIGS / "mae_tiny.yaml"), f"output_dir={tmp_path / 'mae'}",
                 *common, "--export-only"]) == 0

    from asuka.pipeline import AsukaInpaintPipeline

    pipe = AsukaInpaintPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.decoder is not None and pipe.unet.config.cross_attention_dim == pipe.aligner.config.dim
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 8:20] = 1
    result = pipe(image, mask, num_inference_steps=2, output_type="pt", generator=torch.Generator().manual_seed(0))
    assert result.images.shape == (1, 3, 32, 32) and torch.isfinite(result.images).all()
