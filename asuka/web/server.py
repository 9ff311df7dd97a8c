"""The web app behind ``asuka serve``: the page, and an API that runs one inpainting at a time.

Routes
------
=======================  =====================================================================
``GET /``                the page (``static/index.html``; ``/static/app.js``, ``/static/style.css``)
``GET /api/info``        model components, device, dtype, default and maximum steps, upload limits
``GET /api/progress``    ``{"busy", "step", "steps", "waiting"}`` of the run in progress
``POST /api/inpaint``    image + mask -> the inpainted image as PNG (the input's size)
``POST /api/mask``       a mask file -> its binary mask (white = hole) at a given size, as PNG
=======================  =====================================================================

``POST /api/inpaint`` takes ``multipart/form-data`` (file fields ``image`` and ``mask``) or
``application/json`` (``image`` and ``mask`` as base64 strings or ``data:`` URLs). Options, as
form fields or JSON values: ``steps`` (default: the server's), ``seed`` (default: a random seed,
reported back), ``composite`` (default true: the known pixels are kept exactly), ``feather``
(pixels, default 0), ``full_image`` (default false: crop mode around the hole, as ``asuka
inpaint``), ``resize_mask`` (default false: a mask of another size is an error). The answer is
``image/png`` with headers ``X-Asuka-Seed``, ``X-Asuka-Steps`` and ``X-Asuka-Seconds``, or, when
the request says ``Accept: application/json``, ``{"image": "data:image/png;base64,...", "seed",
"steps", "seconds", "width", "height"}``. Masks follow :mod:`asuka.io`'s rule (white or opaque
= hole).

Errors are JSON ``{"error": "..."}``: 400 for bad input (the :class:`~asuka.errors.InputError`
message), 413 for an upload over ``max_upload_bytes`` or an image over ``max_pixels``, 403 for a
cross-site POST, 404 / 405 for unknown routes and methods, 411 for a POST without a
Content-Length, 503 while loading or with too many queued requests, 500 (message only; the
traceback goes to the server's log) for anything else.

The model runs under a lock, one request at a time; inputs are decoded and checked before a
request queues, so bad input fails at once. Built on the standard library's
``ThreadingHTTPServer``: meant for one user on their own machine (it binds to 127.0.0.1 by
default and has no authentication).
"""

from __future__ import annotations

import base64
import binascii
import email.message
import email.utils
import http
import io as _bytes_io
import json
import math
import secrets
import sys
import threading
import time
import traceback
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

import numpy as np
import PIL.Image
import PIL.ImageOps

from asuka import __version__, io, provenance
from asuka.threads import set_threads
from asuka.errors import InputError

DEFAULT_MAX_UPLOAD_BYTES = 50 * 1024 * 1024
#: 50 megapixels: a large camera photo; the model only works on a crop around the hole, but
#: decoding, compositing and the PNG answer are full size.
DEFAULT_MAX_PIXELS = 50_000_000
MAX_SEED = 2**63 - 1
#: Options /api/inpaint understands, besides the ``image`` and ``mask`` files.
INPAINT_OPTIONS = ("steps", "seed", "composite", "feather", "full_image", "resize_mask")

_STATIC = {  # route -> (file in asuka/web/static, content type); nothing else is served
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}
# The page loads only its own files; results are shown from blob: URLs.
_CSP = ("default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'")


