"""The model side of ``asuka serve``: checked inputs in, jobs run one at a time, PNGs out.

No HTTP here: :class:`InpaintApp` takes encoded image files (file objects or bytes) and option
values (form strings or JSON values), checks all of them before any model work, and runs
:class:`Job` s on one worker thread. The FastAPI layer (:mod:`asuka.web.server`) only parses
requests and maps :class:`WebError` to JSON answers.

Memory is bounded by what a request may ask for:

* an image's pixel count is read from its file header and checked before it is decoded;
  decoding is uint8, one upload at a time;
* the model sees only a region around the hole (crop mode: the pipeline's own crop box, cut out
  of the uint8 picture), so a 50 MP photo with a small hole never becomes a full-size float tensor; the region
  (and a whole-image run) is limited to ``max_work_pixels``;
* the queue holds at most ``max_queue`` jobs and ``max_pending_bytes`` of decoded inputs;
  finished results are kept ``result_ttl`` seconds and at most ``max_result_bytes`` in total.
"""

from __future__ import annotations

import collections
import io as _bytes_io
import logging
import math
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageOps

from asuka import io, provenance
from asuka.errors import InputError
from asuka.threads import set_threads

log = logging.getLogger("asuka.web")

DEFAULT_MAX_UPLOAD_BYTES = 64 * 1024 * 1024
#: 50 megapixels: a large camera photo (decoded as uint8: 150 MB).
DEFAULT_MAX_PIXELS = 50_000_000
#: The most pixels the model's input region may have (crop region or whole image): its float
#: copies cost ~12 bytes per pixel each.
DEFAULT_MAX_WORK_PIXELS = 8_000_000
#: Seconds an upload may stall (nothing arrives) / the most seconds a whole request body may take.
DEFAULT_UPLOAD_TIMEOUT = 30.0
#: 300 s: a 64 MiB body needs ~220 KiB/s on average; a 20 MB photo ~70 KB/s.
DEFAULT_UPLOAD_DEADLINE = 300.0
MAX_SEED = 2**31 - 1
#: Options an inpainting request understands, besides the ``image`` and ``mask`` files.
INPAINT_OPTIONS = ("steps", "seed", "composite", "feather", "poisson_blend", "full_image", "resize_mask")
FINAL_STATES = ("done", "failed", "cancelled")


