"""Image and mask I/O, and conversion between user formats and the package's tensors.

This is the edge of the package: everything inside works on

* images: float tensors ``(B, 3, H, W)``, RGB, range ``[-1, 1]``;
* masks: float tensors ``(B, 1, H, W)``, values in ``{0, 1}``, ``1 = hole``.

Files
-----
:func:`load_image` reads anything PIL reads (RGB, RGBA, L, LA, P, CMYK, 1-bit, 16-bit
``I;16`` / ``I``, float ``F``), honours the EXIF orientation and returns an RGB image. An alpha
channel is dropped (the colour values are kept), 16-bit values are scaled to 8 bits.

:func:`load_mask` reads a mask with this rule (:func:`mask_from_pil`):

1. If the image has an alpha channel (RGBA, LA, PA, or a palette / RGB / L image with a
   transparency entry), its colour is the same in every pixel and its alpha is not, the
   **alpha** is the mask (a stroke painted in one colour on a transparent layer, as image
   editors export it): hole where alpha >= 50%.
2. Otherwise the **luminance** is the mask (alpha ignored): hole where it is >= 50% of the
   maximum (128 of 255 for 8-bit files, 32768 of 65535 for 16-bit files). White = hole.

Arrays and tensors (:func:`images_to_tensors`, :func:`masks_to_tensors`)
--------------------------------------------------------------------------
========================  ======================================  =========================
input                     image                                   mask (1 = hole)
========================  ======================================  =========================
``PIL.Image``             any mode (as :func:`load_image`)        any mode (as above)
``np.ndarray`` uint8      ``(H,W,3)``/``(B,H,W,3)``/``(H,W)``,    ``(H,W)``/``(H,W,1)``/``(B,H,W)``/
                          0..255                                  ``(B,1,H,W)``, 0..255 (a uint8
                                                                  mask holding only 0 and 1 is
                                                                  read as 0/1)
``np.ndarray`` float      same shapes, range ``[0, 1]``           same shapes, range ``[0, 1]``
``np.ndarray`` bool       --                                      same shapes
``torch.Tensor`` float    ``(3,H,W)``/``(B,3,H,W)``, ``[-1, 1]``  ``(H,W)``/``(1,H,W)``/``(B,1,H,W)``,
                          (the package convention)                ``[0, 1]``
``torch.Tensor`` uint8    same shapes, 0..255                     same shapes, 0..255
``list``                  of any of the above (sizes may differ)  of any of the above
========================  ======================================  =========================

Masks are binarised at 50%. Wrong shapes, ranges, NaNs and unknown types raise
:class:`~asuka.errors.InputError` naming the expected and the given value.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageOps

from asuka._lazy import LazyModule
from asuka.errors import InputError

# torch only when a tensor is made: reading and writing files does not need it.
torch = LazyModule("torch")
F = LazyModule("torch.nn.functional")

#: zlib level of written PNGs: 1 is several times faster than PIL's default 6 (benchmarks/bench_startup.py).
PNG_COMPRESS_LEVEL = 1
#: File extensions read when a directory of images or masks is given.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
#: Output extension -> PIL format name. Anything else is refused.
OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------
def open_image(path: str | os.PathLike) -> PIL.Image.Image:
    """Open and fully read an image file, EXIF orientation applied. Mode unchanged.

    Raises :class:`InputError` (one line, with the path) for a missing, unreadable or
    non-image file.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"file not found: {path}")
    if path.is_dir():
        raise InputError(f"expected an image file, got a directory: {path}")
    try:
        with PIL.Image.open(path) as img:
            img.load()
            # exif_transpose returns a copy (or the image itself when there is no EXIF tag).
            return PIL.ImageOps.exif_transpose(img)
    except (PIL.UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"cannot read image {path}: {exc}") from None