class WebError(Exception):
    """An HTTP error answer: ``status`` and a one-line message (sent as ``{"error": message}``)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = int(status)
        self.message = message


@dataclass
class InpaintResult:
    """One answer of :meth:`InpaintApp.inpaint`: the PNG bytes and how they were made."""

    png: bytes
    width: int
    height: int
    seed: int
    steps: int
    seconds: float
    warning: str | None = None


# --------------------------------------------------------------------------------------------
# The app: everything but HTTP (usable and testable without a socket)
# --------------------------------------------------------------------------------------------
class InpaintApp:
    """Wraps a loaded :class:`~asuka.pipeline.AsukaInpaintPipeline` for the web server.

    Args:
        pipe: the pipeline (loaded once; requests share it, one at a time).
        model_name: shown on the page and in ``/api/info`` (a folder or hub id).
        default_steps: denoising steps when a request gives none.
        max_steps: the most steps a request may ask for.
        max_upload_bytes: request bodies above this are refused with 413.
        max_pixels: images (and masks) with more pixels are refused with 413.
        crop_margin: crop mode's context margin around the hole, pixels (as ``asuka inpaint``).
        max_waiting: requests that may queue behind the running one; more get 503.
    """

    def __init__(self, pipe, *, model_name: str | None = None, default_steps: int = 50,
                 max_steps: int = 500, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
                 max_pixels: int = DEFAULT_MAX_PIXELS, crop_margin: int = 64, max_waiting: int = 4,
                 watermark: bool = False, threads: int | None = None):
        for name, value, low in (("default_steps", default_steps, 1), ("max_steps", max_steps, 1),
                                 ("max_upload_bytes", max_upload_bytes, 1), ("max_pixels", max_pixels, 1),
                                 ("crop_margin", crop_margin, 0), ("max_waiting", max_waiting, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
        if default_steps > max_steps:
            raise InputError(f"default_steps ({default_steps}) must not exceed max_steps ({max_steps})")
        self.pipe = pipe
        self.model_name = model_name or type(pipe).__name__
        self.default_steps = default_steps
        self.max_steps = max_steps
        self.max_upload_bytes = max_upload_bytes
        self.max_pixels = max_pixels
        self.crop_margin = crop_margin
        self.max_waiting = max_waiting
        self.watermark = bool(watermark)  # invisible watermark on every answer (asuka.provenance)
        self.threads = threads  # torch CPU threads per request; None: follow the machine's load
        self._run_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._waiting = 0
        self._step = 0
        self._steps = 0
        self._busy = False

    # ---------------------------------------------------------------------------- info
    def info(self) -> dict:
        """What ``GET /api/info`` answers (JSON-serialisable)."""
        pipe = self.pipe
        components = {name: (type(module).__name__ if module is not None else None)
                      for name, module in pipe.components.items()}
        return {
            "name": "asuka", "version": __version__, "model": self.model_name, "components": components,
            "device": str(pipe.device), "dtype": str(pipe.unet.dtype).replace("torch.", ""),
            "working_resolution": int(pipe.working_resolution), "default_steps": self.default_steps,
            "max_steps": self.max_steps, "max_upload_bytes": self.max_upload_bytes,
            "max_pixels": self.max_pixels, "crop_margin": self.crop_margin, "options": list(INPAINT_OPTIONS),
            "watermark": self.watermark,
        }

    def progress(self) -> dict:
        """What ``GET /api/progress`` answers: the running request's step and the queue length."""
        with self._state_lock:
            return {"busy": self._busy, "step": self._step, "steps": self._steps, "waiting": self._waiting}

    # ---------------------------------------------------------------------------- inpaint
    def inpaint(self, fields: dict) -> InpaintResult:
        """Inpaint from request fields: ``image`` and ``mask`` as encoded image bytes, options as
        strings (form fields) or JSON values. Raises :class:`InputError` / :class:`WebError`."""
        import torch

        fields = dict(fields)
        image_bytes = _required_file(fields, "image")
        mask_bytes = _required_file(fields, "mask")
        unknown = sorted(set(fields) - set(INPAINT_OPTIONS))
        if unknown:
            raise InputError(f"unknown field(s) {', '.join(unknown)}; expected image, mask and any of "
                             f"{', '.join(INPAINT_OPTIONS)}")
        steps = _int_option(fields, "steps", self.default_steps, 1, self.max_steps)
        seed = _int_option(fields, "seed", None, 0, MAX_SEED)
        composite = _bool_option(fields, "composite", True)
        feather = _float_option(fields, "feather", 0.0, 0.0, 1000.0)
        full_image = _bool_option(fields, "full_image", False)
        resize_mask = _bool_option(fields, "resize_mask", False)

        image = io.pil_to_rgb(self._decode(image_bytes, "image"))
        mask = io.fit_mask(io.mask_from_pil(self._decode(mask_bytes, "mask")), image.size,
                           resize=resize_mask, what="mask")
        if seed is None:  # drawn here and reported, so any result can be made again
            seed = secrets.randbelow(2**31)
        warning = None if mask.any() else "the mask is empty: the image is returned unchanged"

        with self._queued():
            set_threads(self.threads)  # the machine's load may have changed since the last request
            started = time.perf_counter()
            with self._state_lock:
                self._busy, self._step, self._steps = True, 0, steps
            try:
                result = self.pipe(
                    image, mask, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed),
                    composite=composite, feather=feather,
                    padding_mask_crop=None if full_image else self.crop_margin,
                    output_type="pil", callback_on_step_end=self._on_step).images[0]
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                raise WebError(503, f"out of GPU memory on a {image.width}x{image.height} image; try a "
                                    "smaller image, fewer pixels in the hole, or crop mode") from None
            finally:
                with self._state_lock:
                    self._busy = False
            seconds = time.perf_counter() - started
        recipe = provenance.recipe(self.pipe, self.model_name, steps=steps, seed=seed, composite=composite,
                                   feather=feather or None, crop_margin=None if full_image else self.crop_margin)
        png = provenance.encode_image(result, recipe=recipe, watermark=self.watermark)
        return InpaintResult(png=png, width=result.width, height=result.height, seed=seed,
                             steps=steps, seconds=seconds, warning=warning)

    def binary_mask(self, fields: dict) -> tuple[bytes, str | None]:
        """``POST /api/mask``: a mask file (field ``mask``) read with :mod:`asuka.io`'s rule ->
        (PNG of the binary mask, white = hole, note). With ``width`` and ``height`` it is resized
        to that size (nearest), and the note says so."""
        fields = dict(fields)
        mask_bytes = _required_file(fields, "mask")
        unknown = sorted(set(fields) - {"width", "height"})
        if unknown:
            raise InputError(f"unknown field(s) {', '.join(unknown)}; expected mask, width, height")
        width = _int_option(fields, "width", None, 1, self.max_pixels)
        height = _int_option(fields, "height", None, 1, self.max_pixels)
        mask = io.mask_from_pil(self._decode(mask_bytes, "mask"))
        note = None
        if width is not None or height is not None:
            if width is None or height is None:
                raise InputError("give both width and height (the image's size), or neither")
            self._check_pixels(width, height, "the requested mask size")
            if mask.shape != (height, width):
                note = f"mask resized from {mask.shape[1]}x{mask.shape[0]} to {width}x{height} (nearest)"
                mask = io.fit_mask(mask, (width, height), resize=True)
        return _png_bytes(PIL.Image.fromarray((mask > 0.5).astype(np.uint8) * 255)), note

    # ---------------------------------------------------------------------------- helpers
    def _on_step(self, pipe, step, timestep, tensors):
        with self._state_lock:
            self._step = step + 1
        return {}

    def _queued(self):
        """Context manager: wait for the model (at most ``max_waiting`` requests wait)."""
        app = self

        class _Turn:
            def __enter__(self):
                with app._state_lock:
                    if app._waiting >= app.max_waiting and app._run_lock.locked():
                        raise WebError(503, f"busy: {app._waiting} request(s) are already waiting for the "
                                            "model; try again later")
                    app._waiting += 1
                try:
                    app._run_lock.acquire()
                finally:
                    with app._state_lock:
                        app._waiting -= 1

            def __exit__(self, *exc):
                app._run_lock.release()
                return False

        return _Turn()

    def _check_pixels(self, width: int, height: int, what: str) -> None:
        if width * height > self.max_pixels:
            raise WebError(413, f"{what} is {width}x{height} = {width * height:,} pixels; this server "
                                f"accepts at most {self.max_pixels:,} pixels")

    def _decode(self, data: bytes, what: str) -> PIL.Image.Image:
        """Encoded image bytes -> PIL image, EXIF orientation applied (as ``io.open_image``).

        The size is checked before the pixels are decoded, so an oversized image costs nothing.
        """
        if not data:
            raise InputError(f"{what}: the uploaded file is empty")
        try:
            img = PIL.Image.open(_bytes_io.BytesIO(data))
            self._check_pixels(img.width, img.height, what)
            img.load()
            return PIL.ImageOps.exif_transpose(img)
        except PIL.Image.DecompressionBombError as exc:
            raise WebError(413, f"{what}: {exc}") from None
        except PIL.UnidentifiedImageError:  # its message names a BytesIO object, not the problem
            raise InputError(f"cannot read {what} ({len(data):,} bytes): not an image format this server "
                             "reads (PNG, JPEG, WebP, BMP, TIFF, ...)") from None
        except (OSError, ValueError, SyntaxError, EOFError) as exc:  # truncated or corrupt file
            raise InputError(f"cannot read {what} ({len(data):,} bytes) as an image: {exc}") from None


