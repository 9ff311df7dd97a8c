"""``asuka info [MODEL | IMAGE]``: what a pipeline folder (or hub repo) holds, without loading
weights -- or, for an image, how it was made (its recipe and watermark, :mod:`asuka.provenance`).

For each component: library and class, the config fields that matter, parameter count and
dtype (read from the safetensors headers, so a multi-GB model is described in milliseconds),
and size on disk. Without an argument: the shipped default model.
"""

from __future__ import annotations

import json
import os
import struct
import sys

# Config fields worth showing, per class; other classes show their first few scalar fields.
HIGHLIGHTS = {
    "UNet2DConditionModel": ("in_channels", "out_channels", "sample_size", "block_out_channels",
                             "cross_attention_dim", "attention_head_dim"),
    "FluxTransformer2DModel": ("in_channels", "out_channels", "num_layers", "num_single_layers",
                               "joint_attention_dim", "pooled_projection_dim", "guidance_embeds"),
    "AutoencoderKL": ("latent_channels", "block_out_channels", "scaling_factor", "shift_factor"),
    "MAEPrior": ("image_size", "patch_size", "embed_dim", "depth", "decoder_embed_dim", "decoder_depth",
                 "prior_layers"),
    "AsukaAligner": ("in_dim", "dim", "num_blocks", "head_dim", "null_tokens"),
    "MaskConditionedDecoder": ("latent_channels", "block_out_channels", "layers_per_block"),
    "CLIPTextModel": ("hidden_size", "num_hidden_layers", "vocab_size", "max_position_embeddings"),
    "CLIPTokenizer": ("model_max_length",),
    "_scheduler": ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "prediction_type",
                   "rescale_betas_zero_snr", "timestep_spacing"),
}
CONFIG_FILES = ("config.json", "scheduler_config.json", "tokenizer_config.json", "preprocessor_config.json")
SAFETENSORS_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
                     "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
DTYPE_NAMES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
               "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def register(subparsers) -> None:
    from asuka.cli.common import HelpFormatter, examples

    p = subparsers.add_parser(
        "info", help="describe a model (components, configs, parameters, size) or an output image's recipe",
        description="Describe an AsukaInpaintPipeline or AsukaFluxFillPipeline folder (or any diffusers "
        "pipeline folder / hub id / shipped model name) without loading its weights; or, given an image, print the recipe asuka "
        "embedded in it and whether it carries asuka's invisible watermark.",
        formatter_class=HelpFormatter,
        epilog=examples("asuka info", "asuka info my-asuka --json", "asuka info out.png"))
    p.add_argument("model", nargs="?", default=None,
                   help="pipeline folder, hub id, shipped model name or image file; default: the shipped "
                   "model asuka-small")
    p.add_argument("--json", action="store_true", help="print the description as JSON")
    p.set_defaults(func=run)


def read_safetensors_header(path: str) -> dict:
    """The tensor table of a ``.safetensors`` file: name -> {dtype, shape, data_offsets}."""
    from asuka.errors import CheckpointError

    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > 100_000_000:
                raise ValueError(f"header length {length} is implausible")
            header = json.loads(f.read(length))
    except (OSError, ValueError, struct.error) as exc:
        raise CheckpointError(f"cannot read the safetensors header of {path}: {exc}") from None
    header.pop("__metadata__", None)
    return header


def _tensor_stats(headers: list[dict]) -> tuple[int, list[str]]:
    count, dtypes = 0, {}
    for header in headers:
        for entry in header.values():
            n = 1
            for d in entry["shape"]:
                n *= d
            count += n
            dtypes[entry["dtype"]] = dtypes.get(entry["dtype"], 0) + n
    names = [DTYPE_NAMES.get(k, k.lower()) for k, _ in sorted(dtypes.items(), key=lambda kv: -kv[1])]
    return count, names