def _sixteen_bit_to_uint8(img: PIL.Image.Image) -> np.ndarray:
    """(H, W) uint8 from a 16-bit (``I;16*``) or 32-bit integer (``I``) image.

    ``I`` is what PIL gives for many 16-bit files; values above 65535 are clipped.
    """
    arr = np.asarray(img).astype(np.float64)
    return np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8)


def pil_to_rgb(img: PIL.Image.Image) -> PIL.Image.Image:
    """Convert any PIL mode to 8-bit RGB (alpha dropped, 16-bit scaled, CMYK converted)."""
    if img.mode == "RGB":
        return img
    if img.mode in _SIXTEEN_BIT_MODES:
        return PIL.Image.fromarray(_sixteen_bit_to_uint8(img)).convert("RGB")
    if img.mode == "F":  # float images: assume 0..255 like PIL's own F -> L conversion
        arr = np.clip(np.asarray(img), 0, 255).astype(np.uint8)
        return PIL.Image.fromarray(arr).convert("RGB")
    if img.mode == "P":
        # Going through RGBA keeps PIL from warning about palette transparency.
        img = img.convert("RGBA")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise InputError(f"cannot convert an image of mode {img.mode!r} to RGB: {exc}") from None


def load_image(path: str | os.PathLike) -> PIL.Image.Image:
    """Read an image file as 8-bit RGB with the EXIF orientation applied."""
    return pil_to_rgb(open_image(path))


def _alpha_and_colour(img: PIL.Image.Image) -> tuple[np.ndarray | None, np.ndarray]:
    """Split an image into (alpha in [0, 1] or None, colour array), both float."""
    if img.mode == "P" or ("transparency" in img.info and img.mode in ("L", "RGB", "1")):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        bands = img.getbands()
        alpha = np.asarray(img.getchannel("A" if "A" in bands else "a"), dtype=np.float32) / 255.0
        colour = np.asarray(img.convert("RGB"), dtype=np.float32)
        return alpha, colour
    return None, np.empty(0)


def mask_from_pil(img: PIL.Image.Image) -> np.ndarray:
    """Binary mask ``(H, W)`` float32 in ``{0, 1}`` (1 = hole) from any PIL image.

    The rule (alpha for constant-colour images with varying alpha, luminance otherwise) is
    described in the module docstring.
    """
    alpha, colour = _alpha_and_colour(img)
    if alpha is not None:
        flat = colour.reshape(-1, colour.shape[-1])
        colour_constant = bool((flat == flat[0]).all())
        alpha_constant = bool((alpha == alpha.flat[0]).all())
        if colour_constant and not alpha_constant:
            return (alpha >= 0.5).astype(np.float32)
    if img.mode in _SIXTEEN_BIT_MODES:
        value = np.asarray(img).astype(np.float64) / 65535.0
    elif img.mode == "F":
        value = np.asarray(img).astype(np.float64) / 255.0
    else:
        if img.mode == "P":
            img = img.convert("RGBA")
        try:
            value = np.asarray(img.convert("L"), dtype=np.float64) / 255.0
        except (ValueError, OSError) as exc:
            raise InputError(f"cannot read a mask from an image of mode {img.mode!r}: {exc}") from None
    return (value >= 0.5).astype(np.float32)