# --------------------------------------------------------------------------------------------
# Request fields: options as form strings or JSON values
# --------------------------------------------------------------------------------------------
def _required_file(fields: dict, name: str) -> bytes:
    if name not in fields:
        raise InputError(f"missing field {name!r}: send the {name} as a file (multipart/form-data) "
                         "or as base64 (application/json)")
    value = fields.pop(name)
    if not isinstance(value, bytes):
        raise InputError(f"field {name!r} must be an image file, got {type(value).__name__}")
    return value


def _text(value):
    return value.decode("utf-8", "replace").strip() if isinstance(value, bytes) else value


def _int_option(fields: dict, name: str, default, low: int, high: int):
    value = _text(fields.get(name))
    if value is None or value == "":
        return default
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise InputError(f"{name} must be an integer in [{low}, {high}], got {value!r}") from None
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InputError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return value


def _float_option(fields: dict, name: str, default: float, low: float, high: float) -> float:
    value = _text(fields.get(name))
    if value is None or value == "":
        return default
    number = None
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except ValueError:
            pass
    if number is None or not math.isfinite(number) or not low <= number <= high:
        raise InputError(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}")
    return number


_TRUE, _FALSE = ("1", "true", "on", "yes"), ("0", "false", "off", "no")


def _bool_option(fields: dict, name: str, default: bool) -> bool:
    value = _text(fields.get(name))
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    raise InputError(f"{name} must be true or false, got {value!r}")