class WebError(InputError):
    """A refused request: HTTP ``status``, a one-line ``message`` and the ``field`` it concerns.

    ``headers`` are added to the answer (``Retry-After`` for a full queue).
    """

    def __init__(self, status: int, message: str, *, field: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = int(status)
        self.message = message
        self.field = field
        self.headers = dict(headers or {})


class Cancelled(Exception):
    """Raised inside the pipeline's step callback to stop a cancelled job."""


@dataclass
class InpaintResult:
    """A finished job's answer: the PNG bytes and how they were made."""

    png: bytes
    width: int
    height: int
    seed: int
    steps: int
    seconds: float
    warning: str | None = None


@dataclass
class InpaintSpec:
    """A checked inpainting request, ready to run.

    ``image`` is the whole uint8 RGB picture (the answer has its size); ``region`` is
    ``(top, left, height, width)`` of the part the model sees, and ``hole`` the ``(h, w)`` bool
    mask of that region (True = hole); outside the region the mask is empty by construction.
    """

    image: PIL.Image.Image
    hole: np.ndarray
    region: tuple[int, int, int, int]
    steps: int
    seed: int
    composite: bool
    feather: float
    full_image: bool
    crop_margin: int
    poisson_blend: bool | None = None  # seam blending on / off; None: the model's default

    @property
    def nbytes(self) -> int:
        return self.image.width * self.image.height * 3 + self.hole.size


@dataclass
class Job:
    """One inpainting job. ``state``: queued -> running -> done | failed | cancelled."""

    id: str
    spec: InpaintSpec | None
    nbytes: int
    steps: int
    state: str = "queued"
    step: int = 0
    created: float = field(default_factory=time.monotonic)
    finished_at: float | None = None
    seen: float = field(default_factory=time.monotonic)
    error: str | None = None
    error_status: int | None = None
    result: InpaintResult | None = None
    cancel_reason: str | None = None
    done_event: threading.Event = field(default_factory=threading.Event)

    def touch(self) -> None:
        """A client is still interested (polling, an open event stream or a waiting request)."""
        self.seen = time.monotonic()

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES


class InpaintApp:
    """Wraps a loaded :class:`~asuka.pipeline.AsukaInpaintPipeline` for the web server.

    Args:
        pipe: the pipeline (loaded once; jobs use it one at a time).
        model_name: shown on the page (only its last path component is shown).
        default_steps, max_steps: denoising steps when a request gives none (default: the
            model's, ``pipe.default_num_inference_steps``, at most ``max_steps``) / at most.
        max_upload_bytes: request bodies above this are refused (413).
        max_pixels: images and masks with more pixels are refused (413), from the file header.
        max_work_pixels: the most pixels of the region the model works on (413 above).
        crop_margin: crop mode's context margin around the hole, pixels (as ``asuka inpaint``).
        max_queue: jobs that may wait behind the running one; more get 503 + Retry-After.
        max_pending_bytes: decoded inputs of queued and running jobs, in total.
        result_ttl: seconds a finished job (and its PNG) is kept.
        max_result_bytes: total size of kept result PNGs; the oldest go first.
        abandon_after: seconds without any client interest after which a queued or running
            job is cancelled (a page that was closed or reloaded).
        upload_timeout: seconds an upload may stall (nothing arrives) before it is answered 408.
        upload_deadline: seconds a whole request body may take, counted from the end of its
            headers, however steadily it trickles in; then 408. Both are enforced by the HTTP
            layer and reported in :meth:`info`.
        watermark: hide asuka's invisible watermark in every answer (:mod:`asuka.provenance`;
            it changes every pixel slightly). Every answer carries its recipe as PNG metadata.
        threads: torch CPU threads per job; None: :func:`asuka.threads.set_threads`' choice,
            made again before each job (the machine's load changes).
    """

    def __init__(self, pipe, *, model_name: str | None = None, default_steps: int | None = None,
                 max_steps: int = 500, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
                 max_pixels: int = DEFAULT_MAX_PIXELS, max_work_pixels: int = DEFAULT_MAX_WORK_PIXELS,
                 crop_margin: int = 64, max_queue: int = 4, max_pending_bytes: int = 1 << 30,
                 result_ttl: float = 600.0, max_result_bytes: int = 256 << 20,
                 abandon_after: float = 20.0, upload_timeout: float = DEFAULT_UPLOAD_TIMEOUT,
                 upload_deadline: float = DEFAULT_UPLOAD_DEADLINE, watermark: bool = False,
                 threads: int | None = None):
        if default_steps is None:
            default_steps = min(pipe.default_num_inference_steps, max_steps)
        for name, value, low in (("default_steps", default_steps, 1), ("max_steps", max_steps, 1),
                                 ("max_upload_bytes", max_upload_bytes, 1), ("max_pixels", max_pixels, 1),
                                 ("max_work_pixels", max_work_pixels, 1), ("crop_margin", crop_margin, 0),
                                 ("max_queue", max_queue, 0), ("max_pending_bytes", max_pending_bytes, 1),
                                 ("max_result_bytes", max_result_bytes, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
        for name, value in (("result_ttl", result_ttl), ("abandon_after", abandon_after),
                            ("upload_timeout", upload_timeout), ("upload_deadline", upload_deadline)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise InputError(f"{name} must be a number of seconds > 0, got {value!r}")
        if default_steps > max_steps:
            raise InputError(f"default_steps ({default_steps}) must not exceed max_steps ({max_steps})")
        self.pipe = pipe
        # A folder's name, not its path: answers must not reveal the server's file layout.
        self.model_name = Path(str(model_name)).name if model_name else type(pipe).__name__
        self.default_steps, self.max_steps = default_steps, max_steps
        self.max_upload_bytes, self.max_pixels, self.max_work_pixels = max_upload_bytes, max_pixels, max_work_pixels
        self.crop_margin, self.max_queue, self.max_pending_bytes = crop_margin, max_queue, max_pending_bytes
        self.result_ttl, self.max_result_bytes = float(result_ttl), max_result_bytes
        self.abandon_after, self.upload_timeout = float(abandon_after), float(upload_timeout)
        self.upload_deadline = float(upload_deadline)
        self.watermark, self.threads = bool(watermark), threads

        self._lock = threading.Condition()
        self._queue: collections.deque[Job] = collections.deque()
        self._jobs: dict[str, Job] = {}
        self._running: Job | None = None
        self._seconds_per_job = 5.0  # running estimate for Retry-After
        self._decode_lock = threading.Lock()  # one full-size decode at a time bounds its memory
        self._worker: threading.Thread | None = None
        self._closed = False

    # ---------------------------------------------------------------------------- info
    def info(self) -> dict:
        """What ``GET /api/info`` answers: the model's shape and every limit a client meets."""
        pipe = self.pipe
        components = {name: (type(module).__name__ if module is not None else None)
                      for name, module in pipe.components.items()}
        return {
            "model": self.model_name, "components": components, "device": str(pipe.device.type),
            "dtype": str(pipe.dtype).replace("torch.", ""),  # of the denoiser (UNet or transformer)
            "working_resolution": int(pipe.working_resolution), "default_steps": self.default_steps,
            "max_steps": self.max_steps, "max_upload_bytes": self.max_upload_bytes,
            "max_pixels": self.max_pixels, "max_work_pixels": self.max_work_pixels,
            "crop_margin": self.crop_margin, "max_queue": self.max_queue,
            "result_ttl": self.result_ttl, "upload_timeout": self.upload_timeout,
            "upload_deadline": self.upload_deadline,
            "options": list(INPAINT_OPTIONS), "watermark": self.watermark,
            "poisson_blend": pipe.seam_fade(),  # the model's seam blending fade (None: off by default)
        }

    # ---------------------------------------------------------------------------- inputs
    def prepare(self, image_file, mask_file, options: dict) -> InpaintSpec:
        """Check and decode one request: ``image_file`` / ``mask_file`` are file objects or bytes
        of encoded images (``None`` when missing), ``options`` maps names of
        :data:`INPAINT_OPTIONS` to form strings or JSON values. Raises :class:`WebError`."""
        unknown = sorted(set(options) - set(INPAINT_OPTIONS))
        if unknown:
            raise WebError(400, f"unknown field(s) {', '.join(unknown)}; expected image, mask and any of "
                                f"{', '.join(INPAINT_OPTIONS)}", field=unknown[0])
        steps = int_option(options, "steps", self.default_steps, 1, self.max_steps)
        seed = int_option(options, "seed", None, 0, MAX_SEED)
        composite = bool_option(options, "composite", True)
        feather = float_option(options, "feather", 0.0, 0.0, 1000.0)
        poisson_blend = bool_option(options, "poisson_blend", None)
        full_image = bool_option(options, "full_image", False)
        resize_mask = bool_option(options, "resize_mask", False)
        if image_file is None:
            raise WebError(400, "missing field 'image' (the picture, an image file)", field="image")
        if mask_file is None:
            raise WebError(400, "missing field 'mask' (white = hole, an image file of the picture's size)",
                           field="mask")

        with self._decode_lock:
            image = io.pil_to_rgb(self.decode(image_file, "image"))
            hole = self.read_mask(mask_file, "mask", size=image.size, resize=resize_mask)
        height, width = hole.shape
        resolution = int(self.pipe.working_resolution)
        if not hole.any():
            region = (0, 0, 0, 0)
        elif full_image:
            region = (0, 0, height, width)
        else:
            region = hole_region(hole, self.crop_margin, resolution)
        if region[2] * region[3] > self.max_work_pixels:
            what = ("the whole image (full_image=true)" if full_image else
                    "the region around the hole (its bounding box plus the crop margin, at least the model's "
                    f"{resolution} px square)")
            raise WebError(413, f"{what} is {region[3]}x{region[2]} = {region[2] * region[3]:,} pixels; this "
                                f"server works on at most {self.max_work_pixels:,} pixels at once; use a smaller "
                                "hole" + ("" if full_image else " or image") +
                                (", or crop mode (full_image=false)" if full_image else ""),
                           field="full_image" if full_image else "mask")
        # The pipeline blurs the paste-back weight inside the region it works on (the crop box,
        # or the whole image): a seam wider than that region cannot be drawn.
        side = region[2:] if region[2] else (height, width)
        max_feather = max(0, min(side) - 1)
        if feather > max_feather:
            raise WebError(400, f"feather must be a number in [0, {max_feather}] pixels for this image and "
                                f"hole (less than the {side[1]}x{side[0]} region worked on), got {feather:g}",
                           field="feather")
        top, left, h, w = region
        if seed is None:  # drawn here and reported, so any result can be made again
            seed = secrets.randbelow(MAX_SEED + 1)
        return InpaintSpec(image=image, hole=np.ascontiguousarray(hole[top:top + h, left:left + w]),
                           region=region, steps=steps, seed=seed, composite=composite, feather=feather,
                           full_image=full_image, crop_margin=self.crop_margin, poisson_blend=poisson_blend)

    def decode(self, data, what: str) -> PIL.Image.Image:
        """An uploaded file (bytes or a file object) -> decoded PIL image, EXIF orientation applied.

        The pixel count is read from the header and checked before any pixel is decoded.
        """
        fp = _bytes_io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
        if _size_of(fp) == 0:
            raise WebError(400, f"{what}: the uploaded file is empty", field=what)
        try:
            img = PIL.Image.open(fp)
        except PIL.Image.DecompressionBombError:
            raise WebError(413, f"{what}: the image has too many pixels; this server accepts at most "
                                f"{self.max_pixels:,}", field=what) from None
        except PIL.UnidentifiedImageError:
            raise WebError(400, f"{what}: not an image format this server reads (PNG, JPEG, WebP, TIFF, BMP, "
                                "...)", field=what) from None
        except Exception as exc:  # noqa: BLE001 -- a third-party parser on untrusted bytes
            raise WebError(400, f"{what}: cannot read the image header ({type(exc).__name__})", field=what) from None
        width, height = img.size
        if width * height > self.max_pixels:
            raise WebError(413, f"{what} is {width}x{height} = {width * height:,} pixels; this server accepts "
                                f"at most {self.max_pixels:,} pixels", field=what)
        if width == 0 or height == 0:
            raise WebError(400, f"{what} is empty ({width}x{height} pixels)", field=what)
        try:
            img.load()
            return PIL.ImageOps.exif_transpose(img)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 -- damaged data in any of PIL's decoders
            reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
            raise WebError(400, f"{what}: the file is damaged or uses a variant this server cannot decode "
                                f"({reason})", field=what) from None

    def read_mask(self, data, what: str, *, size: tuple[int, int] | None = None, resize: bool = False) -> np.ndarray:
        """An uploaded mask -> ``(H, W)`` bool, True = hole (:mod:`asuka.io`'s rule), checked
        against (or, with ``resize``, resized to) ``size = (width, height)``."""
        mask = binary_mask(self.decode(data, what))
        if size is None or mask.shape == (size[1], size[0]):
            return mask
        width, height = size
        if not resize:
            raise WebError(400, f"{what} size {mask.shape[1]}x{mask.shape[0]} does not match the image size "
                                f"{width}x{height} (width x height); send a mask of the image's size, or "
                                "resize_mask=true to resize it (nearest)", field=what)
        return resize_mask(mask, size)

    def binary_mask(self, mask_file, width=None, height=None) -> tuple[bytes, str | None]:
        """``POST /api/mask``: a mask file -> (PNG of its binary mask, white = hole, note); with
        ``width`` and ``height`` resized to that size (nearest), and the note says so."""
        width = int_option({"width": width}, "width", None, 1, self.max_pixels)
        height = int_option({"height": height}, "height", None, 1, self.max_pixels)
        if (width is None) != (height is None):
            raise WebError(400, "give both width and height (the image's size), or neither",
                           field="height" if height is None else "width")
        if width is not None and width * height > self.max_pixels:
            raise WebError(413, f"width x height = {width * height:,} pixels; this server accepts at most "
                                f"{self.max_pixels:,}", field="width")
        if mask_file is None:
            raise WebError(400, "missing field 'mask' (an image file)", field="mask")
        with self._decode_lock:
            mask = self.read_mask(mask_file, "mask")
            note = None
            if width is not None and mask.shape != (height, width):
                note = f"mask resized from {mask.shape[1]}x{mask.shape[0]} to {width}x{height} (nearest)"
                mask = resize_mask(mask, (width, height))
            return _png_bytes(PIL.Image.fromarray(mask).convert("L")), note

    # ---------------------------------------------------------------------------- jobs
    def submit(self, spec: InpaintSpec) -> Job:
        """Queue a checked request; returns at once. A full queue is a 503 :class:`WebError`
        with ``Retry-After``."""
        with self._lock:
            if self._closed:
                raise WebError(503, "the server is shutting down")
            self._expire()
            pending = sum(j.nbytes for j in self._queue) + (self._running.nbytes if self._running else 0)
            full = len(self._queue) >= self.max_queue and self._running is not None
            if full or (pending and pending + spec.nbytes > self.max_pending_bytes):
                waiting = len(self._queue) + (self._running is not None)
                retry = max(1, math.ceil(self._seconds_per_job * waiting))
                reason = (f"{len(self._queue)} job(s) are already waiting" if full else
                          "the queued images fill this server's memory budget")
                raise WebError(503, f"busy: {reason}; try again in about {retry} s",
                               headers={"Retry-After": str(retry)})
            job = Job(id=secrets.token_urlsafe(12), spec=spec, nbytes=spec.nbytes, steps=spec.steps)
            self._jobs[job.id] = job
            self._queue.append(job)
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="asuka-web-worker", daemon=True)
                self._worker.start()
            self._lock.notify_all()
            return job

    def job(self, job_id: str) -> Job:
        """The job with this id (404 :class:`WebError` when unknown or expired)."""
        with self._lock:
            self._expire()
            job = self._jobs.get(job_id)
        if job is None:
            raise WebError(404, "no such job (unknown id, or its result expired)", field="id")
        return job

    def cancel(self, job_id: str, reason: str = "cancelled by the client") -> Job:
        """Ask a job to stop: a queued job is dropped, a running one stops after its current step."""
        job = self.job(job_id)
        with self._lock:
            if job.finished:
                return job
            job.cancel_reason = reason
            if job.state == "queued":
                self._queue.remove(job)
                self._finish(job, "cancelled", error=reason)
        return job

    def status(self, job: Job) -> dict:
        """A job's state as JSON: ``id, state, step, steps, position`` (jobs ahead of it), and
        ``error`` / ``seed`` / ``seconds`` / ``warning`` / ``width`` / ``height`` when known."""
        with self._lock:
            position = next((k for k, j in enumerate(self._queue) if j is job), None)
            out = {"id": job.id, "state": job.state, "step": job.step, "steps": job.steps,
                   "position": None if position is None else position + (self._running is not None)}
            if job.error:
                out["error"] = job.error
            if job.result is not None:
                r = job.result
                out.update(seed=r.seed, seconds=round(r.seconds, 3), width=r.width, height=r.height,
                           warning=r.warning)
            return out

    def run(self, spec: InpaintSpec, timeout: float | None = None) -> InpaintResult:
        """Submit and wait (for scripts and tests); raises the job's error as :class:`WebError`."""
        job = self.submit(spec)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not job.done_event.wait(1.0):
            job.touch()
            if deadline is not None and time.monotonic() > deadline:
                self.cancel(job.id, f"no result within {timeout:g} s")
        return self.result(job)

    def result(self, job: Job) -> InpaintResult:
        """A finished job's result, or its error as :class:`WebError` (409 while not finished)."""
        if job.state == "done" and job.result is not None:
            return job.result
        if job.state == "done":
            raise WebError(410, "the result was dropped to bound the server's memory; run the job again")
        if job.state == "failed":
            raise WebError(job.error_status or 500, job.error or "failed")
        if job.state == "cancelled":
            raise WebError(409, f"the job was cancelled ({job.error})")
        raise WebError(409, f"the job is {job.state} (step {job.step} of {job.steps}); ask again when it is done")

    def close(self) -> None:
        """Cancel everything and stop the worker."""
        with self._lock:
            self._closed = True
            for job in list(self._queue):
                self._finish(job, "cancelled", error="the server is shutting down")
            self._queue.clear()
            if self._running is not None:
                self._running.cancel_reason = "the server is shutting down"
            self._lock.notify_all()

    # ---------------------------------------------------------------------------- worker
    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closed:
                    self._lock.wait(timeout=1.0)
                    self._expire()
                if self._closed and not self._queue:
                    return
                job = self._queue.popleft()
                job.state, self._running = "running", job
            try:
                started = time.perf_counter()
                result = self._inpaint(job)
                with self._lock:
                    self._seconds_per_job = 0.7 * self._seconds_per_job + 0.3 * (time.perf_counter() - started)
                    job.result = result
                    self._finish(job, "done")
            except Cancelled:
                with self._lock:
                    self._finish(job, "cancelled", error=job.cancel_reason)
            except WebError as exc:
                with self._lock:
                    self._finish(job, "failed", error=exc.message, status=exc.status)
            except InputError as exc:
                with self._lock:
                    self._finish(job, "failed", error=str(exc), status=400)
            except Exception as exc:  # noqa: BLE001 -- a bug or a model failure; logged, answered 500
                log.exception("inpainting job %s failed", job.id)
                with self._lock:
                    self._finish(job, "failed", status=500,
                                 error=f"internal error ({type(exc).__name__}); see the server's log")
            finally:
                with self._lock:
                    self._running = None
                    self._lock.notify_all()

    def _finish(self, job: Job, state: str, *, error: str | None = None, status: int | None = None) -> None:
        """Under the lock: record the outcome, drop the inputs, keep result memory bounded."""
        job.state, job.error, job.error_status = state, error, status
        job.spec, job.finished_at = None, time.monotonic()
        job.done_event.set()
        kept = sorted((j for j in self._jobs.values() if j.result is not None), key=lambda j: j.finished_at)
        total = sum(len(j.result.png) for j in kept)
        for old in kept:  # the oldest first; the newest result is always kept
            if total <= self.max_result_bytes:
                break
            if old is not job:
                total -= len(old.result.png)
                old.result = None

    def _expire(self) -> None:
        """Under the lock: forget finished jobs past ``result_ttl``; cancel abandoned ones."""
        now = time.monotonic()
        for job_id, job in list(self._jobs.items()):
            if job.finished and now - job.finished_at > self.result_ttl:
                del self._jobs[job_id]
            elif not job.finished and now - job.seen > self.abandon_after:
                reason = f"no client asked about it for {self.abandon_after:g} s (page closed?)"
                if job.state == "queued":
                    self._queue.remove(job)
                    self._finish(job, "cancelled", error=reason)
                elif job.cancel_reason is None:
                    job.cancel_reason = reason

    def _inpaint(self, job: Job) -> InpaintResult:
        import torch

        spec = job.spec
        started = time.perf_counter()
        image = spec.image  # the answer: the input with the region replaced (in place, uint8)
        warning = None
        if not spec.hole.any():
            warning = "the mask is empty: the image is returned unchanged"
        else:
            top, left, h, w = spec.region

            def on_step(pipe, step, timestep, tensors):
                job.step = step + 1
                if job.cancel_reason is not None:
                    raise Cancelled(job.cancel_reason)
                if time.monotonic() - job.seen > self.abandon_after:
                    job.cancel_reason = f"no client asked about it for {self.abandon_after:g} s"
                    raise Cancelled(job.cancel_reason)
                return {}

            if job.cancel_reason is not None:
                raise Cancelled(job.cancel_reason)
            crop = image.crop((left, top, left + w, top + h))
            set_threads(self.threads)
            try:
                # Crop mode (padding_mask_crop) explicitly, on the region: the pipeline's own
                # crop box on it is all of it, so the result equals a whole-image call.
                out = self.pipe(
                    crop, spec.hole, num_inference_steps=spec.steps,
                    generator=torch.Generator().manual_seed(spec.seed), composite=spec.composite,
                    feather=spec.feather, padding_mask_crop=None if spec.full_image else spec.crop_margin,
                    poisson_blend=spec.poisson_blend, output_type="pil", callback_on_step_end=on_step).images[0]
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                raise WebError(503, f"out of GPU memory on a {w}x{h} region; try a smaller hole or crop "
                                    "mode (full_image=false)") from None
            image.paste(out, (left, top))
        from asuka.pipeline_base import blend_record  # torch: imported with the model, not with asuka.web

        recipe = provenance.recipe(self.pipe, self.model_name, steps=spec.steps, seed=spec.seed,
                                   composite=spec.composite, feather=spec.feather or None,
                                   poisson_blend=blend_record(self.pipe.seam_fade(spec.poisson_blend)),
                                   crop_margin=None if spec.full_image else spec.crop_margin)
        png = provenance.encode_image(image, recipe=recipe, watermark=self.watermark)
        return InpaintResult(png=png, width=image.width, height=image.height, seed=spec.seed,
                             steps=spec.steps, seconds=time.perf_counter() - started, warning=warning)


# --------------------------------------------------------------------------------------------
# Geometry and masks (uint8 / bool: no float copies of full-size pictures)
# --------------------------------------------------------------------------------------------
def hole_region(hole: np.ndarray, margin: int, resolution: int) -> tuple[int, int, int, int]:
    """The region to hand the pipeline in crop mode: ``(top, left, height, width)``.

    It is the pipeline's own crop box (:func:`asuka.pipeline_base.crop_box`, one definition of
    the geometry) computed on the whole ``(H, W)`` bool mask, without any float copy. Inside
    that region the pipeline's crop box is the whole region (it holds the hole's bounding box,
    whose size alone sets the box's side), so the answer equals a whole-image call in crop mode.
    """
    from asuka.pipeline_base import crop_box  # torch: imported with the model, not with asuka.web

    return crop_box(hole, margin, resolution)


_LEAN_MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")


def binary_mask(img: PIL.Image.Image) -> np.ndarray:
    """``(H, W)`` bool, True = hole, by :func:`asuka.io.mask_from_pil`'s rule (alpha of a
    one-colour layer, else luminance >= 50%), on 8-bit planes: a 50 MP mask costs 50 MB, not
    the float copies of the general function (used for 16-bit and float modes)."""
    if img.mode not in _LEAN_MODES:
        return io.mask_from_pil(img) > 0.5
    if img.mode == "P" or ("transparency" in img.info and img.mode in ("L", "RGB", "1")):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        alpha = img.getchannel("A" if "A" in img.getbands() else "a")
        low, high = alpha.getextrema()
        colour = img.convert("RGB").getextrema()
        if low != high and all(lo == hi for lo, hi in colour):
            return np.asarray(alpha) >= 128
    return np.asarray(img.convert("L")) >= 128


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a bool mask to ``size = (width, height)`` (stays binary)."""
    return np.array(PIL.Image.fromarray(mask).resize(size, PIL.Image.NEAREST))


def _png_bytes(image: PIL.Image.Image) -> bytes:
    buffer = _bytes_io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # lossless; level 1 is several times faster than 6
    return buffer.getvalue()


def _size_of(fp) -> int:
    position = fp.tell()
    fp.seek(0, 2)
    size = fp.tell()
    fp.seek(position)
    return size


# --------------------------------------------------------------------------------------------
# Options: form strings or JSON values -> checked Python values; errors name field and range
# --------------------------------------------------------------------------------------------
def _text(value):
    return value.decode("utf-8", "replace").strip() if isinstance(value, bytes) else (
        value.strip() if isinstance(value, str) else value)


def int_option(fields: dict, name: str, default, low: int, high: int):
    value = _text(fields.get(name))
    if value is None or value == "":
        return default
    number = value
    if isinstance(value, str):
        try:
            number = int(value)
        except ValueError:
            number = None
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    if isinstance(number, bool) or not isinstance(number, int) or not low <= number <= high:
        raise WebError(400, f"{name} must be an integer in [{low}, {high}], got {_short(value)}", field=name)
    return number


def float_option(fields: dict, name: str, default: float, low: float, high: float) -> float:
    value = _text(fields.get(name))
    if value is None or value == "":
        return default
    number = None
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except (ValueError, OverflowError):
            pass
    if number is None or not math.isfinite(number) or not low <= number <= high:
        raise WebError(400, f"{name} must be a number in [{low:g}, {high:g}], got {_short(value)}", field=name)
    return number


_TRUE, _FALSE = ("1", "true", "on", "yes"), ("0", "false", "off", "no")


def bool_option(fields: dict, name: str, default: bool) -> bool:
    value = _text(fields.get(name))
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    raise WebError(400, f"{name} must be true or false, got {_short(value)}", field=name)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