def load_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask file: ``(H, W)`` float32 in ``{0, 1}``, 1 = hole (rule: module docstring)."""
    return mask_from_pil(open_image(path))


def fit_mask(mask: np.ndarray, size: tuple[int, int], *, resize: bool = False,
             what: str = "mask") -> np.ndarray:
    """Check that a ``(H, W)`` mask matches the image ``size = (width, height)``.

    A mask of another size is an :class:`InputError` unless ``resize`` is true, in which case
    it is resized with nearest-neighbour sampling (so it stays binary).
    """
    width, height = size
    if mask.shape == (height, width):
        return mask
    if not resize:
        raise InputError(
            f"{what} size {mask.shape[1]}x{mask.shape[0]} does not match the image size "
            f"{width}x{height} (width x height); give a mask of the image's size or resize it "
            "(--resize-mask, nearest)"
        )
    resized = PIL.Image.fromarray((mask > 0.5).astype(np.uint8) * 255).resize(
        (width, height), PIL.Image.NEAREST)
    return (np.asarray(resized) >= 128).astype(np.float32)


def output_format(path: str | os.PathLike) -> str:
    """PIL format name for an output path, from its extension; unknown ones are refused."""
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise InputError(
            f"unsupported output extension {suffix or '(none)'!r} in {path}; "
            f"expected one of {', '.join(sorted(OUTPUT_FORMATS))}"
        )
    return OUTPUT_FORMATS[suffix]


def save_image(image: PIL.Image.Image, path: str | os.PathLike, *, recipe: dict | None = None,
               compress_level: int = PNG_COMPRESS_LEVEL) -> Path:
    """Write ``image`` in the format given by the extension (png, jpg/jpeg, webp).

    ``recipe``: how the image was made (:func:`asuka.provenance.recipe`), embedded as metadata
    (PNG text chunk, JPEG/WebP EXIF). PNG is written at ``compress_level`` (default
    :data:`PNG_COMPRESS_LEVEL`: zlib level 1, several times faster than PIL's default 6 for
    files a few percent larger); JPEG and WebP at quality 95. Parent folders are created. The
    file is written under a temporary name and renamed, so an interrupted run never leaves a
    partial file that a later run would take for a finished output.
    """
    from asuka.provenance import save_kwargs

    path = Path(path)
    fmt = output_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs = {"quality": 95} if fmt in ("JPEG", "WEBP") else {"compress_level": compress_level}
    kwargs.update(save_kwargs(fmt, recipe))
    if fmt == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    partial = path.with_name(f".{path.name}.partial")
    try:
        with open(partial, "wb") as f:
            image.save(f, format=fmt, **kwargs)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException as exc:
        partial.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise InputError(f"cannot write {path}: {exc}") from None
        raise
    return path


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when two paths name the same file (symlinks, ``..``, hard links resolved)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist yet: compare resolved names
        return Path(a).resolve() == Path(b).resolve()


def check_output_path(output: str | os.PathLike, inputs: Sequence[str | os.PathLike]) -> None:
    """Refuse an output path with an unknown extension or that is one of the input files."""
    output_format(output)
    for given in inputs:
        if same_file(output, given):
            raise InputError(f"output path {output} is the same file as the input {given}; "
                             "choose another output path")


def find_images(directory: str | os.PathLike, *, what: str = "image") -> dict[str, Path]:
    """Map file stem -> path for the image files directly inside ``directory`` (sorted).

    Two files with the same stem (``a.png`` and ``a.jpg``) are an :class:`InputError`, since
    images and masks are matched by stem.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{what} directory not found: {directory}")
    found: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            if path.stem in found:
                raise InputError(f"two {what} files with the stem {path.stem!r}: "
                                 f"{found[path.stem].name} and {path.name}")
            found[path.stem] = path
    return found


def pair_by_stem(images_dir: str | os.PathLike, masks_dir: str | os.PathLike, *,
                 unused_masks: str = "ignore") -> dict[str, tuple[Path, Path]]:
    """stem -> (image, mask) for the images of ``images_dir`` and their masks in ``masks_dir``.

    A mask matches an image by file stem (``a.jpg`` with ``a.png``), or with MISATO's ``00``
    prefix (``000007.png`` for ``0007.png``). Images without a mask are an
    :class:`InputError` naming them; masks without an image are ignored, or an error with
    ``unused_masks="error"``. Shared by ``asuka inpaint --images/--masks`` and the benchmark
    datasets (:mod:`asuka.data.misato`).
    """
    images = find_images(images_dir, what="image")
    masks = find_images(masks_dir, what="mask")
    if not images:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {images_dir}")
    pairs, unused = {}, set(masks)
    for stem, image in images.items():
        for candidate in (stem, "00" + stem):
            if candidate in masks:
                pairs[stem] = (image, masks[candidate])
                unused.discard(candidate)
                break
    problems = []
    no_mask = [images[s].name for s in images if s not in pairs]
    if no_mask:
        problems.append(f"no mask in {masks_dir} for {len(no_mask)} image(s): {_listing(no_mask)}")
    if unused and unused_masks == "error":
        problems.append(f"{len(unused)} mask(s) without an image in {images_dir}: "
                        f"{_listing(masks[s].name for s in unused)}")
    if problems:
        raise InputError("images and masks do not match by file stem: " + "; ".join(problems))
    return pairs