def _png_bytes(image: PIL.Image.Image) -> bytes:
    buffer = _bytes_io.BytesIO()
    image.save(buffer, format="PNG", compress_level=4)  # lossless; 4 is much faster than 9, nearly as small
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------
# Request bodies
# --------------------------------------------------------------------------------------------
def _header_params(value: str) -> tuple[str, dict]:
    """``'multipart/form-data; boundary=x'`` -> ``('multipart/form-data', {'boundary': 'x'})``."""
    msg = email.message.Message()
    msg["content-type"] = value
    params = dict((msg.get_params() or [])[1:])
    return msg.get_content_type(), {k.lower(): email.utils.collapse_rfc2231_value(v)
                                    for k, v in params.items()}


def parse_multipart(body: bytes, content_type: str) -> dict[str, bytes]:
    """``multipart/form-data`` body -> ``{field name: raw bytes}`` (files and text fields alike).

    A direct split on the boundary (RFC 7578): the standard library's email parser works
    line by line and takes about a second for a 20 MB photo.
    """
    _, params = _header_params(content_type)
    boundary = params.get("boundary")
    if not boundary:
        raise InputError("multipart/form-data request without a boundary parameter")
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    sections = (b"\r\n" + body).split(delimiter)
    if len(sections) < 2:
        raise InputError("malformed multipart/form-data body: the boundary does not occur")
    fields: dict[str, bytes] = {}
    for section in sections[1:]:
        if section.startswith(b"--"):  # the close delimiter
            return fields
        head, sep, content = section.partition(b"\r\n\r\n")
        if not sep:
            raise InputError("malformed multipart/form-data body: a part has no header block")
        headers = email.message.Message()
        for line in head.split(b"\r\n")[1:]:  # [0] is the rest of the delimiter line (padding)
            name, colon, value = line.decode("utf-8", "replace").partition(":")
            if colon:
                headers[name.strip()] = value.strip()
        name = headers.get_param("name", header="content-disposition")
        if not name:
            raise InputError("malformed multipart/form-data body: a part has no name")
        name = email.utils.collapse_rfc2231_value(name)
        if name in fields:
            raise InputError(f"field {name!r} given twice")
        fields[name] = content
    raise InputError("malformed multipart/form-data body: no closing boundary (truncated upload?)")


