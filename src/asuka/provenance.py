"""Where an output came from: its recipe in the file's metadata, and an optional invisible watermark.

Every image the CLI (and the server, through :func:`recipe` + :func:`asuka.io.save_image`)
writes carries its **recipe** -- model name and hash, pipeline variant, steps, seed,
condition, asuka version, and that the image is synthetic -- as one JSON object:

* PNG: an ``iTXt`` chunk ``asuka:recipe`` (plus ``Software``);
* JPEG and WebP: EXIF ``ImageDescription`` (``asuka:recipe `` + the JSON) and ``Software``;
  PIL reads and writes both for every format, and EXIF survives most viewers and converters.

Metadata is easy to strip. :func:`add_watermark` additionally hides a short payload
(:data:`WATERMARK_PAYLOAD`) in the pixels with the DWT-DCT-SVD method of the maintained
``invisible-watermark`` package (``imwatermark``): it survives re-encoding (JPEG quality 90 is
tested) but changes every pixel by a few levels, known ones included -- so it is opt-in
(``--watermark``). :func:`read_provenance` reads both back (``asuka info IMAGE``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

#: Key of the recipe in PNG text chunks and the prefix of the EXIF description.
RECIPE_KEY = "asuka:recipe"
#: Bytes hidden by the watermark (48 bits): "ASUKA" + format version 1.
WATERMARK_PAYLOAD = b"ASUKA\x01"
WATERMARK_METHOD = "dwtDctSvd"  # DWT-DCT with SVD: survives JPEG q80 on photos, where plain dwtDct does not
#: DWT-DCT works on 8x8 blocks of the 2x-subsampled image; imwatermark refuses images < 256x256 pixels.
WATERMARK_MIN_PIXELS = 256 * 256
#: IPTC digital source type of images made by a generative model.
SYNTHETIC = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
_EXIF_DESCRIPTION, _EXIF_SOFTWARE = 0x010E, 0x0131
#: Files of a pipeline folder that define the model (configs and weights, not docs or logs).
_MODEL_SUFFIXES = (".json", ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".txt", ".model")
_HASH_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "asuka" / "model_hashes.json"


# --------------------------------------------------------------------------------------------
# The recipe
# --------------------------------------------------------------------------------------------
def _file_sha256(path: Path, cache: dict) -> str:
    stat = path.stat()
    key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    if key not in cache:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        cache[key] = digest.hexdigest()
    return cache[key]


def model_hash(folder: str | os.PathLike) -> str | None:
    """sha256 (first 16 hex digits) over the configs and weights of a pipeline folder
    (``model_index.json`` and each component's files; not model cards or training logs).

    Weights are hashed once and remembered by (path, size, mtime) in
    ``~/.cache/asuka/model_hashes.json``, so a multi-GB model costs its hashing time only on
    first use. None when ``folder`` is not a local folder.
    """
    root = Path(folder)
    if not (root / "model_index.json").is_file():
        return None
    try:
        cache = json.loads(_HASH_CACHE.read_text()) if _HASH_CACHE.is_file() else {}
    except (OSError, ValueError):
        cache = {}
    files = [root / "model_index.json"] + sorted(
        p for p in root.glob("*/**/*")
        if p.is_file() and p.suffix in _MODEL_SUFFIXES and p.relative_to(root).parts[0] != "training")
    digest = hashlib.sha256()
    before = len(cache)
    for path in files:
        digest.update(f"{path.relative_to(root).as_posix()}\0{_file_sha256(path, cache)}\n".encode())
    if len(cache) != before:
        try:
            _HASH_CACHE.parent.mkdir(parents=True, exist_ok=True)
            tmp = _HASH_CACHE.with_suffix(".partial")
            tmp.write_text(json.dumps(cache))
            os.replace(tmp, _HASH_CACHE)
        except OSError:
            pass  # a read-only home: hash again next time
    return digest.hexdigest()[:16]


def pipeline_variant(pipe) -> str:
    """``"sd15"`` or ``"flux"``: the pipeline's ``variant`` attribute, else from its class name."""
    variant = getattr(pipe, "variant", None)
    if isinstance(variant, str):
        return variant
    return "flux" if "flux" in type(pipe).__name__.lower() else "sd15"


def recipe(pipe, model: str, *, steps: int, seed: int | None, condition: str | None = None,
           decoder: str | None = None, watermark: bool = False, **options) -> dict:
    """The recipe of an output: JSON-ready, machine-independent (the shipped model is named,
    not its path). ``options``: further settings worth recording (``condition_weight``,
    ``crop_margin``, ``prompt``...); None values are left out."""
    import asuka
    from asuka.registry import model_label

    source = getattr(getattr(pipe, "config", None), "_name_or_path", None) or model
    record = {
        "generator": f"asuka {asuka.__version__}",
        "model": model_label(model),
        "model_hash": model_hash(source) if os.path.isdir(str(source)) else None,
        "pipeline": type(pipe).__name__,
        "variant": pipeline_variant(pipe),
        "steps": int(steps),
        "seed": seed,
        "condition": condition or "prior",
        "decoder": decoder or ("asuka" if getattr(pipe, "decoder", None) is not None else "vae"),
        **{k: v for k, v in options.items() if v is not None},
        "watermark": WATERMARK_METHOD if watermark else None,
        "synthetic": True,
        "digital_source_type": SYNTHETIC,
    }
    return record


def save_kwargs(fmt: str, record: dict | None) -> dict:
    """``PIL.Image.save`` keyword arguments that embed ``record`` in format ``fmt``."""
    if record is None:
        return {}
    import PIL.Image
    import PIL.PngImagePlugin

    text = json.dumps(record, sort_keys=True, separators=(",", ":"))
    software = record.get("generator", "asuka")
    if fmt == "PNG":
        info = PIL.PngImagePlugin.PngInfo()
        info.add_itxt(RECIPE_KEY, text)
        info.add_text("Software", software)
        return {"pnginfo": info}
    exif = PIL.Image.Exif()
    exif[_EXIF_DESCRIPTION] = f"{RECIPE_KEY} {json.dumps(record, sort_keys=True, ensure_ascii=True)}"
    exif[_EXIF_SOFTWARE] = software
    return {"exif": exif.tobytes()}


def encode_image(image, *, recipe: dict | None = None, watermark: bool = False, fmt: str = "PNG",
                 compress_level: int | None = None) -> bytes:
    """``image`` (PIL) as file bytes carrying ``recipe`` (and the watermark when asked): what a
    server answers. ``fmt``: ``"PNG"``, ``"JPEG"`` or ``"WEBP"``."""
    import io as _io

    from asuka.io import PNG_COMPRESS_LEVEL

    if watermark:
        image = add_watermark(image)
        recipe = None if recipe is None else dict(recipe, watermark=WATERMARK_METHOD)
    kwargs = ({"compress_level": PNG_COMPRESS_LEVEL if compress_level is None else compress_level}
              if fmt == "PNG" else {"quality": 95})
    buffer = _io.BytesIO()
    image.save(buffer, format=fmt, **kwargs, **save_kwargs(fmt, recipe))
    return buffer.getvalue()


def read_recipe(image) -> dict | None:
    """The recipe embedded in an opened PIL image (PNG text chunk or EXIF), or None."""
    from asuka.errors import InputError

    text = None
    if RECIPE_KEY in getattr(image, "text", {}) or RECIPE_KEY in image.info:
        text = getattr(image, "text", {}).get(RECIPE_KEY) or image.info.get(RECIPE_KEY)
    else:
        description = image.getexif().get(_EXIF_DESCRIPTION)
        if isinstance(description, bytes):
            description = description.decode("utf-8", "replace")
        if isinstance(description, str) and description.startswith(RECIPE_KEY + " "):
            text = description[len(RECIPE_KEY) + 1:]
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InputError(f"the image's {RECIPE_KEY} metadata is not valid JSON: {exc}") from None


# --------------------------------------------------------------------------------------------
# The invisible watermark
# --------------------------------------------------------------------------------------------
def _imwatermark():
    from asuka.errors import InputError

    try:
        import imwatermark
    except ImportError as exc:
        raise InputError(f"the watermark needs the invisible-watermark package ({exc.name} is missing): "
                         "pip install PyWavelets && pip install --no-deps invisible-watermark==0.2.0") from None
    return imwatermark


def require_watermark() -> None:
    """Raise :class:`~asuka.errors.InputError` (with the install command) when the watermark
    package is missing."""
    _imwatermark()


def _bgr(image) -> "np.ndarray":  # noqa: F821
    import numpy as np

    return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])