def _listing(names, limit: int = 5) -> str:
    names = sorted(names)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# --------------------------------------------------------------------------------------------
# Arrays and tensors
# --------------------------------------------------------------------------------------------
def _describe(x) -> str:
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return f"{type(x).__name__} of shape {tuple(x.shape)} and dtype {x.dtype}"
    return type(x).__name__


def _check_range(t: torch.Tensor, lo: float, hi: float, what: str) -> None:
    if torch.isnan(t).any():
        raise InputError(f"{what} contains NaN values")
    tmin, tmax = float(t.min()), float(t.max())
    tol = 1e-3
    if tmin < lo - tol or tmax > hi + tol:
        raise InputError(f"{what} values must be in [{lo:g}, {hi:g}], got [{tmin:.4g}, {tmax:.4g}]")


def _image_items(image) -> list:
    """Split an image input into single-image items (a batch array/tensor counts as several)."""
    if isinstance(image, (list, tuple)):
        if len(image) == 0:
            raise InputError("expected at least one image, got an empty list")
        items = []
        for x in image:
            items.extend(_image_items(x))
        return items
    if isinstance(image, np.ndarray) and image.ndim == 4:
        return list(image)
    if isinstance(image, torch.Tensor) and image.ndim == 4:
        return list(image)
    return [image]


def image_to_tensor(image) -> torch.Tensor:
    """One image -> ``(3, H, W)`` float32 in ``[-1, 1]`` (accepted inputs: module docstring)."""
    if isinstance(image, PIL.Image.Image):
        arr = np.asarray(pil_to_rgb(image), dtype=np.float32) / 127.5 - 1.0
        return torch.from_numpy(arr.copy()).permute(2, 0, 1)
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.shape[-1] not in (1, 3):
            raise InputError(f"numpy images must have shape (H, W, 3), (B, H, W, 3) or (H, W); "
                             f"got {_describe(image)}")
        t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        if image.dtype == np.uint8:
            t = t.float() / 127.5 - 1.0
        elif np.issubdtype(image.dtype, np.floating):
            t = t.float()
            _check_range(t, 0.0, 1.0, "numpy float image")
            t = t * 2.0 - 1.0
        else:
            raise InputError(f"numpy images must be uint8 (0..255) or float (0..1); got {_describe(image)}")
        return t.expand(3, -1, -1).clone() if t.shape[0] == 1 else t
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise InputError(f"torch images must have shape (3, H, W) or (B, 3, H, W); got {_describe(image)}")
        if image.dtype == torch.uint8:
            return image.float() / 127.5 - 1.0
        if not image.is_floating_point():
            raise InputError(f"torch images must be float in [-1, 1] or uint8; got {_describe(image)}")
        t = image.detach().float().cpu()
        _check_range(t, -1.0, 1.0, "torch float image")
        return t.clamp(-1.0, 1.0)
    raise InputError(f"expected an image as PIL.Image, numpy array or torch tensor; got {_describe(image)}")


def images_to_tensors(image) -> list[torch.Tensor]:
    """Any image input (one, a batch, or a list) -> list of ``(3, H, W)`` in ``[-1, 1]``."""
    return [image_to_tensor(x) for x in _image_items(image)]


