#!/usr/bin/env python
"""Evaluate the small ASUKA (src/asuka/pretrained/asuka-small) on the held-out photographs at 512 px.

Every learned method runs through the pipeline exactly as ``asuka inpaint`` runs it with its
defaults (the defaults are read from the CLI's own parser: steps, seed, crop margin, feather,
guidance; crop mode at the model's working resolution, known pixels pasted back, output
quantised to 8 bits as the saved PNG):

* ``base``: null condition + the VAE's own decoder (the "SD" baseline of the paper);
* ``ASUKA``: MAE prior -> aligner -> UNet, mask-conditioned decoder;
* ablations: ``no MAE prior`` (null condition, ASUKA decoder), ``linear alignment only``
  (aligner without transformer blocks), ``vanilla decoder`` (ASUKA condition, VAE decoder),
  ``decoder w/o augmentation`` (mask-conditioned decoder trained without colour / latent
  augmentation);
* ``seam blending of an empty fill``: the model's seam blending with no model
  (:func:`asuka.baselines.membrane_fill`, the fade scaled to 512 px), a classical reference that
  shows what the learned fill adds;
* OpenCV ``Telea`` and ``Navier-Stokes`` (``cv2.inpaint``, radius 3, at 512 px), classical references.

Data: every image of ``--eval-dir`` (the held-out photos at 512 px, ``data/photos/eval/512``)
with ``--masks-per-photo`` masks from :func:`asuka.masks.misato_eval_mixture` (mask ``k`` of
photo ``i`` drawn from ``rng_for(--mask-seed, i, k)``).

Metrics (on the composite): PSNR over the hole pixels, SSIM (grey, whole image), the band
colour error (CIEDE2000 against the ground truth over the hole pixels within ``--band`` px of
the known region: per pixel, and of the band's mean colour), the boundary colour shift and
gradient of :mod:`asuka.metrics`, and the seed variance (prior vs null condition, ``--seeds``
seeds, per input; one-sided sign test). Optional FID / U-IDS / P-IDS (``--fid``) are
meaningless at a few dozen images and off by default.

Usage::

    python scripts/small_model_report.py                        # docs/RESULTS.md + figure + json
    python scripts/small_model_report.py --model OTHER --out /tmp/r.md --figure /tmp/g.png --json /tmp/r.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch

from asuka.baselines import membrane_fill, opencv_inpaint, quantize_8bit

ROOT = Path(__file__).resolve().parents[1]

METHODS = [
    # key, label, condition, decoder ("asuka" | "vae" | "noaug"), aligner ("main" | "linear"),
    # poisson_blend (None: the CLI's default, i.e. the model's; False: off)
    ("base", "base (null condition, VAE decoder)", "null", "vae", "main", None),
    ("asuka", "**ASUKA** (MAE prior, aligner, conditioned decoder)", "prior", "asuka", "main", None),
    ("asuka_noblend", "ASUKA without seam blending (the paper's method)", "prior", "asuka", "main", False),
    ("no_mae", "no MAE prior (null condition, ASUKA decoder)", "null", "asuka", "main", None),
    ("linear", "linear alignment only", "prior", "asuka", "linear", None),
    ("vanilla_dec", "vanilla decoder (ASUKA condition, VAE decoder)", "prior", "vae", "main", None),
    ("noaug_dec", "conditioned decoder w/o augmentation", "prior", "noaug", "main", None),
    ("membrane", "seam blending of an empty fill (no model; classical)", None, None, None, None),
    ("telea", "OpenCV Telea (classical)", None, None, None, None),
    ("ns", "OpenCV Navier-Stokes (classical)", None, None, None, None),
]
HEADS = {"base": "base", "asuka": "ASUKA", "asuka_noblend": "ASUKA no blend", "no_mae": "no MAE", "membrane": "empty fill",
         "linear": "linear align", "vanilla_dec": "vanilla dec", "noaug_dec": "dec w/o aug", "telea": "Telea",
         "ns": "Navier-Stokes"}


def cli_defaults() -> dict:
    """The defaults of ``asuka inpaint`` (from its parser), so the report runs what a user runs."""
    from asuka.cli import build_parser

    a = build_parser().parse_args(["inpaint", "in.png", "mask.png", "-o", "out.png"])
    return {"steps": a.steps, "seed": a.seed, "crop_margin": a.crop_margin, "feather": a.feather,
            "guidance_scale": a.guidance_scale, "resolution": a.resolution, "poisson_blend": a.poisson_blend}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(ROOT / "src/asuka/pretrained/asuka-small"))
    p.add_argument("--ablations", default=None,
                   help="folder with aligner-linear/ and decoder-noaug/ (default: MODEL-ablations)")
    p.add_argument("--eval-dir", default=str(ROOT / "data/photos/eval/512"))
    p.add_argument("--masks-per-photo", type=int, default=8)
    p.add_argument("--mask-seed", type=int, default=2024)
    p.add_argument("--seeds", type=int, default=4, help="noise seeds per input for the seed variance")
    p.add_argument("--band", type=int, default=4, help="band width in px for the colour metrics")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--methods", default=",".join(k for k, *_ in METHODS), help="comma-separated subset")
    p.add_argument("--cache", default=None,
                   help="folder for each method's outputs (8-bit .pt); a rerun reuses them and runs only "
                        "what is missing, and refuses a folder made with another model, inputs, settings or code")
    p.add_argument("--fid", action="store_true", help="also FID / U-IDS / P-IDS (TF-2015 Inception)")
    p.add_argument("--ids-pca-dim", type=int, default=16)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    p.add_argument("--out", default=str(ROOT / "docs/RESULTS.md"))
    p.add_argument("--figure", default=str(ROOT / "docs/figures/small_model_grid.png"))
    p.add_argument("--json", default=str(ROOT / "docs/figures/small_model_results.json"))
    p.add_argument("--figure-rows", type=int, default=8)
    p.add_argument("--tile", type=int, default=160, help="figure tile side in px")
    args = p.parse_args(argv)
    args.ablations = args.ablations or str(Path(args.model).with_name(Path(args.model).name + "-ablations"))
    return args


# ------------------------------------------------------------------------------------ data
def load_eval_set(eval_dir: Path, masks_per_photo: int, mask_seed: int):
    """``(images (N,3,S,S) in [-1,1], masks (N,1,S,S), names)``: every photo x k masks.

    Mask ``k`` of a photo depends only on ``(mask_seed, photo file name, k)``, so adding photos to
    the folder leaves the other photos' masks as they were."""
    from PIL import Image

    from asuka.masks import misato_eval_mixture, rng_for

    files = []
    if eval_dir.is_dir():
        files = sorted(p for p in eval_dir.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        sys.exit(f"no images in {eval_dir}: run scripts/fetch_photos.py first (see data/README.md)")
    mixture = misato_eval_mixture()
    images, masks, names = [], [], []
    for path in files:
        arr = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 127.5 - 1.0
        img = torch.from_numpy(arr).permute(2, 0, 1)
        h, w = img.shape[-2:]
        for k in range(masks_per_photo):
            draw = mixture.sample(h, w, rng_for(mask_seed, zlib.crc32(path.stem.encode()), k))
            images.append(img)
            masks.append(torch.from_numpy(draw.mask.astype(np.float32))[None])
            names.append(f"{path.stem}#{k}")
    return torch.stack(images), torch.stack(masks), names


# ------------------------------------------------------------------------------------ model
def load_pipelines(args) -> dict:
    """``{"main": pipe, "linear": pipe with the linear aligner, "noaug": pipe with the noaug decoder}``
    (the ablation pipelines only when their folder exists)."""
    from asuka import AsukaAligner, MaskConditionedDecoder
    from asuka.pipeline import AsukaInpaintPipeline, load_pipeline

    pipe = load_pipeline(args.model, device="cpu", dtype="float32")
    pipes = {"main": pipe}
    abl = Path(args.ablations)
    parts = dict(pipe.components, default_steps=pipe.config.get("default_steps"),
                 default_resolution=pipe.config.get("default_resolution"),
                 default_poisson_blend=pipe.config.get("default_poisson_blend"))
    if (abl / "aligner-linear").is_dir():
        pipes["linear"] = AsukaInpaintPipeline(**{**parts, "aligner": AsukaAligner.from_pretrained(abl / "aligner-linear")})
    if (abl / "decoder-noaug").is_dir():
        pipes["noaug"] = AsukaInpaintPipeline(
            **{**parts, "decoder": MaskConditionedDecoder.from_pretrained(abl / "decoder-noaug")})
    for p in pipes.values():
        p.set_progress_bar_config(disable=True)
    return pipes


@torch.no_grad()
def run_cli_like(pipe, images, masks, *, condition, decoder, seed, defaults, batch_size, poisson_blend=None):
    """What ``asuka inpaint`` writes for each input (one generator per image seeded with
    ``seed``), as ``(N,3,H,W)`` in [-1, 1] quantised to 8 bits."""
    outs = []
    for start in range(0, len(images), batch_size):
        sl = slice(start, start + batch_size)
        gens = [torch.Generator().manual_seed(seed) for _ in range(len(images[sl]))]
        res = pipe(list(images[sl]), list(masks[sl]), num_inference_steps=defaults["steps"], generator=gens,
                   condition=condition, decoder=decoder, guidance_scale=defaults["guidance_scale"],
                   feather=defaults["feather"], padding_mask_crop=defaults["crop_margin"],
                   resolution=defaults["resolution"], output_type="pt",
                   poisson_blend=defaults["poisson_blend"] if poisson_blend is None else poisson_blend).images
        outs.append(torch.as_tensor(res))
    out = torch.cat(outs)
    return quantize_8bit(out)


def cache_key(args, defaults) -> dict:
    """What the cached outputs depend on: the model and ablation folders (every file's SHA-256),
    the inputs, the settings, and the package's source (a code change can change an output)."""
    import asuka

    def digest(paths):
        h = hashlib.sha256()
        for path in sorted(paths):
            h.update(str(path).encode() + b"\0" + path.read_bytes())
        return h.hexdigest()

    folders = [Path(args.model), Path(args.ablations)]
    return {"models": digest(p for f in folders if f.is_dir() for p in f.rglob("*")
                             if p.is_file() and "training" not in p.parts),
            "inputs": digest(p for p in Path(args.eval_dir).iterdir() if p.is_file()),
            "settings": {"masks_per_photo": args.masks_per_photo, "mask_seed": args.mask_seed,
                         "batch_size": args.batch_size, "defaults": defaults},
            "code": digest(Path(asuka.__file__).parent.rglob("*.py"))}


def open_cache(folder, key: dict) -> None:
    """Make ``folder`` the cache for outputs made under ``key``; exit with one line if it holds
    outputs made under another (or unrecorded) key, so stale outputs are never reported."""
    if folder is None:
        return
    folder = Path(folder)
    record = folder / "cache_key.json"
    if record.is_file():
        if json.loads(record.read_text()) != json.loads(json.dumps(key)):
            sys.exit(f"--cache {folder}: its outputs were made with another model, inputs, settings or code; "
                     f"use another folder or empty it")
        return
    if folder.is_dir() and any(folder.glob("*.pt")):
        sys.exit(f"--cache {folder}: holds outputs without a record of what made them ({record.name}); "
                 f"use another folder or empty it")
    folder.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(key, indent=1))