def _highlights(class_name: str, config: dict) -> dict:
    keys = HIGHLIGHTS.get(class_name) or (HIGHLIGHTS["_scheduler"] if class_name.endswith("Scheduler") else None)
    if keys:
        return {k: config[k] for k in keys if k in config}
    scalars = {k: v for k, v in config.items()
               if not k.startswith("_") and isinstance(v, (int, float, str, bool))}
    return dict(list(scalars.items())[:5])


def describe_folder(root: str) -> dict:
    """Description of a local pipeline folder (see :func:`run` for the fields)."""
    from asuka.errors import CheckpointError, InputError

    if not os.path.isdir(root):
        raise InputError(f"model folder not found: {root}")
    index_path = os.path.join(root, "model_index.json")
    if not os.path.isfile(index_path):
        raise CheckpointError(f"{root} is not a pipeline folder (no model_index.json)")
    try:
        with open(index_path) as f:
            index = json.load(f)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {index_path}: {exc}") from None

    components = {}
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list) or len(value) != 2:
            continue
        library, class_name = value
        entry = {"library": library, "class": class_name}
        folder = os.path.join(root, name)
        if library is None:
            entry["absent"] = True
        elif os.path.isdir(folder):
            config = {}
            for config_name in CONFIG_FILES:
                path = os.path.join(folder, config_name)
                if os.path.isfile(path):
                    try:
                        with open(path) as f:
                            config = json.load(f)
                    except (OSError, ValueError) as exc:
                        raise CheckpointError(f"cannot read {path}: {exc}") from None
                    break
            files = [os.path.join(dp, fn) for dp, _, fns in os.walk(folder) for fn in fns]
            weights = [p for p in files if p.endswith(".safetensors")]
            entry["config"] = _highlights(class_name, config)
            entry["bytes"] = sum(os.path.getsize(p) for p in files)
            if weights:
                entry["parameters"], entry["dtypes"] = _tensor_stats([read_safetensors_header(p) for p in weights])
            elif any(p.endswith((".bin", ".pt", ".pth", ".ckpt")) for p in files):
                entry["parameters"], entry["dtypes"] = None, ["(pickle weights: not inspected)"]
        else:
            entry["missing"] = True
        components[name] = entry
    total_bytes = sum(os.path.getsize(os.path.join(dp, fn)) for dp, _, fns in os.walk(root) for fn in fns)
    return {"model": root, "pipeline": index.get("_class_name"), "diffusers_version": index.get("_diffusers_version"),
            "default_steps": index.get("default_steps"), "default_resolution": index.get("default_resolution"),
            "default_poisson_blend": index.get("default_poisson_blend"),
            "components": components, "parameters": sum(c.get("parameters") or 0 for c in components.values()),
            "bytes": total_bytes}


def describe_hub(repo_id: str) -> dict:
    """Description of a hub repo: configs are downloaded, weights only through their headers."""
    from asuka.errors import CheckpointError

    try:
        from huggingface_hub import HfApi, snapshot_download

        local = snapshot_download(repo_id, allow_patterns=["model_index.json", "*/*.json"])
        description = describe_folder(local)
        api = HfApi()
        info = api.model_info(repo_id, files_metadata=True)
        sizes = {s.rfilename: (s.size or 0) for s in info.siblings}
        meta = api.get_safetensors_metadata(repo_id)
    except CheckpointError:
        raise
    except Exception as exc:  # offline, unknown repo, gated repo: one line, no traceback
        raise CheckpointError(f"cannot describe hub repo {repo_id}: {str(exc).strip().splitlines()[0]}") from None
    for name, entry in description["components"].items():
        if entry.get("absent"):
            continue
        entry.pop("missing", None)
        entry["bytes"] = sum(size for f, size in sizes.items() if f.startswith(name + "/"))
        files = [m for f, m in meta.files_metadata.items() if f.startswith(name + "/")]
        if files:
            counts = {}
            for m in files:
                for dtype, n in m.parameter_count.items():
                    counts[dtype] = counts.get(dtype, 0) + n
            entry["parameters"] = sum(counts.values())
            entry["dtypes"] = [DTYPE_NAMES.get(k, k.lower()) for k in sorted(counts, key=lambda k: -counts[k])]
    description.update(model=repo_id, bytes=sum(sizes.values()),
                       parameters=sum(c.get("parameters") or 0 for c in description["components"].values()))
    return description