def _mask_items(mask) -> list:
    if isinstance(mask, (list, tuple)):
        if len(mask) == 0:
            raise InputError("expected at least one mask, got an empty list")
        items = []
        for x in mask:
            items.extend(_mask_items(x))
        return items
    if isinstance(mask, np.ndarray):
        if mask.ndim == 4:  # (B, 1, H, W)
            return list(mask)
        if mask.ndim == 3 and mask.shape[-1] != 1 and mask.shape[0] != 1:  # (B, H, W)
            return list(mask)
    if isinstance(mask, torch.Tensor):
        if mask.ndim == 4:
            return list(mask)
        if mask.ndim == 3 and mask.shape[0] != 1:
            return list(mask)
    return [mask]


def mask_to_tensor(mask) -> torch.Tensor:
    """One mask -> ``(1, H, W)`` float32 in ``{0, 1}`` (1 = hole), binarised at 50%."""
    if isinstance(mask, PIL.Image.Image):
        return torch.from_numpy(mask_from_pil(mask))[None]
    if isinstance(mask, np.ndarray):
        arr = mask
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        elif arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 2:
            raise InputError(f"numpy masks must have shape (H, W), (H, W, 1), (B, H, W) or (B, 1, H, W); "
                             f"got {_describe(mask)}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    elif isinstance(mask, torch.Tensor):
        t = mask.detach().cpu()
        if t.ndim == 3 and t.shape[0] == 1:
            t = t[0]
        if t.ndim != 2:
            raise InputError(f"torch masks must have shape (H, W), (1, H, W) or (B, 1, H, W); "
                             f"got {_describe(mask)}")
    else:
        raise InputError(f"expected a mask as PIL.Image, numpy array or torch tensor; got {_describe(mask)}")

    if t.dtype == torch.bool:
        t = t.float()
    elif t.dtype == torch.uint8:
        # 0/255 is the file convention; an array holding only 0 and 1 is clearly 0/1.
        t = t.float() / (1.0 if int(t.max()) <= 1 else 255.0)
    elif t.is_floating_point():
        t = t.float()
        _check_range(t, 0.0, 1.0, "float mask")
    else:
        raise InputError(f"masks must be bool, uint8 (0..255) or float (0..1); got {_describe(mask)}")
    return (t >= 0.5).float()[None]


def masks_to_tensors(mask) -> list[torch.Tensor]:
    """Any mask input (one, a batch, or a list) -> list of ``(1, H, W)`` in ``{0, 1}``."""
    return [mask_to_tensor(x) for x in _mask_items(mask)]


def tensor_to_pil(images: torch.Tensor) -> list[PIL.Image.Image]:
    """``(B, 3, H, W)`` or ``(3, H, W)`` in ``[-1, 1]`` -> list of 8-bit RGB PIL images."""
    return [PIL.Image.fromarray(a) for a in tensor_to_uint8(images)]


def tensor_to_uint8(images: torch.Tensor) -> np.ndarray:
    """``(B, 3, H, W)`` or ``(3, H, W)`` in ``[-1, 1]`` -> ``(B, H, W, 3)`` uint8."""
    if images.ndim == 3:
        images = images[None]
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def tensor_to_numpy(images: torch.Tensor) -> np.ndarray:
    """``(B, 3, H, W)`` in ``[-1, 1]`` -> ``(B, H, W, 3)`` float32 in ``[0, 1]`` (diffusers' np)."""
    if images.ndim == 3:
        images = images[None]
    return ((images.detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()


def resize_mask_tensor(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest resize of ``(..., 1, H, W)`` masks to ``size = (height, width)``."""
    squeeze = mask.ndim == 3
    m = mask[None] if squeeze else mask
    m = F.interpolate(m.float(), size=size, mode="nearest")
    return m[0] if squeeze else m
