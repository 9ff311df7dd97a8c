"""``asuka train STAGE`` and ``asuka make-latent-aug``.

Both read a config as YAML files plus ``key=value`` overrides (dotted keys, YAML values)::

    asuka train align --config configs/align_sd15.yaml data.root=/data/places optim.lr=1e-4
    accelerate launch -m asuka train decoder --config configs/decoder_sd15.yaml --set batch_size=10
    asuka make-latent-aug --config configs/latent_aug_sd15.yaml data.root=/data/places
"""

from __future__ import annotations

import argparse

from asuka.cli.common import ExamplesFormatter, add_threads_option, examples

_STAGES = {
    "mae": "fine-tune the MAE prior with the paper's masks and adaptive 75% masking",
    "align": "train the alignment module (frozen MAE + backbone, misalignment substitution)",
    "decoder": "train the mask-conditioned decoder (colour + latent augmentation, L1/LPIPS/GAN)",
    "vae": "train a small KL-VAE from scratch (for a small ASUKA)",
    "unet": "train a 9-channel latent inpainting UNet from scratch with the null condition",
}

_EXAMPLES = {
    "mae": "asuka train mae --config configs/mae_paper.yaml data.root=/data/places",
    "align": "asuka train align --config configs/align_sd15.yaml mae=runs/sd15/mae/export/mae",
    "decoder": "asuka train decoder --config configs/decoder_sd15.yaml latent_aug.dir=runs/sd15/latent_aug",
    "vae": "asuka train vae --config configs/asuka-small/vae.yaml --print-config",
    "unet": "asuka train unet --config configs/asuka-small/unet.yaml optim.lr=2e-4",
}

_CONFIG_EPILOG = """\
config: defaults <- each --config file in order <- overrides in order. An override is
key=value with a dotted key (optim.lr=3e-4, data.root=/data/places) and a YAML value
(true, null, [0.9, 0.99]); give it bare or after --set. The resolved config is saved as
<output_dir>/config.yaml; --print-config shows it without running.
"""


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", default=[], metavar="FILE.yaml",
                        help="YAML config file (repeatable; later files override earlier ones)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="set_",
                        help="override one config key (repeatable)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="more overrides")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def register(subparsers) -> None:
    train = subparsers.add_parser(
        "train", help="train a stage (mae, align, decoder; vae, unet for a small backbone)",
        description="Train one stage of ASUKA. Single process: `asuka train STAGE ...`; several GPUs "
                    "or nodes: `accelerate launch [--multi_gpu ...] -m asuka train STAGE ...`. A run "
                    "resumes from the newest checkpoint in its output_dir (resume=auto).",
        epilog=examples(_EXAMPLES["mae"], _EXAMPLES["vae"],
                        "accelerate launch --multi_gpu -m asuka train align --config configs/align_sd15.yaml"),
        formatter_class=ExamplesFormatter)
    stages = train.add_subparsers(dest="stage", metavar="STAGE")
    for name, text in _STAGES.items():
        # help strings are %-formatted by argparse, descriptions are not
        parser = stages.add_parser(name, help=text.replace("%", "%%"), description=text,
                                   epilog=_CONFIG_EPILOG + "\n" + examples(_EXAMPLES[name]),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_config_args(parser)
        add_threads_option(parser)
        parser.add_argument("--export-only", action="store_true",
                            help="export the newest checkpoint of output_dir (no training)")
        parser.set_defaults(func=run, stage=name)
    train.set_defaults(func=lambda args: (train.print_help(), 2)[1])

    aug = subparsers.add_parser(
        "make-latent-aug", help="write the decoder stage's latent augmentation (one-step backbone estimates)",
        description="For a seeded fraction of the training images, write the frozen backbone's one-step "
                    "estimate z0_hat = (z_t - sqrt(1 - abar_t) eps) / sqrt(abar_t), t ~ U[500, 1000), with "
                    "the clean latent as masked-image latent and an all-zero mask. Resumable.",
        epilog=_CONFIG_EPILOG + "\n" + examples(
            "asuka make-latent-aug --config configs/latent_aug_sd15.yaml data.root=/data/places"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_config_args(aug)
    add_threads_option(aug)
    aug.set_defaults(func=run_latent_aug)


def _overrides(args) -> list[str]:
    return [*args.set_, *args.overrides]


def _print(config) -> None:
    import yaml

    from asuka.training.config import to_dict

    print(yaml.safe_dump(to_dict(config), sort_keys=False), end="")


def run(args) -> int:
    from asuka.training.config import load_config
    from asuka.training.loop import export_run, train
    from asuka.training.stages import get_stage

    stage = get_stage(args.stage)
    config = load_config(stage.config_class, args.config, _overrides(args), stage=args.stage)
    if args.print_config:
        _print(config)
        return 0
    if args.export_only:
        paths = export_run(stage, config)
    else:
        result = train(stage, config)
        paths = result.exported
    for path in paths:
        print(path)
    return 0


def run_latent_aug(args) -> int:
    from asuka.training.config import load_config
    from asuka.training.latent_aug import LatentAugConfig, make_latent_aug

    config = load_config(LatentAugConfig, args.config, _overrides(args))
    if args.print_config:
        _print(config)
        return 0
    count = make_latent_aug(config)
    print(f"{count} latents in {config.output_dir}")
    return 0