def add_watermark(image):
    """``image`` (PIL) with :data:`WATERMARK_PAYLOAD` hidden in its pixels (DWT-DCT; every pixel
    changes by a few levels). Raises :class:`~asuka.errors.InputError` for images smaller than
    256x256 pixels in area, which the method cannot carry."""
    import PIL.Image

    from asuka.errors import InputError

    if image.width * image.height < WATERMARK_MIN_PIXELS:
        raise InputError(f"--watermark needs an image of at least {WATERMARK_MIN_PIXELS} pixels (256x256); "
                         f"this one is {image.width}x{image.height}")
    encoder = _imwatermark().WatermarkEncoder()
    encoder.set_watermark("bytes", WATERMARK_PAYLOAD)
    marked = encoder.encode(_bgr(image), WATERMARK_METHOD)
    return PIL.Image.fromarray(marked[:, :, ::-1].copy())


def has_watermark(image) -> bool:
    """True when ``image`` (PIL) carries :data:`WATERMARK_PAYLOAD`."""
    if image.width * image.height < WATERMARK_MIN_PIXELS:
        return False
    decoder = _imwatermark().WatermarkDecoder("bytes", 8 * len(WATERMARK_PAYLOAD))
    return bytes(decoder.decode(_bgr(image), WATERMARK_METHOD)) == WATERMARK_PAYLOAD


def read_provenance(path: str | os.PathLike) -> dict:
    """What ``path`` says about its origin: ``{"file", "format", "size", "recipe" (dict or None),
    "watermark" (True / False / None when invisible-watermark is not installed)}``."""
    import importlib.util

    from asuka import io

    image = io.open_image(path)  # checks the file; EXIF orientation applied (a copy without metadata)
    import PIL.Image

    with PIL.Image.open(path) as raw:
        found = {"file": str(path), "format": raw.format, "size": list(image.size), "recipe": read_recipe(raw)}
    if importlib.util.find_spec("imwatermark") is None or importlib.util.find_spec("pywt") is None:
        found["watermark"] = None
    else:
        found["watermark"] = has_watermark(io.pil_to_rgb(image))
    return found
