"""The HTTP side of ``asuka serve``: FastAPI on uvicorn, in front of an :class:`InpaintApp`.

Routes (OpenAPI docs at ``/docs``)
----------------------------------
===============================  ===============================================================
``GET /``                        the page (``static/index.html``, ``app.js``, ``style.css``)
``GET /api/info``                model, device, dtype, steps, every limit
``POST /api/inpaint``            image + mask -> the inpainted PNG (waits; cancelled if the
                                 client goes away)
``POST /api/jobs``               the same input -> ``202 {"id", ...}`` at once
``GET /api/jobs/{id}``           ``{"state", "step", "steps", "position", "error", ...}``
``GET /api/jobs/{id}/events``    the same as server-sent events until the job ends (closing the
                                 stream cancels an unfinished job)
``GET /api/jobs/{id}/result``    the PNG of a finished job (kept ``result_ttl`` seconds)
``DELETE /api/jobs/{id}``        cancel
``POST /api/mask``               a mask file -> its binary mask (white = hole) as PNG
===============================  ===============================================================

Inputs: ``multipart/form-data`` (files ``image``, ``mask``) or ``application/json`` (base64 or
``data:`` URLs); options ``steps``, ``seed``, ``composite``, ``feather``, ``poisson_blend``,
``full_image``, ``resize_mask`` (see :mod:`asuka.web.app`). Errors are JSON ``{"error": message, "field": name}``:
400 bad input, 401 missing token, 403 cross-site, 404, 405 (with ``Allow``), 408 stalled or too
slow upload (nothing for ``upload_timeout`` s, or the body not complete ``upload_deadline`` s
after its headers), 409 result not ready, 413 too large, 503 busy (with ``Retry-After``); 500 only for bugs (no
details; the traceback goes to the log).

Security: requests must carry an allowed ``Host`` (DNS rebinding), state-changing requests must
be same-origin (``Origin`` / ``Sec-Fetch-Site``), and with a token every ``/api/`` request needs
``Authorization: Bearer TOKEN``. The page's CSP allows only its own files.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import secrets
import socket
import threading
from dataclasses import dataclass, field
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from asuka.web.app import (DEFAULT_UPLOAD_DEADLINE, DEFAULT_UPLOAD_TIMEOUT, FINAL_STATES, INPAINT_OPTIONS,
                           InpaintApp, WebError)

log = logging.getLogger("asuka.web")

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
_STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
           "style.css": "text/css; charset=utf-8"}
# The page loads only its own files; results are shown from blob: URLs.
CSP = ("default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")
_MULTIPART_DOC = {
    "requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["image", "mask"], "properties": {
            "image": {"type": "string", "format": "binary", "description": "the picture (PNG, JPEG, WebP, TIFF...)"},
            "mask": {"type": "string", "format": "binary", "description": "white or opaque = hole"},
            "steps": {"type": "integer", "minimum": 1}, "seed": {"type": "integer", "minimum": 0},
            "composite": {"type": "boolean", "default": True},
            "feather": {"type": "number", "minimum": 0, "default": 0},
            "poisson_blend": {"type": "boolean", "description": "seam blending (asuka.seams); default: the model's"},
            "full_image": {"type": "boolean", "default": False},
            "resize_mask": {"type": "boolean", "default": False}}}},
        "application/json": {"schema": {"type": "object", "required": ["image", "mask"], "properties": {
            "image": {"type": "string", "description": "base64 or a data: URL"},
            "mask": {"type": "string", "description": "base64 or a data: URL"}}}}}}}


@dataclass
class Security:
    """Who may talk to the server.

    ``allowed_hosts``: names (without port) accepted in the ``Host`` header; ``"*"`` accepts
    any. ``token``: when set, every ``/api/`` request needs ``Authorization: Bearer TOKEN``.
    """

    allowed_hosts: set[str] = field(default_factory=lambda: set(LOOPBACK_NAMES))
    token: str | None = None

    def host_allowed(self, host: str) -> bool:
        if "*" in self.allowed_hosts:
            return True
        return _hostname(host) in self.allowed_hosts


def _hostname(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:7860
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class _BodyError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


# --------------------------------------------------------------------------------------------
# The guard: a plain ASGI middleware in front of everything
# --------------------------------------------------------------------------------------------
class _Guard:
    """Host allow-list, same-origin and token checks, then the body limits (bytes, stall time
    and total time) enforced while the body is read, so no route sees more than
    ``max_upload_bytes`` nor waits on a body longer than ``upload_deadline``."""

    def __init__(self, app, *, state):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        security: Security = self.state.security
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        method, path = scope["method"], scope["path"]
        host = headers.get("host", "")
        refusal = None
        if not security.host_allowed(host):
            refusal = (400, f"this server does not answer to the host name {_hostname(host)!r} (a DNS "
                            "rebinding guard); its operator can allow it with asuka serve --allowed-host", {})
        elif method not in _SAFE_METHODS and not _same_origin(headers, host):
            refusal = (403, "cross-site request refused: only the page this server serves may send it", {})
        elif security.token and path.startswith("/api/") and not _token_ok(headers, security.token):
            refusal = (401, "this server needs its access token: send 'Authorization: Bearer TOKEN' (the page: "
                            "open the URL that asuka serve printed, with #token=...)",
                       {"WWW-Authenticate": "Bearer"})
        if refusal is None and method not in _SAFE_METHODS:
            limit = self.state.max_upload_bytes()
            length = headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > limit):
                refusal = (413 if length.isdigit() else 400,
                           f"the request body is {length} bytes; this server accepts at most {limit:,} bytes"
                           if length.isdigit() else "invalid Content-Length header", {"Connection": "close"})
            else:
                receive = _limited_receive(receive, limit, self.state.upload_timeout(),
                                           self.state.upload_deadline(), length)
        if refusal is not None:
            status, message, extra = refusal
            await _send_json(send, status, {"error": message, "field": None}, extra)
            return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                added = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
                if b"cache-control" not in names:
                    added.append((b"cache-control", b"no-store"))
                message = {**message, "headers": [*message.get("headers", []), *added]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _same_origin(headers: dict, host: str) -> bool:
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = headers.get("origin")
    if origin is None:
        return True  # not a browser's cross-site request (browsers send Origin on every POST)
    return origin.lower() in (f"http://{host.lower()}", f"https://{host.lower()}")


def _token_ok(headers: dict, token: str) -> bool:
    scheme, _, given = headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(given.strip().encode(), token.encode())


def _limited_receive(receive, limit: int, timeout: float, deadline: float, length: str | None = None):
    """``receive`` for a request body: 413 past ``limit`` bytes, 408 when nothing arrives for
    ``timeout`` s or the body is not complete ``deadline`` s from now (a body trickling in a
    byte at a time within ``timeout`` still ends)."""
    received, done = 0, False
    loop = asyncio.get_running_loop()
    ends = loop.time() + deadline

    def too_slow():
        of = f" of {int(length):,}" if length is not None else ""
        return _BodyError(408, f"the upload took too long: the whole request body must arrive within "
                               f"{deadline:g} s; {received:,}{of} bytes came")

    async def wrapped():
        nonlocal received, done
        if done:  # the body is complete: now only a disconnect can come, with no time limit
            return await receive()
        left = ends - loop.time()
        if left <= 0:
            raise too_slow()
        try:
            message = await asyncio.wait_for(receive(), min(timeout, left))
        except asyncio.TimeoutError:
            if timeout < left:
                raise _BodyError(408, f"the upload stalled: nothing arrived for {timeout:g} s") from None
            raise too_slow() from None
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _BodyError(413, f"the request body is over this server's limit of {limit:,} bytes")
            done = not message.get("more_body", False)
        return message

    return wrapped


async def _send_json(send, status: int, payload: dict, headers: dict | None = None) -> None:
    body = json.dumps(payload).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           (b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store")]
    raw += [(k.lower().encode(), str(v).encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


# --------------------------------------------------------------------------------------------
# The FastAPI app
# --------------------------------------------------------------------------------------------
class _State:
    """What the routes share: the :class:`InpaintApp` (``None`` while the model loads) and the
    security settings."""

    def __init__(self, app: InpaintApp | None, security: Security):
        self.app, self.security = app, security

    def inpaint_app(self) -> InpaintApp:
        if self.app is None:
            raise WebError(503, "the model is still loading; try again in a moment",
                           headers={"Retry-After": "5"})
        return self.app

    def max_upload_bytes(self) -> int:
        return self.app.max_upload_bytes if self.app is not None else 1 << 20

    def upload_timeout(self) -> float:
        return self.app.upload_timeout if self.app is not None else DEFAULT_UPLOAD_TIMEOUT

    def upload_deadline(self) -> float:
        return self.app.upload_deadline if self.app is not None else DEFAULT_UPLOAD_DEADLINE


def create_app(app: InpaintApp | None = None, security: Security | None = None):
    """The FastAPI application serving ``app``. ``app`` may be set later through
    ``fastapi_app.state.asuka.app`` (until then API requests get 503)."""
    state = _State(app, security or Security())
    api = FastAPI(title="asuka serve", version="1", description="ASUKA inpainting: the page's API.",
                  docs_url="/docs", redoc_url=None)
    api.state.asuka = state
    api.add_middleware(_Guard, state=state)

    def error(status: int, message: str, field_name: str | None = None, headers: dict | None = None):
        return JSONResponse({"error": message, "field": field_name}, status_code=status, headers=headers)

    @api.exception_handler(WebError)
    async def _web_error(request, exc: WebError):
        return error(exc.status, exc.message, exc.field, exc.headers)

    @api.exception_handler(_BodyError)
    async def _body_error(request, exc: _BodyError):
        return error(exc.status, exc.message, None, {"Connection": "close"})

    @api.exception_handler(ClientDisconnect)
    async def _gone(request, exc):
        return Response(status_code=400)  # nobody is listening

    @api.exception_handler(HTTPException)
    async def _http_error(request, exc: HTTPException):
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(api, request.url.path))
            message = f"{request.method} is not allowed here; use {headers['Allow']}"
        elif exc.status_code == 404:
            message = f"no such page: {request.url.path}"
        else:
            message = str(exc.detail)
            if exc.status_code == 400:  # the multipart parser's complaints
                message = f"malformed multipart/form-data body: {message}"
        return error(exc.status_code, message, None, headers)

    @api.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return error(400, f"{where or 'request'}: {first.get('msg', 'invalid')}", where)

    @api.exception_handler(Exception)
    async def _bug(request, exc: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error(500, f"internal error ({type(exc).__name__}); see the server's log")

    # ------------------------------------------------------------------------ page
    def static(name: str):
        body = resources.files("asuka.web").joinpath("static", name).read_bytes()
        headers = {"Content-Security-Policy": CSP} if name.endswith(".html") else {}
        return Response(body, media_type=_STATIC[name], headers=headers)

    @api.get("/", include_in_schema=False)
    async def page():
        return static("index.html")

    @api.get("/static/{name}", include_in_schema=False)
    async def static_file(name: str):
        if name not in _STATIC:
            raise WebError(404, f"no such page: /static/{name}")
        return static(name)

    # ------------------------------------------------------------------------ API
    @api.get("/api/info", summary="The model and this server's limits")
    async def info():
        return state.inpaint_app().info()

    async def read_inpaint_request(request: Request):
        inpaint_app = state.inpaint_app()
        image, mask, options = await _read_fields(request, files=("image", "mask"))
        return inpaint_app, await run_in_threadpool(inpaint_app.prepare, image, mask, options)

    @api.post("/api/inpaint", summary="Inpaint and wait: multipart or JSON in, PNG out",
              openapi_extra=_MULTIPART_DOC,
              responses={200: {"content": {"image/png": {}}, "description": "the inpainted image"}})
    async def inpaint(request: Request):
        inpaint_app, spec = await read_inpaint_request(request)
        job = inpaint_app.submit(spec)
        while not job.done_event.is_set():
            if await request.is_disconnected():
                inpaint_app.cancel(job.id, "the client closed the connection")
                return Response(status_code=400)  # nobody is listening
            job.touch()
            await asyncio.sleep(0.05)
        result = inpaint_app.result(job)
        headers = {"X-Asuka-Seed": str(result.seed), "X-Asuka-Steps": str(result.steps),
                   "X-Asuka-Seconds": f"{result.seconds:.3f}"}
        if result.warning:
            headers["X-Asuka-Warning"] = result.warning
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse({
                "image": "data:image/png;base64," + base64.b64encode(result.png).decode("ascii"),
                "width": result.width, "height": result.height, "seed": result.seed, "steps": result.steps,
                "seconds": round(result.seconds, 3), "warning": result.warning}, headers=headers)
        return Response(result.png, media_type="image/png", headers=headers)

    @api.post("/api/jobs", status_code=202, summary="Queue an inpainting job; returns its id at once",
              openapi_extra=_MULTIPART_DOC)
    async def submit(request: Request):
        inpaint_app, spec = await read_inpaint_request(request)
        job = inpaint_app.submit(spec)
        return JSONResponse({**inpaint_app.status(job), "url": f"/api/jobs/{job.id}",
                             "events": f"/api/jobs/{job.id}/events", "result": f"/api/jobs/{job.id}/result"},
                            status_code=202)

    @api.get("/api/jobs/{job_id}", summary="A job's state and progress")
    async def job_status(job_id: str):
        inpaint_app = state.inpaint_app()
        job = inpaint_app.job(job_id)
        job.touch()
        return inpaint_app.status(job)

    @api.delete("/api/jobs/{job_id}", summary="Cancel a job")
    async def job_cancel(job_id: str):
        inpaint_app = state.inpaint_app()
        return inpaint_app.status(inpaint_app.cancel(job_id))

    @api.get("/api/jobs/{job_id}/events", summary="Progress as server-sent events",
             responses={200: {"content": {"text/event-stream": {}}}})
    async def job_events(job_id: str):
        inpaint_app = state.inpaint_app()
        job = inpaint_app.job(job_id)

        async def stream():
            last, quiet_for = None, 0.0
            try:
                while True:
                    job.touch()
                    status = inpaint_app.status(job)
                    if status != last:
                        yield f"event: {status['state']}\ndata: {json.dumps(status)}\n\n"
                        last, quiet_for = status, 0.0
                    elif quiet_for >= 1.0:  # a comment line: a client that left is noticed
                        yield ": waiting\n\n"
                        quiet_for = 0.0
                    if status["state"] in FINAL_STATES:
                        return
                    await asyncio.sleep(0.1)
                    quiet_for += 0.1
            finally:  # the client went away (or the job ended): nobody waits for it any more
                if not job.finished:
                    inpaint_app.cancel(job.id, "the client closed the event stream")

        return StreamingResponse(stream(), media_type="text/event-stream")

    @api.get("/api/jobs/{job_id}/result", summary="The PNG of a finished job",
             responses={200: {"content": {"image/png": {}}}})
    async def job_result(job_id: str):
        inpaint_app = state.inpaint_app()
        job = inpaint_app.job(job_id)
        job.touch()
        result = inpaint_app.result(job)
        headers = {"X-Asuka-Seed": str(result.seed), "X-Asuka-Steps": str(result.steps),
                   "X-Asuka-Seconds": f"{result.seconds:.3f}"}
        if result.warning:
            headers["X-Asuka-Warning"] = result.warning
        return Response(result.png, media_type="image/png", headers=headers)

    @api.post("/api/mask", summary="A mask file -> its binary mask (white = hole), optionally resized",
              responses={200: {"content": {"image/png": {}}}})
    async def mask(request: Request):
        inpaint_app = state.inpaint_app()
        _, mask_file, options = await _read_fields(request, files=("mask",))
        unknown = sorted(set(options) - {"width", "height"})
        if unknown:
            raise WebError(400, f"unknown field(s) {', '.join(unknown)}; expected mask, width, height",
                           field=unknown[0])
        png, note = await run_in_threadpool(inpaint_app.binary_mask, mask_file, options.get("width"),
                                            options.get("height"))
        return Response(png, media_type="image/png", headers={"X-Asuka-Note": note} if note else None)

    return api


def _allowed_methods(api, path: str) -> list[str]:
    methods = set()
    for route in api.routes:
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


async def _read_fields(request, files: tuple[str, ...]):
    """A multipart or JSON body -> (image file or None, mask file or None, {option: value}).

    ``files`` names the file fields; for ``/api/mask`` only ``mask``, returned second.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    found: dict = {}
    options: dict = {}
    if content_type == "multipart/form-data":
        form = await request.form(max_files=len(files), max_fields=len(INPAINT_OPTIONS) + 2,
                                  max_part_size=64 * 1024)
        for name, value in form.multi_items():
            if name in found or name in options:
                raise WebError(400, f"field {name!r} given twice", field=name)
            if name in files:
                if isinstance(value, str):
                    raise WebError(400, f"{name} must be a file upload (an image), got a text field", field=name)
                found[name] = value.file
            elif isinstance(value, str):
                options[name] = value
            else:
                raise WebError(400, f"{name} must be a text field, got a file", field=name)
    elif content_type == "application/json":
        body = await request.body()
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise WebError(400, f"the request body is not valid JSON: {exc}") from None
        except RecursionError:
            raise WebError(400, "the JSON body is nested too deeply; send a flat object of fields") from None
        if not isinstance(data, dict):
            raise WebError(400, f"the JSON body must be an object of fields, got {type(data).__name__}")
        for name, value in data.items():
            if name in files:
                found[name] = _base64_file(name, value)
            elif isinstance(value, (dict, list)):
                raise WebError(400, f"{name} must be a string, number or boolean, got {type(value).__name__}",
                               field=name)
            else:
                options[name] = value
    else:
        raise WebError(400, f"unsupported Content-Type {request.headers.get('content-type', '')[:60]!r}; "
                            "send multipart/form-data or application/json")
    if files == ("mask",):
        return None, found.get("mask"), options
    return found.get("image"), found.get("mask"), options