def parse_json_fields(body: bytes, files: tuple[str, ...]) -> dict:
    """JSON object body -> fields; the ``files`` entries are base64 (or ``data:`` URLs) -> bytes."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"the JSON body must be an object, got {type(data).__name__}")
    for name in files:
        value = data.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise InputError(f"{name} must be a base64 string or a data: URL, got {type(value).__name__}")
        if value.startswith("data:"):
            header, comma, value = value.partition(",")
            if not comma or not header.endswith(";base64"):
                raise InputError(f"{name}: only base64 data: URLs are accepted (data:image/png;base64,...)")
        try:
            data[name] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InputError(f"{name} is not valid base64: {exc}") from None
    return data


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------
class InpaintServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` serving an :class:`InpaintApp`.

    ``app`` may be set after binding (``asuka serve`` binds first, so a busy port fails before
    the model loads); until then requests get 503. ``quiet`` turns off the request log.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: InpaintApp | None = None, *, quiet: bool = False):
        import socket

        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app = app
        self.quiet = quiet
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        if host in ("0.0.0.0", "::"):  # listening everywhere: this machine reaches it via loopback
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def make_server(app: InpaintApp | None, host: str = "127.0.0.1", port: int = 7860, *,
                quiet: bool = False) -> InpaintServer:
    """Bind an :class:`InpaintServer` (``port=0``: any free port; see ``server.url``).

    Raises :class:`InputError` when the address cannot be bound (port in use, unknown host).
    """
    try:
        return InpaintServer((host, port), app, quiet=quiet)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise InputError(f"cannot listen on {host}:{port}: {reason}; "
                         "choose another --port or --host") from None


class _Handler(BaseHTTPRequestHandler):
    server: InpaintServer
    server_version = f"asuka/{__version__}"
    protocol_version = "HTTP/1.1"
    timeout = 120  # seconds a client may stall while sending; the model's run time is not limited

    # ---------------------------------------------------------------------------- routing
    def do_GET(self):  # noqa: N802 (http.server's naming)
        self._handle("GET")

    def do_POST(self):  # noqa: N802
        self._handle("POST")

    def _handle(self, method: str) -> None:
        path = urllib.parse.urlsplit(self.path).path
        try:
            if method == "GET" and path in _STATIC:
                name, content_type = _STATIC[path]
                self._send(200, _static_file(name), content_type)
                return
            routes = {"/api/info": "GET", "/api/progress": "GET", "/api/inpaint": "POST", "/api/mask": "POST"}
            if path not in routes:
                raise WebError(404, f"no such page: {path}")
            if routes[path] != method:
                raise WebError(405, f"{path} takes {routes[path]}, got {method}")
            app = self.server.app
            if app is None:
                raise WebError(503, "the model is still loading; try again in a moment")
            if path == "/api/info":
                self._send_json(200, app.info())
            elif path == "/api/progress":
                self._send_json(200, app.progress())
            elif path == "/api/inpaint":
                self._inpaint(app)
            else:
                self._mask(app)
        except WebError as exc:
            self._send_json(exc.status, {"error": exc.message})
        except InputError as exc:
            self._send_json(400, {"error": str(exc)})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client left; nobody to answer
        except Exception as exc:  # a bug or a model failure: say so briefly, log the traceback
            traceback.print_exc(file=sys.stderr)
            first = (str(exc).strip().splitlines() or [""])[0]
            self._send_json(500, {"error": f"internal error ({type(exc).__name__}: {first}); "
                                           "see the server's log"})

    def _inpaint(self, app: InpaintApp) -> None:
        result = app.inpaint(self._fields(app, files=("image", "mask")))
        headers = {"X-Asuka-Seed": str(result.seed), "X-Asuka-Steps": str(result.steps),
                   "X-Asuka-Seconds": f"{result.seconds:.3f}"}
        if result.warning:
            headers["X-Asuka-Warning"] = result.warning
        if "application/json" in self.headers.get("Accept", ""):
            self._send_json(200, {
                "image": "data:image/png;base64," + base64.b64encode(result.png).decode("ascii"),
                "width": result.width, "height": result.height, "seed": result.seed, "steps": result.steps,
                "seconds": round(result.seconds, 3), "warning": result.warning}, headers)
        else:
            self._send(200, result.png, "image/png", headers)

    def _mask(self, app: InpaintApp) -> None:
        png, note = app.binary_mask(self._fields(app, files=("mask",)))
        self._send(200, png, "image/png", {"X-Asuka-Note": note} if note else None)

    # ---------------------------------------------------------------------------- bodies
    def _fields(self, app: InpaintApp, files: tuple[str, ...]) -> dict:
        origin = self.headers.get("Origin")
        # A page on another site may POST forms here (browsers send those without asking);
        # only the page this server serves may.
        if origin is not None and urllib.parse.urlsplit(origin).netloc != self.headers.get("Host"):
            raise WebError(403, f"cross-origin request from {origin} refused")
        body = self._read_body(app.max_upload_bytes)
        content_type, _ = _header_params(self.headers.get("Content-Type", ""))
        if content_type == "multipart/form-data":
            return parse_multipart(body, self.headers["Content-Type"])
        if content_type == "application/json":
            return parse_json_fields(body, files)
        raise InputError(f"unsupported Content-Type {self.headers.get('Content-Type')!r}; send "
                         "multipart/form-data or application/json")

    def _read_body(self, limit: int) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() not in ("", "identity"):
            self.close_connection = True
            raise WebError(411, "chunked uploads are not supported; send a Content-Length")
        try:
            length = int(self.headers.get("Content-Length", ""))
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise WebError(411, "a POST needs a valid Content-Length header") from None
        if length > limit:
            self._discard(length)
            raise WebError(413, f"upload of {length:,} bytes is over this server's limit of {limit:,} "
                                "bytes (asuka serve --max-upload-mb)")
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            raise InputError(f"the upload ended after {len(body):,} of {length:,} bytes")
        return body

    def _discard(self, length: int) -> None:
        # Read (and drop) what the client sends, so it sees the 413 answer instead of a reset
        # connection; past 4x the limit, give up and close.
        self.close_connection = True
        remaining = min(length, 4 * self.server.app.max_upload_bytes if self.server.app else 0)
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 16))
            if not chunk:
                break
            remaining -= len(chunk)

    # ---------------------------------------------------------------------------- answers
    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if content_type.startswith("text/html"):
            self.send_header("Content-Security-Policy", _CSP)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if status >= 400:
            self.close_connection = True
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, payload: dict, headers: dict | None = None) -> None:
        body = json.dumps(payload).encode("utf-8")
        self._send(status, body, "application/json", headers)

    def send_error(self, code, message=None, explain=None):
        """http.server's own errors (bad request line, unknown method, huge headers) as JSON."""
        try:
            phrase = http.HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        self.close_connection = True
        self._send_json(code, {"error": message or phrase})

    def log_request(self, code="-", size="-"):
        # Log what matters: posts and errors, not the page's progress polling.
        status = getattr(code, "value", code)
        if not self.server.quiet and (self.command != "GET" or str(status)[:1] in "45"):
            super().log_request(code, size)

    def log_error(self, format, *args):
        if not self.server.quiet:
            super().log_error(format, *args)


def _static_file(name: str) -> bytes:
    return resources.files("asuka.web").joinpath("static", name).read_bytes()
