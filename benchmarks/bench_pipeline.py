"""ASUKA's pipeline vs diffusers' stock StableDiffusionInpaintPipeline: time and memory.

Both pipelines share the *same* UNet, VAE and scheduler config (random weights: the real ones
cannot be downloaded here) and run the same number of steps without classifier-free guidance
(ASUKA used none), in one process. The stock pipeline gets its condition as ``prompt_embeds``
(no text encoder needed).

Prints, per size (``tiny``: the test components at 64 px; ``full``: the SD-1.5-inpainting
architecture at 512x512 with the full MAE, aligner and decoder):

* one whole inference of each pipeline and their ratio;
* each part separately: MAE prior, aligner, VAE encode of the masked image, one UNet step,
  ASUKA decoder, VAE decode -- and from these the cost of a ``--ratio-steps`` (25) step
  inference of each pipeline and the ratio (target: ASUKA <= 1.15 x stock);
* peak RSS of the process (CPU) or peak CUDA memory (GPU; fp16 by default there).

    python benchmarks/bench_pipeline.py                         # tiny, then full with 2 steps
    python benchmarks/bench_pipeline.py --size full --steps 2 --threads 2
    python benchmarks/bench_pipeline.py --size tiny --steps 25 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time


def _peak_rss_gb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**30 if sys.platform == "darwin" else peak / 2**20  # bytes on macOS, KiB on Linux


def build(size: str, device, dtype, seed: int = 0):
    """(ASUKA pipeline, stock pipeline) sharing UNet, VAE and scheduler."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel

    from asuka.models.aligner import AsukaAligner
    from asuka.models.decoder import MaskConditionedDecoder
    from asuka.models.mae import MAEPrior
    from asuka.pipeline import AsukaInpaintPipeline, cast_floating
    from asuka.testing import sd15_scheduler_config, sd15_unet_config, sd15_vae_config, tiny_components

    if size == "tiny":
        components = tiny_components(seed)
    else:
        torch.manual_seed(seed)
        vae = AutoencoderKL(**sd15_vae_config())
        components = dict(
            mae=MAEPrior.from_preset("full"), aligner=AsukaAligner.from_preset("full"),
            unet=UNet2DConditionModel(**sd15_unet_config()), vae=vae,
            scheduler=DDIMScheduler.from_config(sd15_scheduler_config()),
            decoder=MaskConditionedDecoder.from_autoencoder_kl(vae, seed=seed + 1),
        )
    for name, module in components.items():
        if isinstance(module, torch.nn.Module):
            cast_floating(module.eval().requires_grad_(False), dtype).to(device)
    ours = AsukaInpaintPipeline(**components)
    stock = StableDiffusionInpaintPipeline(
        vae=components["vae"], text_encoder=None, tokenizer=None, unet=components["unet"],
        scheduler=DDIMScheduler.from_config(sd15_scheduler_config()), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    for pipe in (ours, stock):
        pipe.set_progress_bar_config(disable=True)
    return ours, stock


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device, repeats: int = 1):
    """Best wall time of ``repeats`` calls (seconds) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        result = fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best, result


def count_flops(ours, x, m, prior, cond, aligned, latents, unet_in, t) -> dict:
    """GFLOPs of each part, independent of machine load (torch's FlopCounterMode).

    UNet, VAE and decoder are counted on weightless ``meta`` twins built from their configs (no
    compute, no memory); the MAE prior and the aligner, whose forward has data-dependent steps,
    on the real models with the real inputs.
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    from asuka.models.decoder import MaskConditionedDecoder

    def count(fn) -> float:
        with FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops() / 1e9

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(ours.unet.config)
        vae = AutoencoderKL.from_config(ours.vae.config)
        decoder = MaskConditionedDecoder.from_config(ours.decoder.config)
        decoder._check_inputs = lambda *args: None  # its value-range check cannot run on meta tensors
        meta = {name: v.to("meta") for name, v in dict(x=x, m=m, z=latents, unet_in=unet_in, t=t, cond=cond,
                                                       aligned=aligned).items()}
        flops = dict(
            unet_step_prior_tokens=count(lambda: unet(meta["unet_in"], meta["t"],
                                                      encoder_hidden_states=meta["aligned"])),
            unet_step_77_tokens=count(lambda: unet(meta["unet_in"], meta["t"], encoder_hidden_states=meta["cond"])),
            vae_encode=count(lambda: vae.encode(meta["x"])),
            vae_decoder=count(lambda: vae.decode(meta["z"])),
            asuka_decoder=count(lambda: decoder.decode(meta["z"], meta["x"], meta["m"])),
        )
    flops["mae_prior"] = count(lambda: ours.encode_prior(x, m))
    flops["aligner"] = count(lambda: ours.aligner(prior))
    return flops


def bench(size: str, steps: int, ratio_steps: int, repeats: int, device, dtype, unet_repeats: int = 3,
          parts_only: bool = False) -> dict:
    import torch

    t0 = time.perf_counter()
    ours, stock = build(size, device, dtype)
    build_s = time.perf_counter() - t0
    rss_build = _peak_rss_gb()
    res = ours.working_resolution  # 64 tiny, 512 full
    g = torch.Generator().manual_seed(0)
    image = (torch.rand(1, 3, res, res, generator=g) * 2 - 1)
    mask = torch.zeros(1, 1, res, res)
    mask[..., res // 4: 3 * res // 4, res // 4: 3 * res // 4] = 1  # a centred square hole (25%)
    cond = ours.aligner.null(1, num_tokens=77).to(device=device, dtype=dtype).contiguous()

    def run_stock():
        return stock(image=(image + 1) / 2, mask_image=mask, prompt_embeds=cond, num_inference_steps=steps,
                     guidance_scale=1.0, height=res, width=res, output_type="pt",
                     generator=torch.Generator().manual_seed(1)).images

    def run_ours():
        return ours(image, mask, steps, generator=torch.Generator().manual_seed(1), output_type="pt").images

    with torch.inference_mode():
        stock_s = ours_s = float("nan")
        rss_stock = rss_ours = float("nan")
        if not parts_only:
            if size == "tiny" or device.type == "cuda":  # warm-up (full size on CPU: too slow to repeat)
                run_stock(), run_ours()
            stock_s, out_stock = _timed(run_stock, device, repeats)
            rss_stock = _peak_rss_gb()
            ours_s, out_ours = _timed(run_ours, device, repeats)
            rss_ours = _peak_rss_gb()
            assert out_stock.shape == out_ours.shape == (1, 3, res, res)

        # Each part on its own, with the pipeline's own helpers.
        x, m = image.to(device), mask.to(device)
        mae_s, prior = _timed(lambda: ours.encode_prior(x, m), device, repeats)
        aligner_s, aligned = _timed(lambda: ours.aligner(prior), device, repeats)
        encode_s, (mask_lat, masked_lat) = _timed(lambda: ours.prepare_mask_latents(x, m), device, repeats)
        ours.scheduler.set_timesteps(steps, device=device)
        t = ours.scheduler.timesteps[0]
        latents = torch.randn(masked_lat.shape, generator=g).to(device=device, dtype=dtype)
        unet_in = torch.cat([latents, mask_lat, masked_lat], dim=1)
        # The 25-step ratio hinges on these two: interleave them, so that load on a shared machine
        # hits both alike, and keep the best of at least three.
        unet_s = unet77_s = float("inf")
        for _ in range(max(repeats, unet_repeats)):
            unet_s = min(unet_s, _timed(lambda: ours.unet(unet_in, t, encoder_hidden_states=aligned.to(dtype)),
                                        device)[0])
            unet77_s = min(unet77_s, _timed(lambda: ours.unet(unet_in, t, encoder_hidden_states=cond), device)[0])
        asuka_dec_s, _ = _timed(lambda: ours.decode_latents(latents, x, m, decoder="asuka"), device, repeats)
        vae_dec_s, _ = _timed(lambda: ours.decode_latents(latents, x, m, decoder="vae"), device, repeats)

        flops = count_flops(ours, x, m, prior, cond, aligned.to(dtype), latents, unet_in, t)

    stock_n = encode_s + ratio_steps * unet77_s + vae_dec_s
    ours_n = mae_s + aligner_s + encode_s + ratio_steps * unet_s + asuka_dec_s
    result = dict(
        size=size, device=str(device), dtype=str(dtype).removeprefix("torch."), resolution=res, steps=steps,
        threads=torch.get_num_threads(), build_s=build_s,
        stock_s=stock_s, ours_s=ours_s, ratio=ours_s / stock_s,
        prior_tokens=int(aligned.shape[1]),
        parts_s=dict(mae_prior=mae_s, aligner=aligner_s, vae_encode=encode_s, unet_step_prior_tokens=unet_s,
                     unet_step_77_tokens=unet77_s, asuka_decoder=asuka_dec_s, vae_decoder=vae_dec_s),
        ratio_steps=ratio_steps, stock_n_s=stock_n, ours_n_s=ours_n, ratio_n=ours_n / stock_n,
        gflops=flops,
        ratio_n_flops=(flops["mae_prior"] + flops["aligner"] + flops["vae_encode"]
                       + ratio_steps * flops["unet_step_prior_tokens"] + flops["asuka_decoder"])
        / (flops["vae_encode"] + ratio_steps * flops["unet_step_77_tokens"] + flops["vae_decoder"]),
        peak_rss_gb=dict(after_build=rss_build, after_stock=rss_stock, after_ours=rss_ours),
        params_m={name: sum(p.numel() for p in getattr(ours, name).parameters()) / 1e6
                  for name in ("mae", "aligner", "unet", "vae", "decoder")},
    )
    if device.type == "cuda":
        result["peak_cuda_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def report(r: dict) -> str:
    p = r["parts_s"]
    lines = [
        f"== {r['size']} ({r['resolution']}x{r['resolution']}, {r['device']}, {r['dtype']}, "
        f"{r['threads']} threads, {r['steps']} steps) ==",
        "params (M): " + ", ".join(f"{k} {v:.1f}" for k, v in r["params_m"].items()),
        (f"whole inference: stock {r['stock_s']:.3f} s, ASUKA {r['ours_s']:.3f} s, ratio {r['ratio']:.3f}"
         if r["stock_s"] == r["stock_s"] else "whole inference: skipped (--parts-only)"),
        f"parts: MAE prior {p['mae_prior']:.3f} s | aligner {p['aligner']:.4f} s | VAE encode {p['vae_encode']:.3f} s"
        f" | UNet step {p['unet_step_prior_tokens']:.3f} s ({r['prior_tokens']} prior tokens; 77 tokens:"
        f" {p['unet_step_77_tokens']:.3f} s)"
        f" | ASUKA decoder {p['asuka_decoder']:.3f} s | VAE decoder {p['vae_decoder']:.3f} s",
        f"{r['ratio_steps']}-step estimate from parts: stock {r['stock_n_s']:.2f} s, ASUKA {r['ours_n_s']:.2f} s, "
        f"ratio {r['ratio_n']:.3f} (target <= 1.15)",
        "GFLOPs: " + ", ".join(f"{k} {v:.1f}" for k, v in r["gflops"].items()),
        f"{r['ratio_steps']}-step FLOP ratio ASUKA / stock: {r['ratio_n_flops']:.3f} (independent of machine load)",
        "peak RSS (GB): " + ", ".join(f"{k} {v:.2f}" for k, v in r["peak_rss_gb"].items() if v == v),
    ]
    if "peak_cuda_gb" in r:
        lines.append(f"peak CUDA memory: {r['peak_cuda_gb']:.2f} GB")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("tiny", "full", "both"), default="both")
    parser.add_argument("--steps", type=int, default=2, help="denoising steps of the whole-inference runs")
    parser.add_argument("--ratio-steps", type=int, default=25, help="steps of the estimate from per-part times")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timing repeats, best kept (default: 5 tiny, 1 full on CPU, 3 on CUDA)")
    parser.add_argument("--unet-repeats", type=int, default=3,
                        help="interleaved repeats of the UNet step with the prior / 77-token condition")
    parser.add_argument("--parts-only", action="store_true",
                        help="skip the whole-inference runs (per-part times and the estimate only)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", help="auto: float16 on CUDA, float32 on CPU")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: asuka.threads' choice)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    import torch

    from asuka.pipeline import resolve_device, resolve_dtype

    from asuka.threads import set_threads

    set_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    results = []
    for size in (("tiny", "full") if args.size == "both" else (args.size,)):
        repeats = args.repeats or (5 if size == "tiny" else 3 if device.type == "cuda" else 1)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        r = bench(size, args.steps, args.ratio_steps, repeats, device, dtype, args.unet_repeats, args.parts_only)
        print(report(r), flush=True)
        results.append(r)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
