"""AsukaFluxFillPipeline vs diffusers' stock FluxFillPipeline: time and memory.

Both pipelines share the *same* FluxTransformer2DModel, AutoencoderKL and scheduler config (random
weights: the real ones cannot be downloaded here) and run the same steps at the same size, in
one process, alternating (ours, stock, ours, stock, ...), best of ``--repeats``. The stock
pipeline gets its condition as ``prompt_embeds`` / ``pooled_prompt_embeds`` (no text encoders);
ours computes it from the image (MAE prior + both aligners) and decodes with the ASUKA decoder
(``ours``) or, to isolate the pipeline's own overhead, with the same VAE decoder (``ours-vae``).

    python benchmarks/bench_flux.py                       # tiny components on the CPU (default)
    python benchmarks/bench_flux.py --size full           # FLUX.1-Fill-dev architecture, bf16, CUDA:
                                                          # 512 and 1024 px, 50 steps, s/image,
                                                          # peak GPU memory, overhead vs stock
    python benchmarks/bench_flux.py --size full --px 512 --steps 4 --repeats 1

Full size needs a GPU with ~40 GB (24 GB transformer + 2 GB t5 aligner + MAE, VAE, decoder
in bf16, plus activations); ``--offload`` runs both pipelines with model CPU offload instead.
Target (issue 8): ours <= 1.05 x stock time and <= +3 GB peak memory.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time


def _peak_rss_gb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**30 if sys.platform == "darwin" else peak / 2**20


def build(size: str, device, dtype, seed: int = 0):
    """(ours, stock) sharing transformer, VAE and scheduler config."""
    import torch
    from diffusers import (AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxFillPipeline,
                           FluxTransformer2DModel)

    from asuka.architectures import flux_fill_transformer_config, flux_scheduler_config, flux_vae_config
    from asuka.models.aligner import AsukaAligner
    from asuka.models.decoder import MaskConditionedDecoder
    from asuka.models.mae import MAEPrior
    from asuka.pipeline_base import cast_floating
    from asuka.pipeline_flux import AsukaFluxFillPipeline
    from asuka.testing import tiny_flux_components

    if size == "tiny":
        parts = tiny_flux_components(seed)
    else:
        torch.manual_seed(seed)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)  # build in the target dtype: 12 B parameters
        try:
            with torch.device(device):
                parts = dict(
                    mae=MAEPrior.from_preset("full"),
                    clip_aligner=AsukaAligner.from_preset("full"),
                    t5_aligner=AsukaAligner.from_preset("full", dim=4096, null_tokens=256),
                    transformer=FluxTransformer2DModel(**flux_fill_transformer_config()),
                    vae=AutoencoderKL(**flux_vae_config()),
                    decoder=MaskConditionedDecoder.from_preset("flux"),
                )
        finally:
            torch.set_default_dtype(previous)
        parts["scheduler"] = FlowMatchEulerDiscreteScheduler.from_config(flux_scheduler_config())
    for name, module in parts.items():
        if isinstance(module, torch.nn.Module):
            cast_floating(module.eval().requires_grad_(False), dtype).to(device)
    ours = AsukaFluxFillPipeline(**parts)
    stock = FluxFillPipeline(scheduler=FlowMatchEulerDiscreteScheduler.from_config(parts["scheduler"].config),
                             vae=parts["vae"], text_encoder=None, tokenizer=None, text_encoder_2=None,
                             tokenizer_2=None, transformer=parts["transformer"])
    for pipe in (ours, stock):
        pipe.set_progress_bar_config(disable=True)
    return ours, stock


def run(args) -> None:
    import torch

    from asuka.pipeline_base import resolve_device

    device = resolve_device(args.device)
    dtype = torch.bfloat16 if (args.size == "full" and device.type == "cuda") else torch.float32
    if args.dtype:
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    torch.set_num_threads(args.threads)
    ours, stock = build(args.size, device if not args.offload else torch.device("cpu"), dtype)
    if args.offload:
        ours.enable_model_cpu_offload()
        stock.enable_model_cpu_offload()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sizes = args.px or ([64] if args.size == "tiny" else [512, 1024])
    print(f"bench_flux: size={args.size} device={device} dtype={str(dtype).removeprefix('torch.')} "
          f"steps={args.steps} repeats={args.repeats} offload={args.offload}")
    for px in sizes:
        g = torch.Generator().manual_seed(0)
        image = torch.rand(1, 3, px, px, generator=g) * 2 - 1
        mask = torch.zeros(1, 1, px, px)
        mask[..., px // 4: px // 2 + px // 8, px // 3: 2 * px // 3] = 1
        noise = torch.randn(1, 16, px // 8, px // 8, generator=g)
        with torch.no_grad():  # the stock pipeline's condition: the same one ours computes
            pooled, txt = ours.encode_condition(image.to(device), mask.to(device))

        def call_ours(decoder):
            return lambda: ours(image, mask, args.steps, latents=noise, decoder=decoder, output_type="pt",
                                resolution=px).images

        def call_stock():
            from asuka import flux

            return stock(image=(image + 1) / 2, mask_image=mask, height=px, width=px,
                         num_inference_steps=args.steps, prompt_embeds=txt, pooled_prompt_embeds=pooled,
                         latents=flux.pack_latents(noise).to(device, dtype), output_type="pt").images

        runs = {"stock": call_stock, "ours": call_ours("asuka"), "ours-vae": call_ours("vae")}
        best = {name: float("inf") for name in runs}
        peak = {name: 0.0 for name in runs}
        for _ in range(args.repeats):
            for name, fn in runs.items():  # alternating
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                sync()
                start = time.perf_counter()
                fn()
                sync()
                best[name] = min(best[name], time.perf_counter() - start)
                if device.type == "cuda":
                    peak[name] = max(peak[name], torch.cuda.max_memory_allocated() / 2**30)
        print(f"\n{px} x {px} px, {args.steps} steps (best of {args.repeats}, s/image):")
        for name in runs:
            mem = f", peak GPU {peak[name]:.2f} GB" if device.type == "cuda" else ""
            print(f"  {name:<9} {best[name]:8.3f} s  ({best[name] / best['stock']:.3f} x stock){mem}")
        if device.type == "cuda":
            print(f"  memory over stock: ours {peak['ours'] - peak['stock']:+.2f} GB, "
                  f"ours-vae {peak['ours-vae'] - peak['stock']:+.2f} GB")
    print(f"\npeak RSS {_peak_rss_gb():.2f} GB")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=("tiny", "full"), default="tiny")
    p.add_argument("--px", type=int, nargs="*", help="image sides (default: 64 tiny; 512 1024 full)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: 8 tiny, 50 full)")
    p.add_argument("--repeats", type=int, default=None, help="alternating repeats (default: 5 tiny, 2 full)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                   help="default: bfloat16 for full size on CUDA, else float32")
    p.add_argument("--offload", action="store_true", help="model CPU offload for both pipelines")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    args.steps = args.steps or (8 if args.size == "tiny" else 50)
    args.repeats = args.repeats or (5 if args.size == "tiny" else 2)
    run(args)


if __name__ == "__main__":
    main()