def _base64_file(name: str, value) -> bytes:
    if not isinstance(value, str):
        raise WebError(400, f"{name} must be a base64 string or a data: URL, got {type(value).__name__}",
                       field=name)
    if value.startswith("data:"):
        header, comma, value = value.partition(",")
        if not comma or not header.endswith(";base64"):
            raise WebError(400, f"{name}: only base64 data: URLs are accepted (data:image/png;base64,...)",
                           field=name)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WebError(400, f"{name} is not valid base64: {exc}", field=name) from None


# --------------------------------------------------------------------------------------------
# Serving: bind first (a busy port fails before the model loads), then uvicorn
# --------------------------------------------------------------------------------------------
class InpaintServer:
    """uvicorn serving :func:`create_app` on an already bound socket.

    ``app`` may be set after binding (``asuka serve`` binds first, then loads the model); until
    then API requests get 503. ``serve_forever()`` blocks; ``shutdown()`` (from another thread)
    stops it; ``server_close()`` closes the socket.
    """

    def __init__(self, sock: socket.socket, app: InpaintApp | None, security: Security, *, quiet: bool):
        import uvicorn

        self.socket = sock
        self.security = security
        self.fastapi = create_app(app, security)
        self._state: _State = self.fastapi.state.asuka
        config = uvicorn.Config(
            self.fastapi, log_level="warning" if quiet else "info",
            access_log=not quiet, server_header=False, date_header=False, timeout_keep_alive=5,
            # Far above the page's needs; slow or idle sockets cost little on the event loop.
            limit_concurrency=1000, backlog=256, h11_max_incomplete_event_size=64 * 1024)
        self._uvicorn = uvicorn.Server(config)
        self.started = threading.Event()
        self._serving = False
        self._stopped = threading.Event()

    @property
    def app(self) -> InpaintApp | None:
        return self._state.app

    @app.setter
    def app(self, value: InpaintApp | None) -> None:
        self._state.app = value

    @property
    def server_address(self):
        return self.socket.getsockname()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        if host in ("0.0.0.0", "::"):  # listening everywhere: this machine reaches it via loopback
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    def serve_forever(self) -> None:
        async def main():
            serving = asyncio.create_task(self._uvicorn.serve(sockets=[self.socket]))
            while not self._uvicorn.started and not serving.done():
                await asyncio.sleep(0.01)
            self.started.set()
            await serving

        self._serving = True
        try:
            asyncio.run(main())
        finally:
            self.started.set()
            self._stopped.set()
            if self.app is not None:
                self.app.close()

    def shutdown(self) -> None:
        self._uvicorn.should_exit = True

    def server_close(self) -> None:
        # uvicorn still unregisters the socket while it shuts down: close it only after that.
        if self._serving:
            self._stopped.wait(timeout=10)
        self.socket.close()


def make_server(app: InpaintApp | None, host: str = "127.0.0.1", port: int = 7860, *, quiet: bool = False,
                allowed_hosts: list[str] | tuple[str, ...] = (), token: str | None = None) -> InpaintServer:
    """Bind ``host:port`` (``port=0``: any free port; see ``server.url``) and return an
    :class:`InpaintServer`. ``host`` (unless a wildcard) and ``allowed_hosts`` join the loopback
    names in the Host allow-list. Raises :class:`InputError` when the address cannot be bound."""
    from asuka.errors import InputError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(256)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise InputError(f"cannot listen on {host}:{port}: {reason}; choose another --port or --host") from None
    names = set(LOOPBACK_NAMES) | {_hostname(h) if h != "*" else "*" for h in allowed_hosts}
    if host not in ("0.0.0.0", "::", ""):
        names.add(host.lower())
    return InpaintServer(sock, app, Security(allowed_hosts=names, token=token), quiet=quiet)