def cached(folder, name, compute):
    """``compute()`` (images in [-1, 1] on the 8-bit grid), stored as uint8 in ``folder/name.pt``."""
    if folder is None:
        return compute()
    path = Path(folder) / f"{name}.pt"
    if path.is_file():
        return torch.load(path).float() / 127.5 - 1.0
    out = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(((out + 1) * 127.5).round().clamp(0, 255).to(torch.uint8), path)
    return out


def per_input_metrics(pred, images, masks, band) -> dict[str, np.ndarray]:
    from asuka.metrics import band_color_error, hole_psnr, pixel_metrics

    px = pixel_metrics(pred, images, masks, band=band)
    return {
        "hole_psnr": hole_psnr(pred, images, masks).numpy(),
        "ssim": px["ssim"].numpy(),
        "band_de": band_color_error(pred, images, masks, band=band).numpy(),
        "band_cast": band_color_error(pred, images, masks, band=band, reduce="mean").numpy(),
        "color_shift": px["color_shift"].numpy(),
        "boundary_grad": px["boundary_grad"].numpy(),
    }


# ------------------------------------------------------------------------------------ report
def fmt(value, spec):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "--"
    return format(value, spec)


def figure(path: Path, images, masks, outputs: dict, rows: list[int], tile: int):
    from PIL import Image, ImageDraw

    cols = ["input", "mask"] + list(outputs)
    heads = {"input": "original", "mask": "masked input", **HEADS}
    pad, top = 4, 16
    canvas = Image.new("RGB", (len(cols) * (tile + pad) + pad, top + len(rows) * (tile + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(cols):
        draw.text((pad + c * (tile + pad), 2), heads[name], fill="black")

    def to_pil(t):
        arr = ((t.clamp(-1, 1).permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
        return Image.fromarray(arr).resize((tile, tile), Image.LANCZOS)

    for r, i in enumerate(rows):
        img, m = images[i], masks[i]
        masked = img * (1 - m) + m  # white hole
        tiles = [img, masked] + [outputs[k][i] for k in outputs]
        for c, t in enumerate(tiles):
            canvas.paste(to_pil(t), (pad + c * (tile + pad), top + r * (tile + pad)))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    from scipy.stats import binomtest

    from asuka.metrics import seed_variance

    t0 = time.perf_counter()
    defaults = cli_defaults()
    wanted = args.methods.split(",")
    images, masks, names = load_eval_set(Path(args.eval_dir), args.masks_per_photo, args.mask_seed)
    n = len(images)
    hole = masks.flatten(1).mean(1)
    print(f"{n} inputs ({n // args.masks_per_photo} photos x {args.masks_per_photo} masks), "
          f"{images.shape[-1]} px, hole ratio {hole.mean():.2f} (min {hole.min():.2f}, max {hole.max():.2f}); "
          f"CLI defaults {defaults}", flush=True)
    pipes = load_pipelines(args)
    working = pipes["main"].working_resolution
    if defaults["steps"] is None:  # the CLI's default: the model's own default_steps
        defaults["steps"] = pipes["main"].default_num_inference_steps
    if defaults["resolution"] is None:  # the CLI's default: the model's own working side
        defaults["resolution"] = working

    open_cache(args.cache, cache_key(args, defaults))
    outputs, seeds_out, timings = {}, {}, {}
    blend = pipes["main"].seam_fade(defaults["poisson_blend"])
    for key, _, cond, dec, aligner, method_blend in METHODS:
        if key not in wanted or (method_blend is False and blend is None):
            continue  # (without blending = the ASUKA row when the model blends by default)
        t = time.perf_counter()
        if key == "membrane":  # the blending at the output size with nothing to blend: fade in output px
            if blend is None:
                continue
            outputs[key] = membrane_fill(images, masks, blend * images.shape[-1] / working)
        elif cond is None:
            outputs[key] = opencv_inpaint(images, masks, key)
        else:
            pipe = pipes.get("noaug" if dec == "noaug" else aligner)
            if pipe is None:
                print(f"  {key}: skipped (no ablation folder in {args.ablations})")
                continue
            decoder = "vae" if dec == "vae" else "asuka"
            runs = args.seeds if key in ("asuka", "no_mae") else 1
            samples = [cached(args.cache, f"{key}_seed{defaults['seed'] + s}", lambda s=s: run_cli_like(
                pipe, images, masks, condition=cond, decoder=decoder, seed=defaults["seed"] + s, defaults=defaults,
                batch_size=args.batch_size, poisson_blend=method_blend)) for s in range(runs)]
            outputs[key] = samples[0]
            if runs > 1:
                seeds_out[key] = torch.stack(samples)
        timings[key] = time.perf_counter() - t
        print(f"  {key}: {timings[key]:.1f} s", flush=True)

    per_input = {k: per_input_metrics(v, images, masks, args.band) for k, v in outputs.items()}
    results = {}
    for key, m in per_input.items():
        results[key] = {name: float(np.nanmean(v)) for name, v in m.items()}
        results[key]["seconds_per_input"] = timings[key] / n / (args.seeds if key in seeds_out else 1)

    checks = {"n_inputs": n}
    if "asuka" in seeds_out and "no_mae" in seeds_out:
        sv_p = seed_variance(seeds_out["asuka"], masks).numpy()
        sv_n = seed_variance(seeds_out["no_mae"], masks).numpy()
        wins = int((sv_p < sv_n).sum())
        checks.update(seed_var_prior=float(sv_p.mean()), seed_var_null=float(sv_n.mean()),
                      seed_var_prior_lower=wins,
                      seed_var_sign_test_p=float(binomtest(wins, n, 0.5, alternative="greater").pvalue))
        results["asuka"]["seed_var"], results["no_mae"]["seed_var"] = float(sv_p.mean()), float(sv_n.mean())
    # paired comparisons of ASUKA against each classical method, per input
    for ref in ("membrane", "telea", "ns"):
        if "asuka" in per_input and ref in per_input:
            a, r = per_input["asuka"], per_input[ref]
            checks[f"asuka_vs_{ref}"] = {
                "hole_psnr_higher": int((a["hole_psnr"] > r["hole_psnr"]).sum()),
                "ssim_higher": int((a["ssim"] > r["ssim"]).sum()),
                "band_de_lower": int((a["band_de"] < r["band_de"]).sum()),
            }
    if args.fid:
        from asuka.metrics import composite, load_feature_extractor
        from asuka.metrics.distribution import fid_from_features, inception_discriminative_scores

        extractor = load_feature_extractor("tf2015")
        with torch.no_grad():
            real = torch.cat([extractor(images[i:i + 16]) for i in range(0, n, 16)]).numpy()
            for key, out in outputs.items():
                comp = composite(out, images, masks)
                fake = torch.cat([extractor(comp[i:i + 16]) for i in range(0, n, 16)]).numpy()
                results[key]["fid"] = fid_from_features(real, fake)
                results[key]["u_ids"], results[key]["p_ids"] = inception_discriminative_scores(
                    real, fake, pca_dim=args.ids_pca_dim)
    for key, row in results.items():
        print(f"  {key}: " + ", ".join(f"{k}={v:.4g}" for k, v in row.items()))
    print(f"  checks: {checks}")

    wall = time.perf_counter() - t0
    rows = [i * args.masks_per_photo + (i % args.masks_per_photo)
            for i in range(min(args.figure_rows, n // args.masks_per_photo))]
    figure(Path(args.figure), images, masks, outputs, rows, args.tile)
    write_report(args, results, checks, defaults, n, hole, working, wall, blend)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"results": results, "checks": checks, "cli_defaults": defaults,
                                           "settings": vars(args), "wall_s": wall,
                                           "per_input": {k: {m: v.tolist() for m, v in d.items()}
                                                         for k, d in per_input.items()},
                                           "names": names}, indent=1, default=str))
    print(f"wrote {args.out}, {args.figure}, {args.json} ({wall:.0f} s)")
    return 0


def write_report(args, results, checks, defaults, n, hole, working, wall, blend):
    out = Path(args.out)
    rel = os.path.relpath(args.figure, out.parent)
    lines = [
        "| method | PSNR in the hole (dB) ↑ | SSIM ↑ | band colour error ΔE00 ↓ | band colour cast ΔE00 ↓ | "
        "boundary colour shift ΔE00 | boundary grad ↓ | seed variance (×1e-3) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, label, *_ in METHODS:
        if key not in results:
            continue
        r = results[key]
        sv = r.get("seed_var")
        lines.append(f"| {label} | {fmt(r['hole_psnr'], '.2f')} | {fmt(r['ssim'], '.4f')} | {fmt(r['band_de'], '.2f')} | "
                     f"{fmt(r['band_cast'], '.2f')} | {fmt(r['color_shift'], '+.2f')} | {fmt(r['boundary_grad'], '.2f')} | "
                     f"{fmt(sv * 1e3 if sv is not None else None, '.3f')} |")
    paired = []
    for ref, name in (("membrane", "the seam blending of an empty fill"), ("telea", "Telea"), ("ns", "Navier-Stokes")):
        c = checks.get(f"asuka_vs_{ref}")
        if c:
            paired.append(f"* ASUKA vs {name}, per input (of {n}): PSNR in the hole higher on {c['hole_psnr_higher']}, "
                          f"SSIM higher on {c['ssim_higher']}, band colour error lower on {c['band_de_lower']}.")
    if "seed_var_prior" in checks:
        paired.append(f"* Seed variance, MAE prior vs null condition (same decoder, {args.seeds} seeds): mean "
                      f"{checks['seed_var_prior'] * 1e3:.3f} vs {checks['seed_var_null'] * 1e3:.3f} (×1e-3); the prior "
                      f"is lower on {checks['seed_var_prior_lower']} of {n} inputs (one-sided sign test "
                      f"p = {checks['seed_var_sign_test_p']:.2g}).")
    body = TEMPLATE.format(table="\n".join(lines), n=n, photos=n // args.masks_per_photo, k=args.masks_per_photo,
                           model=os.path.relpath(args.model, ROOT) if Path(args.model).is_relative_to(ROOT) else args.model,
                           mask_seed=args.mask_seed, hole=float(hole.mean()), hmin=float(hole.min()),
                           hmax=float(hole.max()), figure=rel, wall=wall, band=args.band, working=working,
                           steps=defaults["steps"], seed=defaults["seed"], margin=defaults["crop_margin"],
                           seeds=args.seeds, paired="\n".join(paired),
                           blend="no seam blending (the model has no `default_poisson_blend`)" if blend is None else
                           f"Poisson seam blending of the hole at the working size and then at the output size "
                           f"(the model's `default_poisson_blend`: fade {blend:g} working px; not in the paper, see "
                           f"`asuka.seams`) "
                           f"for every learned method but the row *without seam blending*")
    marker = "<!-- small-model-report -->"
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.is_file() and marker in out.read_text():
        head = out.read_text().split(marker)[0]
        out.write_text(head + marker + "\n" + body)
    else:
        out.write_text("# Results\n\n" + marker + "\n" + body)


TEMPLATE = """## The small ASUKA on held-out photographs at 512 px

Generated by `python scripts/small_model_report.py` (model: `{model}`, see its
`MODEL_CARD.md`). Inputs: the {photos} held-out photos of `data/photos/eval/512` (never cropped
for training, see `data/README.md`) x {k} MISATO-style masks each
(`asuka.masks.misato_eval_mixture`, mask seed {mask_seed}) = **{n} inputs** of 512 x 512, mean
hole ratio {hole:.2f} ({hmin:.2f}-{hmax:.2f}). Every learned method runs as `asuka inpaint`
with its defaults: crop mode (margin {margin} px) at the model's working resolution
({working} px; a larger region is resized down, inpainted, resized back and pasted), DDIM
{steps} step(s) (the model's default), no guidance, seed {seed}, {blend}, known pixels pasted back,
8-bit output. OpenCV
runs at 512 px; the seam blending of an empty fill (`asuka.baselines.membrane_fill`) is the same
blending at 512 px with no model (over the fade the surroundings' edges continued, inside a
smooth membrane), the fade scaled to 512 px. Metrics on the composite: PSNR over the hole pixels; SSIM of the grey image;
band colour error = mean CIEDE2000 to the ground truth over the hole pixels within {band} px of
the known region, band colour cast = CIEDE2000 between the band's mean colours; boundary
colour shift / gradient as in `asuka.metrics`. Seed variance: per-pixel variance in the hole
across {seeds} seeds ([0, 1] scale).

{table}

{paired}

![input, masked input, then each method (composites), one mask per held-out photo]({figure})

Evaluation wall time: {wall:.0f} s on the shared 2-core CPU (with `--cache`, outputs of an
earlier run are reused); `benchmarks/bench_default_model.py` is the speed measurement.
"""

if __name__ == "__main__":
    sys.exit(main())
