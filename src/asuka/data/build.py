"""Build a MISATO-style benchmark from a folder of images.

MISATO's recipe (per source dataset): CLIP image features, ``BisectingKMeans`` into K clusters,
keep the image nearest each cluster centre, centre-crop and resize it, draw a mask from the
evaluation mixture (the training mix without rectangles, hole ratio [0.2, 0.8]) and, for COCO
images, cut the annotated foreground objects out of the hole so that only background is
inpainted. :func:`build_benchmark` does exactly that and writes::

    OUT/<size>/image/NNNN.png   OUT/<size>/mask/NNNN.png (255 = hole; 00NNNN.png at 1024)
    OUT/<size>/manifest.json    (per image: source file, cluster, mask generator, ratio, ...)

Domains are built one call each with ``start_index`` (0, 500, 1000, 1500 for MISATO's order);
the calls merge into one manifest.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from asuka.errors import InputError

#: ``embed_fn(images: list of RGB PIL images) -> (len(images), D)`` array or tensor.
EmbedFn = Callable[[list], "np.ndarray"]

_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
DEFAULT_EMBEDDER = "open_clip:ViT-B-32/laion2b_s34b_b79k"
MANIFEST = "manifest.json"


# ------------------------------------------------------------------------------------- inputs


def list_source_images(folder: str | os.PathLike) -> list[str]:
    """Image files under ``folder`` (recursive), as sorted ``/``-separated relative paths."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"image folder not found: {root}")
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath, f).relative_to(root).as_posix() for f in filenames
                  if f.lower().endswith(_IMAGE_EXTS) and not f.startswith(".")]
    if not found:
        raise InputError(f"image folder {root} has no images ({', '.join(_IMAGE_EXTS)})")
    return sorted(found)