def _human(n: float, unit: str = "") -> str:
    for suffix in ("", "K", "M", "G", "T"):
        if abs(n) < 1000 or suffix == "T":
            return f"{n:.0f}{suffix}{unit}" if suffix == "" else f"{n:.1f}{suffix}{unit}"
        n /= 1000.0
    return str(n)


def format_description(d: dict) -> str:
    lines = [f"model: {d['model']}  ({d.get('pipeline') or 'unknown pipeline'}, "
             f"saved with diffusers {d.get('diffusers_version') or '?'})"]
    if d.get("default_steps"):
        lines.append(f"  default steps: {d['default_steps']} (model_index.json; --steps overrides)")
    if d.get("default_resolution"):
        lines.append(f"  working resolution: {d['default_resolution']} px (model_index.json default_resolution; "
                     "--resolution overrides)")
    if d.get("default_poisson_blend") is not None:
        lines.append(f"  seam blending: Poisson, fade {d['default_poisson_blend']:g} px (model_index.json "
                     "default_poisson_blend; --no-poisson-blend turns it off)")
    for name, c in d["components"].items():
        cls = f"{c['library']}.{c['class']}" if c.get("library") else "-"
        if c.get("absent"):
            lines.append(f"  {name:<13} (none)")
            continue
        if c.get("missing"):
            lines.append(f"  {name:<13} {cls:<36} MISSING folder")
            continue
        params = "-" if c.get("parameters") is None else _human(c["parameters"]) + " params"
        dtypes = "/".join(c.get("dtypes", [])) or "-"
        size = _human(c.get("bytes", 0), "B")
        lines.append(f"  {name:<13} {cls:<36} {params:>14}  {dtypes:<9} {size:>8}")
        if c.get("config"):
            lines.append("                " + " ".join(f"{k}={v}" for k, v in c["config"].items()))
    lines.append(f"total: {_human(d['parameters'])} params, {_human(d['bytes'], 'B')} on disk")
    return "\n".join(lines)


def format_provenance(found: dict) -> str:
    lines = [f"image: {found['file']}  ({found['format']}, {found['size'][0]}x{found['size'][1]})"]
    recipe = found["recipe"]
    if recipe is None:
        lines.append("recipe: none (not written by asuka, or its metadata was stripped)")
    else:
        lines.append("recipe:")
        lines += [f"  {k:<20} {v}" for k, v in recipe.items()]
    watermark = found["watermark"]
    lines.append("watermark: " + ("not checked (install invisible-watermark, see README)" if watermark is None
                                  else "asuka (synthetic)" if watermark else "none found"))
    return "\n".join(lines)


def _is_image_file(path: str) -> bool:
    from asuka.io import IMAGE_SUFFIXES

    return os.path.isfile(path) and os.path.splitext(path)[1].lower() in IMAGE_SUFFIXES


def _print(description: dict, as_json: bool, formatter) -> None:
    if as_json:
        json.dump(description, sys.stdout, indent=2, default=str)
        print()
    else:
        print(formatter(description))


def run(args) -> int:
    from asuka.registry import resolve_model

    if args.model is not None and _is_image_file(args.model):
        from asuka.provenance import read_provenance

        _print(read_provenance(args.model), args.json, format_provenance)
        return 0
    model = resolve_model(args.model)
    if os.path.exists(model):
        description = describe_folder(model)
    elif os.path.isabs(model) or model.startswith((".", "~")) or model.count("/") != 1:
        from asuka.errors import InputError

        raise InputError(f"model folder not found: {model} (nor is it a hub id of the form owner/name)")
    else:
        description = describe_hub(model)
    _print(description, args.json, format_description)
    return 0