def load_embeddings(path: str | os.PathLike, names: Sequence[str]) -> np.ndarray:
    """Precomputed embeddings for ``names`` (relative paths, as :func:`list_source_images`).

    ``.npy``: an ``(N, D)`` array in the sorted order of the image files. ``.npz``: arrays
    ``embeddings`` ``(M, D)`` and ``names`` ``(M,)`` -- relative paths, file names or stems --
    matched to the images; every image needs one.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"embeddings file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(f"cannot read embeddings {path}: {exc}") from None
    if path.suffix == ".npz":
        if "embeddings" not in data or "names" not in data:
            raise InputError(f"{path}: an .npz needs arrays 'embeddings' (N, D) and 'names' (N,), has {sorted(data.files)}")
        emb, keys = data["embeddings"], [str(k) for k in data["names"]]
        if len(keys) != len(emb):
            raise InputError(f"{path}: {len(keys)} names for {len(emb)} embeddings")
        index = {}
        for i, key in enumerate(keys):
            index.setdefault(key, i)
        rows, missing = [], []
        for name in names:
            cands = (name, os.path.basename(name), os.path.splitext(os.path.basename(name))[0])
            hit = next((index[c] for c in cands if c in index), None)
            (missing.append(name) if hit is None else rows.append(hit))
        if missing:
            raise InputError(f"{path}: no embedding for {len(missing)} of {len(names)} images: "
                             + ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else ""))
        emb = emb[rows]
    else:
        emb = data
        if len(emb) != len(names):
            raise InputError(f"{path}: {len(emb)} embeddings for {len(names)} images (an .npy must follow "
                             "the sorted image list; use an .npz with 'names' otherwise)")
    emb = np.asarray(emb, dtype=np.float64)
    if emb.ndim != 2 or not np.isfinite(emb).all():
        raise InputError(f"{path}: embeddings must be a finite (N, D) array, got shape {emb.shape}")
    return emb


# ---------------------------------------------------------------------------------- embedders


def make_embedder(spec: str = DEFAULT_EMBEDDER, *, device: str = "cpu") -> EmbedFn:
    """A CLIP image embedder from a spec string.

    * ``open_clip:ARCH/PRETRAINED`` -- ``open_clip.create_model_and_transforms(ARCH,
      pretrained=PRETRAINED)``; PRETRAINED is a tag (e.g. ``laion2b_s34b_b79k``, from the hub)
      or a local checkpoint file; ``open_clip:hf-hub:ORG/NAME`` loads a hub model directly.
    * ``transformers:MODEL`` -- ``CLIPVisionModelWithProjection`` and ``CLIPImageProcessor``
      ``.from_pretrained(MODEL)`` (hub id such as ``openai/clip-vit-base-patch32`` or a local
      folder); the embedding is ``image_embeds``.
    """
    import torch

    kind, _, rest = spec.partition(":")
    if kind == "open_clip" and rest:
        if rest.startswith("hf-hub:"):
            arch, pretrained = rest, None
        else:
            arch, _, pretrained = rest.partition("/")
            pretrained = pretrained or None
        try:
            import open_clip
        except ImportError:
            raise InputError("the open_clip embedder needs open_clip_torch (pip install 'asuka[clip]')") from None
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained, device=device)
        except Exception as exc:  # unknown arch/tag, offline hub, bad checkpoint
            raise InputError(f"cannot load open_clip model {arch!r} (pretrained {pretrained!r}): {exc}; "
                             "or pass precomputed --embeddings") from None
        model.eval()

        @torch.no_grad()
        def embed(images):
            x = torch.stack([preprocess(im) for im in images]).to(device)
            return model.encode_image(x).float().cpu().numpy()

        return embed
    if kind == "transformers" and rest:
        try:
            from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

            model = CLIPVisionModelWithProjection.from_pretrained(rest).to(device).eval()
            processor = CLIPImageProcessor.from_pretrained(rest)
        except Exception as exc:  # missing files, offline hub, wrong model type
            raise InputError(f"cannot load transformers CLIP model {rest!r}: {exc}; "
                             "or pass precomputed --embeddings") from None

        @torch.no_grad()
        def embed(images):
            pixels = processor(images=images, return_tensors="pt")["pixel_values"].to(device)
            return model(pixel_values=pixels).image_embeds.float().cpu().numpy()

        return embed
    raise InputError(f"embedder must be 'open_clip:ARCH/PRETRAINED' or 'transformers:MODEL', got {spec!r}")


def compute_embeddings(folder: Path, names: Sequence[str], embed_fn: EmbedFn, *, batch_size: int = 32,
                       progress: bool = False) -> np.ndarray:
    """Run ``embed_fn`` over the images in batches; returns ``(N, D)`` float64."""
    from asuka.io import load_image

    batches = range(0, len(names), batch_size)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="embedding", unit="batch")
    out = []
    for start in batches:
        images = [load_image(folder / n) for n in names[start:start + batch_size]]
        feats = embed_fn(images)
        feats = feats.detach().cpu().numpy() if hasattr(feats, "detach") else np.asarray(feats)
        if feats.ndim != 2 or len(feats) != len(images):
            raise InputError(f"embed_fn must return ({len(images)}, D) features, got shape {feats.shape}")
        out.append(feats.astype(np.float64))
    return np.concatenate(out)


# -------------------------------------------------------------------------------- selection


def select_representatives(embeddings: np.ndarray, clusters: int, seed: int) -> list[dict]:
    """Bisecting k-means on L2-normalised embeddings; the member nearest each centre.

    Returns one dict per cluster, ordered by the chosen image's index:
    ``{"index", "cluster", "cluster_size", "distance"}``.
    """
    from sklearn.cluster import BisectingKMeans

    n = len(embeddings)
    if not 1 <= clusters <= n:
        raise InputError(f"--clusters must be between 1 and the number of images ({n}), got {clusters}")
    x = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    if clusters == 1:
        labels, centres = np.zeros(n, int), x.mean(0, keepdims=True)
    else:
        km = BisectingKMeans(n_clusters=clusters, random_state=seed).fit(x)
        labels, centres = km.labels_, km.cluster_centers_
    chosen = []
    for c in range(clusters):
        members = np.flatnonzero(labels == c)
        if members.size == 0:  # cannot happen with bisecting k-means, but never silently drop one
            raise InputError(f"cluster {c} is empty; use fewer clusters")
        d = np.linalg.norm(x[members] - centres[c], axis=1)
        best = int(np.argmin(d))
        chosen.append({"index": int(members[best]), "cluster": c, "cluster_size": int(members.size),
                       "distance": float(d[best])})
    return sorted(chosen, key=lambda r: r["index"])


def center_square(img, size: int, *, resample=None):
    """Centre-crop a PIL image to a square and resize it to ``size`` x ``size``."""
    from PIL import Image

    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    crop = img.crop((left, top, left + s, top + s))
    if resample is None:
        resample = Image.LANCZOS if s >= size else Image.BICUBIC
    return crop.resize((size, size), resample)


def _objects_at_size(objects: np.ndarray, size: int, dilation: int) -> np.ndarray:
    """Foreground mask cropped and resized like the image: any covered pixel counts, then dilated."""
    import cv2
    from PIL import Image

    small = np.asarray(center_square(Image.fromarray(objects.astype(np.uint8) * 255), size, resample=Image.BOX)) > 0
    if dilation > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilation + 1, 2 * dilation + 1))
        small = cv2.dilate(small.astype(np.uint8), kernel) > 0
    return small.astype(np.float32)


# ------------------------------------------------------------------------------------- build


def build_benchmark(
    images: str | os.PathLike,
    output: str | os.PathLike,
    *,
    clusters: int,
    size: int = 512,
    seed: int = 0,
    embed_fn: EmbedFn | None = None,
    embedder: str | None = None,
    embeddings: str | os.PathLike | np.ndarray | None = None,
    coco_annotations=None,
    mix="misato-eval",
    shapes=None,
    start_index: int = 0,
    object_dilation: int = 3,
    batch_size: int = 32,
    device: str = "cpu",
    overwrite: bool = False,
    progress: bool = False,
) -> dict:
    """Build a MISATO-style benchmark of ``clusters`` images from the folder ``images``.

    Embeddings come from exactly one of ``embeddings`` (an ``.npy``/``.npz`` path, see
    :func:`load_embeddings`, or an ``(N, D)`` array in sorted file order), ``embed_fn``
    (``list of PIL images -> (B, D)``) or ``embedder`` (a :func:`make_embedder` spec; the
    default when none is given). ``mix``: mask mixture name or :class:`~asuka.masks.MaskMixture`
    (default: MISATO's evaluation mix). Mask ``i`` uses :func:`asuka.masks.rng_for`
    ``(seed, i)``. With ``coco_annotations`` (a COCO instances json; images matched by file
    name), the chosen image's annotated objects, dilated by ``object_dilation`` px, are removed
    from the hole (``mask * (1 - objects)``); the mask is redrawn (up to 20 times) while the
    remaining hole is below the mix's lower ratio bound. Returns the manifest dict.
    """
    from asuka.io import load_image, save_image
    from asuka.masks import CocoAnnotations, MaskMixture, get_mixture, rng_for
    from asuka.masks.writer import mask_to_png

    src = Path(images)
    names = list_source_images(src)
    if not 1 <= clusters <= len(names):
        raise InputError(f"--clusters must be between 1 and the number of images ({len(names)} in {src}), "
                         f"got {clusters}")
    if size < 8 or start_index < 0 or object_dilation < 0:
        raise InputError(f"need size >= 8, start_index >= 0, object_dilation >= 0; got {size}, {start_index}, "
                         f"{object_dilation}")
    given = [k for k, v in (("embeddings", embeddings), ("embed_fn", embed_fn), ("embedder", embedder)) if v is not None]
    if len(given) > 1:
        raise InputError(f"give only one of embeddings / embed_fn / embedder, got {', '.join(given)}")
    mixture = mix if isinstance(mix, MaskMixture) else get_mixture(mix, shapes=shapes)
    coco = None
    if coco_annotations is not None:
        coco = coco_annotations if isinstance(coco_annotations, CocoAnnotations) else CocoAnnotations.load(coco_annotations)

    # 1. where the outputs go; refuse to overwrite before any expensive work
    base = Path(output) / str(size)
    prefix = "00" if size == 1024 else ""
    image_dir, mask_dir = base / "image", base / "mask"
    manifest_path = base / MANIFEST
    previous = {"entries": []}
    if manifest_path.exists():
        try:
            previous = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            if not overwrite:
                raise InputError(f"{manifest_path} is not readable JSON; use --overwrite or another folder") from None
    out_names = [f"{start_index + j:04d}" for j in range(clusters)]
    clash = [n for n in out_names if (image_dir / f"{n}.png").exists() or (mask_dir / f"{prefix}{n}.png").exists()]
    if clash and not overwrite:
        raise InputError(f"{len(clash)} output file(s) already exist in {base} (e.g. image/{clash[0]}.png); "
                         "use --overwrite, another folder or another --start-index")

    # 2. embeddings
    if isinstance(embeddings, np.ndarray):
        if embeddings.ndim != 2 or len(embeddings) != len(names):
            raise InputError(f"embeddings array must be ({len(names)}, D), got {embeddings.shape}")
        emb, emb_desc = embeddings.astype(np.float64), "array"
    elif embeddings is not None:
        emb, emb_desc = load_embeddings(embeddings, names), f"file:{embeddings}"
    else:
        if embed_fn is None:
            embedder = embedder or DEFAULT_EMBEDDER
            embed_fn = make_embedder(embedder, device=device)
        emb_desc = embedder or getattr(embed_fn, "__name__", "embed_fn")
        emb = compute_embeddings(src, names, embed_fn, batch_size=batch_size, progress=progress)

    # 3. clusters and their representatives
    chosen = select_representatives(emb, clusters, seed)

    # 4. images and masks
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    lo = mixture.ratio_range[0] if mixture.ratio_range else 0.0
    entries = []
    items = list(zip(out_names, chosen))
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc="writing", unit="image")
    for out_name, pick in items:
        source = names[pick["index"]]
        img = load_image(src / source)
        square = center_square(img, size)
        objects, fg = None, None
        if coco is not None:
            full = coco.objects_mask(source)
            if full is not None:
                if full.shape != (img.size[1], img.size[0]):
                    raise InputError(f"COCO annotations give {source} the size {full.shape[1]}x{full.shape[0]}, "
                                     f"the file is {img.size[0]}x{img.size[1]}")
                objects = _objects_at_size(full, size, object_dilation)
                fg = float(objects.mean())
        rng = rng_for(seed, int(out_name))
        best = None
        for attempt in range(20 if objects is not None else 1):
            draw = mixture.sample(size, size, rng)
            hole = draw.mask if objects is None else draw.mask * (1.0 - objects)
            ratio = float(hole.mean())
            if best is None or ratio > best[2]:
                best = (draw, hole, ratio, attempt)
            if ratio >= lo and ratio > 0:
                break
        draw, hole, ratio, attempt = best
        save_image(square, image_dir / f"{out_name}.png")
        mask_to_png(hole, mask_dir / f"{prefix}{out_name}.png")
        entry = {"name": out_name, "source": source, **pick, "generator": draw.generator,
                 "params": draw.to_json()["params"], "ratio": round(ratio, 6),
                 "upscaled": min(img.size) < size}
        if coco is not None:
            entry.update({"foreground": None if fg is None else round(fg, 6),
                          "ratio_before_removal": round(draw.ratio, 6), "mask_redraws": attempt,
                          "below_ratio_range": ratio < lo})
        entry["source_index"] = entry.pop("index")
        entries.append(entry)

    # 5. manifest (merged with earlier builds into the same folder)
    build = {"images": str(src), "n_images": len(names), "clusters": clusters, "seed": seed,
             "start_index": start_index, "embeddings": emb_desc, "mix": mixture.name,
             "shapes": None if mixture.shapes is None else mixture.shapes.name,
             "coco_annotations": None if coco is None else coco.source, "object_dilation": object_dilation,
             "clustering": "sklearn BisectingKMeans on L2-normalised embeddings; nearest member to each centre",
             "crop": "centre square, resized (Lanczos)"}
    new = {e["name"] for e in entries}
    kept = [e for e in previous.get("entries", []) if e.get("name") not in new]
    builds = [b for b in previous.get("builds", []) if not overwrite or b.get("start_index") != start_index]
    manifest = {"layout": "MISATO", "size": size, "image_dir": "image",
                "mask_dir": "mask", "mask_prefix": prefix, "polarity": "mask 255 = hole",
                "builds": builds + [build],
                "entries": sorted(kept + entries, key=lambda e: e["name"])}
    partial = manifest_path.with_name(f".{MANIFEST}.partial")
    partial.write_text(json.dumps(manifest, indent=1))
    os.replace(partial, manifest_path)
    return manifest
