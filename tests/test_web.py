"""``asuka serve``: the FastAPI app through the ASGI test client (tiny random pipeline), and a
few checks on a real uvicorn socket on 127.0.0.1 (disconnects, the CLI). Local traffic only."""

import argparse
import asyncio
import base64
import http.client
import io
import json
import re
import socket
import threading
import time
import zlib

import numpy as np
import PIL.Image
import pytest
import torch

from asuka import io as aio
from asuka.errors import CheckpointError, InputError
from asuka.web import InpaintApp, create_app, make_server
from asuka.web.app import binary_mask
from asuka.web.server import Security

pytest.importorskip("httpx", reason="the ASGI test client needs httpx (pip install -e '.[test]')")
from fastapi.testclient import TestClient  # noqa: E402

H, W = 48, 64
MAX_UPLOAD = 200_000
MAX_PIXELS = 10_000
BASE = "http://127.0.0.1:7860"


@pytest.fixture(scope="module")
def pipe():
    from asuka.testing import tiny_pipeline

    return tiny_pipeline(0)


class GatedPipe:
    """The tiny pipeline, recording the size of every input and waiting for ``gate`` before
    each step, so a test can hold a job in the running state."""

    def __init__(self, pipe):
        self.pipe, self.sizes = pipe, []
        self.gate, self.stepping = threading.Event(), threading.Event()

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def __call__(self, image, mask, **kwargs):
        self.sizes.append(image.size)
        callback = kwargs.pop("callback_on_step_end")

        def gated(pipe, step, timestep, tensors):
            self.stepping.set()
            assert self.gate.wait(20), "test gate never opened"
            return callback(pipe, step, timestep, tensors)

        return self.pipe(image, mask, callback_on_step_end=gated, **kwargs)


def _app(pipe, **kwargs):
    options = dict(model_name="/secret/path/tiny", default_steps=2, max_steps=20, max_upload_bytes=MAX_UPLOAD,
                   max_pixels=MAX_PIXELS, max_queue=0)
    options.update(kwargs)
    return InpaintApp(pipe, **options)


def _client(app, security=None, **kwargs):
    return TestClient(create_app(app, security), base_url=BASE, **kwargs)


@pytest.fixture(scope="module")
def client(pipe):
    app = _app(pipe)
    with _client(app) as c:
        yield c
    app.close()


def _png(array) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _photo(seed=0, h=H, w=W):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def _hole(h=H, w=W):
    mask = np.zeros((h, w), np.uint8)
    mask[10:30, 20:44] = 255
    return mask


def _files(image=None, mask=None):
    files = {}
    if image is not None:
        files["image"] = ("image.png", image, "image/png")
    if mask is not None:
        files["mask"] = ("mask.png", mask, "image/png")
    return files


def _post(client, path="/api/inpaint", image=None, mask=None, **data):
    return client.post(path, files=_files(image, mask), data={k: str(v) for k, v in data.items()})


def _decode(png_bytes):
    return np.asarray(PIL.Image.open(io.BytesIO(png_bytes)).convert("RGB"))


def _error(response, status, *needles, field=None):
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    answer = response.json()
    message = answer["error"]
    assert "Traceback" not in message and "/secret" not in message and "site-packages" not in message
    for needle in needles:
        assert needle in message, message
    if field is not None:
        assert answer["field"] == field, answer
    return message


# ------------------------------------------------------------------ the page
def test_page_is_served_self_contained_with_csp(client):
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    page = response.text
    for needle in ('id="image-canvas"', 'id="mask-canvas"', 'id="brush-size"', 'id="run"', 'id="cancel"',
                   'id="download"', 'id="undo"', 'id="redo"', 'id="compare"', 'id="history"',
                   'src="/static/app.js"', 'href="/static/style.css"'):
        assert needle in page, needle
    texts = [page]
    for path, kind in (("/static/app.js", "text/javascript"), ("/static/style.css", "text/css")):
        response = client.get(path)
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
        assert response.headers["x-content-type-options"] == "nosniff"
        texts.append(response.text)
    assert "/api/jobs" in texts[1] and "/api/mask" in texts[1]
    for text in texts:  # works offline: no CDN, no external fetch
        assert not re.search(r"https?://|//cdn|@import", text)
    _error(client.get("/static/server.py"), 404, "no such page")
    _error(client.get("/static/../app.py"), 404)


def test_info_reveals_no_paths_or_versions(client):
    response = client.get("/api/info")
    info = response.json()
    assert response.status_code == 200 and info["model"] == "tiny" and info["default_steps"] == 2
    assert info["components"]["mae"] == "MAEPrior" and info["components"]["text_encoder"] is None
    assert info["max_upload_bytes"] == MAX_UPLOAD and info["max_pixels"] == MAX_PIXELS
    assert info["working_resolution"] == 64 and info["device"] == "cpu" and info["dtype"] == "float32"
    assert "version" not in info and "/secret" not in response.text
    assert "server" not in response.headers
    docs = client.get("/docs")
    assert docs.status_code == 200
    schema = client.get("/openapi.json").json()
    assert "/api/inpaint" in schema["paths"] and "/api/jobs/{job_id}" in schema["paths"]
    assert schema["info"]["version"] == "1"  # the API's version, not the package's


# ------------------------------------------------------------------ inpainting
def test_inpaint_keeps_known_pixels_and_is_reproducible(client):
    image, mask = _photo(), _hole()
    response = _post(client, image=_png(image), mask=_png(mask), seed=7)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.headers["x-asuka-seed"] == "7" and response.headers["x-asuka-steps"] == "2"
    out = _decode(response.content)
    assert out.shape == (H, W, 3)
    keep = mask == 0
    assert np.array_equal(out[keep], image[keep]) and not np.array_equal(out[~keep], image[~keep])
    assert _post(client, image=_png(image), mask=_png(mask), seed=7).content == response.content
    other = _decode(_post(client, image=_png(image), mask=_png(mask), seed=8).content)
    assert not np.array_equal(other, out)


def test_json_request_equals_form_request_and_random_seed_is_reported(client):
    image, mask = _photo(1), _hole()
    form = _decode(_post(client, image=_png(image), mask=_png(mask), seed=3, steps=3).content)
    payload = {"image": "data:image/png;base64," + base64.b64encode(_png(image)).decode(),
               "mask": base64.b64encode(_png(mask)).decode(), "seed": 3, "steps": 3}
    response = client.post("/api/inpaint", json=payload, headers={"Accept": "application/json"})
    answer = response.json()
    assert response.status_code == 200 and answer["width"] == W and answer["height"] == H and answer["seed"] == 3
    assert np.array_equal(_decode(base64.b64decode(answer["image"].split(",", 1)[1])), form)
    del payload["seed"]
    response = client.post("/api/inpaint", json=payload)  # PNG answer
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    seed = int(response.headers["x-asuka-seed"])
    assert _post(client, image=_png(image), mask=_png(mask), seed=seed, steps=3).content == response.content


def test_options_composite_feather_full_image_resized_and_empty_mask(client):
    image, mask = _photo(2), _hole()
    plain = _decode(_post(client, image=_png(image), mask=_png(mask), seed=1).content)
    raw = _decode(_post(client, image=_png(image), mask=_png(mask), seed=1, composite="false").content)
    keep = mask == 0
    assert np.array_equal(raw[~keep], plain[~keep]) and not np.array_equal(raw[keep], image[keep])
    response = _post(client, image=_png(image), mask=_png(mask[::2, ::2]), seed=1, resize_mask="true",
                     full_image="on", feather="2.5")
    assert response.status_code == 200 and _decode(response.content).shape == (H, W, 3)
    response = _post(client, image=_png(image), mask=_png(np.zeros((H, W), np.uint8)))
    assert response.status_code == 200 and np.array_equal(_decode(response.content), image)
    assert "empty" in response.headers["x-asuka-warning"]


def test_seam_blending_option_follows_the_model_and_is_recorded(tmp_path):
    """``poisson_blend``: the model folder's default when absent (reported in /api/info), on or off
    when given; the same image as the pipeline's call; the fade used is in the output's recipe."""
    from asuka import provenance
    from asuka.pipeline import AsukaInpaintPipeline
    from asuka.testing import tiny_components

    blending = AsukaInpaintPipeline(**tiny_components(0), default_poisson_blend=2)
    blending.set_progress_bar_config(disable=True)
    app = _app(blending)
    image, mask = _photo(3), _hole()
    try:
        with _client(app) as c:
            assert c.get("/api/info").json()["poisson_blend"] == 2.0
            outputs = {}
            for value in (None, "true", "false"):
                fields = {"seed": 4} if value is None else {"seed": 4, "poisson_blend": value}
                response = _post(c, image=_png(image), mask=_png(mask), **fields)
                assert response.status_code == 200, response.text
                outputs[value] = response.content
        recipes = {k: provenance.read_recipe(PIL.Image.open(io.BytesIO(v)))["poisson_blend"]
                   for k, v in outputs.items()}
        assert recipes == {None: 2.0, "true": 2.0, "false": False}
        for value, blend in ((None, None), ("false", False)):
            reference = blending(image, mask, num_inference_steps=2, generator=torch.Generator().manual_seed(4),
                                 poisson_blend=blend).images[0]
            assert np.array_equal(_decode(outputs[value]), np.asarray(reference))
        assert np.array_equal(_decode(outputs[None]), _decode(outputs["true"]))
        assert not np.array_equal(_decode(outputs[None]), _decode(outputs["false"]))
    finally:
        app.close()


def test_crop_region_equals_the_pipelines_whole_image_crop_mode(pipe):
    """The app cuts a region around the hole before the pipeline sees any pixel; the answer
    is byte-identical to the pipeline's own crop mode on the whole image."""
    gated = GatedPipe(pipe)
    gated.gate.set()
    app = InpaintApp(gated, default_steps=2, crop_margin=8)
    image = _photo(4, 300, 420)
    try:
        for y0, y1, x0, x1 in [(100, 120, 200, 230), (0, 10, 0, 15), (290, 300, 400, 420), (20, 280, 30, 60)]:
            mask = np.zeros((300, 420), np.uint8)
            mask[y0:y1, x0:x1] = 255
            spec = app.prepare(_png(image), _png(mask), {"seed": 5, "feather": 2})
            web = _decode(app.run(spec).png)
            reference = pipe(image, mask, num_inference_steps=2, generator=torch.Generator().manual_seed(5),
                             padding_mask_crop=8, feather=2.0).images[0]
            assert np.array_equal(web, np.asarray(reference))
        # The region is the pipeline's crop box itself: max(bbox + 2 * 8, 64) square, clamped.
        assert gated.sizes == [(64, 64)] * 3 + [(276, 276)]
    finally:
        app.close()


def test_large_photo_with_small_hole_only_converts_the_region(pipe):
    gated = GatedPipe(pipe)
    gated.gate.set()
    app = InpaintApp(gated, default_steps=1, crop_margin=16, max_work_pixels=20_000)
    image = np.zeros((2000, 3000, 3), np.uint8)
    image[:, :, 0] = 120
    mask = np.zeros((2000, 3000), np.uint8)
    mask[1000:1010, 1500:1520] = 255
    try:
        result = app.run(app.prepare(_png(image), _png(mask), {"seed": 0}))
        assert (result.width, result.height) == (3000, 2000)
        assert gated.sizes == [(64, 64)]  # the pipeline's 64 px crop box around the hole, not 6 MP
        out = _decode(result.png)
        assert np.array_equal(out[mask == 0], image[mask == 0])
        with pytest.raises(InputError, match="full_image=true. is 3000x2000 = 6,000,000 pixels") as info:
            app.prepare(_png(image), _png(mask), {"full_image": "true"})
        assert info.value.status == 413 and info.value.field == "full_image"
        mask[:200, :150] = 255  # a bounding box of 1520 x 1010 (with the small hole): too large a crop box
        with pytest.raises(InputError, match=r"around the hole .* is 1552x1552 = 2,408,704 pixels") as info:
            app.prepare(_png(image), _png(mask), {})
        assert info.value.status == 413 and info.value.field == "mask"
    finally:
        app.close()


def test_mask_endpoint_reads_alpha_masks_and_resizes(client):
    stroke = np.zeros((H // 2, W // 2, 4), np.uint8)
    stroke[5:15, 10:22, 3] = 255  # one colour on a transparent layer: the alpha is the mask
    response = _post(client, "/api/mask", mask=_png(stroke), width=W, height=H)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.headers["x-asuka-note"] == f"mask resized from {W // 2}x{H // 2} to {W}x{H} (nearest)"
    expected = np.zeros((H, W), np.uint8)
    expected[10:30, 20:44] = 255
    assert np.array_equal(np.asarray(PIL.Image.open(io.BytesIO(response.content))), expected)
    response = _post(client, "/api/mask", mask=_png(_hole()), width=W, height=H)
    assert response.status_code == 200 and "x-asuka-note" not in response.headers
    _error(_post(client, "/api/mask", mask=_png(_hole()), width=W), 400, "both width and height", field="height")
    _error(_post(client, "/api/mask", mask=_png(_hole()), size=3), 400, "unknown field(s) size", field="size")


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "I;16", "CMYK"])
def test_lean_mask_reading_follows_the_io_rule(mode):
    rng = np.random.default_rng(0)
    base = PIL.Image.fromarray((rng.random((20, 30, 4)) * 255).astype(np.uint8), "RGBA")
    images = [base.convert(mode)]
    if mode in ("LA", "RGBA"):  # one colour with varying alpha: the alpha rule
        layer = np.zeros((20, 30, 4), np.uint8)
        layer[..., 3] = (rng.random((20, 30)) * 255).astype(np.uint8)
        images.append(PIL.Image.fromarray(layer, "RGBA").convert(mode))
    for img in images:
        assert np.array_equal(binary_mask(img), aio.mask_from_pil(img) > 0.5)


# ------------------------------------------------------------------ bad input: 4xx before any model work
BAD_FORMS = [
    (dict(image="IMG"), "missing field 'mask'", "mask"),
    (dict(mask="MASK"), "missing field 'image'", "image"),
    (dict(image=b"this is not an image", mask="MASK"), "image: not an image format", "image"),
    (dict(image="TRUNCATED", mask="MASK"), "image: the file is damaged", "image"),
    (dict(image="IMG", mask=b""), "mask: the uploaded file is empty", "mask"),
    (dict(image="IMG", mask="SMALL"), "mask size 32x24 does not match the image size 64x48", "mask"),
    (dict(image="IMG", mask="MASK", steps=0), "steps must be an integer in [1, 20], got '0'", "steps"),
    (dict(image="IMG", mask="MASK", steps=21), "steps must be an integer in [1, 20], got '21'", "steps"),
    (dict(image="IMG", mask="MASK", steps="ten"), "steps must be an integer", "steps"),
    (dict(image="IMG", mask="MASK", seed=-1), "seed must be an integer in [0, ", "seed"),
    (dict(image="IMG", mask="MASK", composite="maybe"), "composite must be true or false, got 'maybe'", "composite"),
    (dict(image="IMG", mask="MASK", feather="nan"), "feather must be a number", "feather"),
    (dict(image="IMG", mask="MASK", feather=60), "feather must be a number in [0, 47] pixels", "feather"),
    (dict(image="IMG", mask="MASK", poisson_blend="8"), "poisson_blend must be true or false, got '8'",
     "poisson_blend"),
    (dict(image="IMG", mask="MASK", stpes=3), "unknown field(s) stpes", "stpes"),
]


@pytest.mark.parametrize("fields, needle, field", BAD_FORMS, ids=[n.split(":")[0][:30] for _, n, _ in BAD_FORMS])
def test_bad_form_input_is_400_naming_the_field_before_the_model_runs(pipe, fields, needle, field):
    gated = GatedPipe(pipe)
    app = _app(gated)
    named = {"IMG": _png(_photo()), "MASK": _png(_hole()), "SMALL": _png(_hole(24, 32)),
             "TRUNCATED": _png(_photo())[:200]}
    files, data = {}, {}
    for name, value in fields.items():
        value = named.get(value, value) if isinstance(value, str) else value
        if name in ("image", "mask"):
            files[name] = (f"{name}.png", value, "image/png")
        else:
            data[name] = str(value)
    with _client(app) as c:
        _error(c.post("/api/inpaint", files=files, data=data), 400, needle, field=field)
    assert gated.sizes == []  # nothing reached the model
    app.close()


def test_corrupt_cmyk_tiff_is_400(client):
    buffer = io.BytesIO()
    PIL.Image.fromarray(_photo()).convert("CMYK").save(buffer, format="TIFF", compression="tiff_lzw")
    data = bytearray(buffer.getvalue())
    data[len(data) // 2: len(data) // 2 + 400] = b"\xff" * 400  # damage the compressed strips
    response = client.post("/api/inpaint", files={"image": ("a.tif", bytes(data), "image/tiff"),
                                                  "mask": ("m.png", _png(_hole()), "image/png")})
    assert response.status_code in (200, 400)
    truncated = buffer.getvalue()[:300]
    _error(client.post("/api/inpaint", files={"image": ("a.tif", truncated, "image/tiff"),
                                              "mask": ("m.png", _png(_hole()), "image/png")}), 400, "image", field="image")


@pytest.mark.parametrize("body, content_type, needle", [
    (b"{not json", "application/json", "not valid JSON"),
    (b"[1, 2]", "application/json", "must be an object of fields, got list"),
    (b"[" * 100_000, "application/json", "nested too deeply"),
    (b'{"image": "@@@", "mask": "AAAA"}', "application/json", "image is not valid base64"),
    (b'{"image": 5, "mask": "AAAA"}', "application/json", "image must be a base64 string"),
    (b'{"steps": {"a": [1]}}', "application/json", "steps must be a string, number or boolean"),
    (b"image=1", "application/x-www-form-urlencoded", "unsupported Content-Type"),
    (b"--x\r\nno header end", "multipart/form-data; boundary=x", "malformed multipart"),
    (b"abc", "multipart/form-data", "malformed multipart"),
    (b"--x\r\n\r\n--x--\r\n", "multipart/form-data; boundary*=utf-8''x", "malformed multipart"),
])
def test_bad_body_is_400_with_a_message(client, body, content_type, needle):
    _error(client.post("/api/inpaint", content=body, headers={"Content-Type": content_type}), 400, needle)


def test_text_instead_of_file_and_duplicated_fields_are_400(client):
    _error(client.post("/api/inpaint", files={"image": (None, "x"), "mask": (None, "y")}), 400,
           "image must be a file upload", field="image")
    body = (b"--b\r\nContent-Disposition: form-data; name=\"steps\"\r\n\r\n2\r\n"
            b"--b\r\nContent-Disposition: form-data; name=\"steps\"\r\n\r\n3\r\n--b--\r\n")
    _error(client.post("/api/inpaint", content=body, headers={"Content-Type": "multipart/form-data; boundary=b"}),
           400, "field 'steps' given twice", field="steps")


def test_oversized_bodies_and_images_are_413_before_decoding(client):
    big = np.random.default_rng(0).integers(0, 256, (200, 400, 3), dtype=np.uint8)  # ~240 kB as PNG
    _error(_post(client, image=_png(big), mask=_png(_hole())), 413, "at most 200,000 bytes")

    def chunks():  # no Content-Length: counted while it streams
        for _ in range(30):
            yield b"x" * 10_000

    _error(client.post("/api/inpaint", content=chunks(), headers={"Content-Type": "application/json"}),
           413, "over this server's limit of 200,000 bytes")
    wide = np.zeros((100, 120, 3), np.uint8)  # small file, 12,000 pixels > 10,000
    _error(_post(client, image=_png(wide), mask=_png(_hole())), 413, "image is 120x100 = 12,000 pixels",
           "at most 10,000", field="image")
    # A header that claims 9000x9000 pixels over the data of a small image: refused from the
    # header alone (decoding it would fail with "damaged" instead).
    buffer = io.BytesIO()
    PIL.Image.new("1", (400, 400)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = (9000).to_bytes(4, "big") * 2
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # a valid IHDR chunk
    _error(_post(client, image=bytes(data), mask=_png(_hole())), 413, "9000x9000 = 81,000,000", field="image")


def test_stalled_upload_is_408(pipe):
    app = _app(pipe, upload_timeout=0.2)
    api = create_app(app)
    sent, messages = [], []

    async def receive():
        if not sent:
            sent.append(1)
            return {"type": "http.request", "body": b"--x\r\n", "more_body": True}
        await asyncio.sleep(30)

    async def send(message):
        messages.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/api/inpaint", "raw_path": b"/api/inpaint", "query_string": b"",
             "root_path": "", "server": ("127.0.0.1", 7860), "client": ("127.0.0.1", 5000),
             "headers": [(b"host", b"127.0.0.1:7860"), (b"content-type", b"multipart/form-data; boundary=x")]}
    started = time.monotonic()
    asyncio.run(api(scope, receive, send))
    assert time.monotonic() - started < 10
    assert messages[0]["status"] == 408
    assert "stalled" in json.loads(messages[1]["body"])["error"]
    app.close()


def test_trickling_upload_gets_408_at_the_whole_body_deadline_on_a_live_socket(pipe):
    """A byte every 0.05 s never stalls for upload_timeout (0.5 s), yet the body must be complete
    upload_deadline (1.5 s) after its headers: 408 then, no job, and other clients are served."""
    app = _app(pipe, upload_timeout=0.5, upload_deadline=1.5)
    server = make_server(app, "127.0.0.1", 0, quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert server.started.wait(20)
        port = server.server_address[1]
        sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        sock.sendall((f"POST /api/inpaint HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 100000\r\n"
                      "Content-Type: multipart/form-data; boundary=x\r\n\r\n--x\r\n").encode())
        started, answer, sent = time.monotonic(), b"", 0
        sock.settimeout(0.05)
        while b"\r\n\r\n" not in answer and time.monotonic() - started < 20:
            try:
                sock.sendall(b"a")
                sent += 1
            except OSError:  # the server answered and closed; read what it sent
                pass
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            answer += chunk
            if sent == 5:  # meanwhile the server answers others at once
                assert _get(server, "/api/info")[0] == 200
        elapsed = time.monotonic() - started
        sock.settimeout(5)
        answer = _recv_answer_from(sock, answer)
        sock.close()
        assert answer.startswith("HTTP/1.1 408"), answer
        assert 1.5 <= elapsed < 10, elapsed  # the deadline, not the stall limit, and not later
        body = json.loads(answer.split("\r\n\r\n", 1)[1])
        assert "whole request body must arrive within 1.5 s" in body["error"] and " of 100,000 bytes" in body["error"]
        assert sent > 10 and not app._jobs
        status, info = _get(server, "/api/info")
        assert status == 200 and json.loads(info)["upload_deadline"] == 1.5
    finally:
        server.shutdown()
        thread.join(timeout=20)
        server.server_close()


# ------------------------------------------------------------------ routes, methods, security
def test_unknown_routes_404_and_other_methods_405_with_allow(client):
    _error(client.get("/nope"), 404, "no such page: /nope")
    for method in ("PUT", "DELETE", "OPTIONS", "PATCH"):
        response = client.request(method, "/api/inpaint")
        _error(response, 405, f"{method} is not allowed")
        assert response.headers["allow"] == "POST"
    response = client.request("PUT", "/api/jobs/abc")
    _error(response, 405)
    assert response.headers["allow"] == "DELETE, GET"
    _error(client.post("/api/info"), 405)


def test_host_header_allow_list(pipe):
    app = _app(pipe)
    security = Security(allowed_hosts={"127.0.0.1", "localhost", "::1", "box.lan"})
    with TestClient(create_app(app, security), base_url="http://evil.test:7860") as evil:
        _error(evil.get("/api/info"), 400, "host name 'evil.test'", "--allowed-host")
        _error(evil.get("/"), 400)
    for base in ("http://localhost:7860", "http://[::1]:7860", "http://box.lan", "http://127.0.0.1"):
        with TestClient(create_app(app, security), base_url=base) as good:
            assert good.get("/api/info").status_code == 200, base
    app.close()


def test_same_origin_required_for_state_changing_requests(client):
    files = _files(_png(_photo()), _png(_hole()))
    _error(client.post("/api/inpaint", files=files, headers={"Origin": "http://evil.test"}), 403, "cross-site")
    _error(client.post("/api/inpaint", files=files, headers={"Origin": "null"}), 403)
    _error(client.post("/api/inpaint", files=files, headers={"Sec-Fetch-Site": "cross-site"}), 403)
    _error(client.delete("/api/jobs/abc", headers={"Origin": "http://127.0.0.1:9999"}), 403)
    ok = client.post("/api/inpaint", files=files, headers={"Origin": BASE, "Sec-Fetch-Site": "same-origin"})
    assert ok.status_code == 200
    # reading is allowed cross-site only for the page itself, which has no secrets
    assert client.get("/", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200


def test_bearer_token(pipe):
    app = _app(pipe)
    with _client(app, Security(token="s3cret-token")) as c:
        assert c.get("/").status_code == 200  # the page itself is public; its API calls send the token
        response = c.get("/api/info")
        _error(response, 401, "Authorization: Bearer")
        assert response.headers["www-authenticate"] == "Bearer"
        _error(c.get("/api/info", headers={"Authorization": "Bearer wrong"}), 401)
        assert c.get("/api/info", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
        _error(_post(c, image=_png(_photo()), mask=_png(_hole())), 401)
    app.close()


def test_internal_errors_are_500_without_details(pipe):
    def broken(*args, **kwargs):
        raise RuntimeError("boom at /secret/file.py")

    app = _app(pipe)
    app.pipe = type("Broken", (), {"__call__": staticmethod(broken), "working_resolution": 64})()
    with _client(app) as c:
        message = _error(_post(c, image=_png(_photo()), mask=_png(_hole())), 500, "internal error (RuntimeError)")
        assert "boom" not in message
    app.close()


def test_loading_server_answers_503():
    with _client(None) as c:
        response = c.get("/api/info")
        _error(response, 503, "still loading")
        assert response.headers["retry-after"] == "5"
        assert c.get("/").status_code == 200


def test_app_checks_its_limits(pipe):
    with pytest.raises(InputError, match="default_steps .60. must not exceed max_steps .50."):
        InpaintApp(pipe, default_steps=60, max_steps=50)
    with pytest.raises(InputError, match="max_upload_bytes must be an integer >= 1, got 0"):
        InpaintApp(pipe, max_upload_bytes=0)
    with pytest.raises(InputError, match="abandon_after must be a number of seconds > 0"):
        InpaintApp(pipe, abandon_after=0)
    with pytest.raises(InputError, match="upload_deadline must be a number of seconds > 0, got inf"):
        InpaintApp(pipe, upload_deadline=float("inf"))


# ------------------------------------------------------------------ jobs
def _wait(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def test_jobs_submit_at_once_progress_result_and_sse(pipe):
    gated = GatedPipe(pipe)
    app = _app(gated, max_queue=2, default_steps=3)
    with _client(app) as c:
        response = _post(c, "/api/jobs", image=_png(_photo()), mask=_png(_hole()), seed=2)
        assert response.status_code == 202  # returned while the model is held at its first step
        job = response.json()
        assert job["state"] in ("queued", "running") and job["steps"] == 3
        _wait(gated.stepping.is_set)
        status = c.get(job["url"]).json()
        assert status["state"] == "running" and status["position"] is None
        second = _post(c, "/api/jobs", image=_png(_photo(1)), mask=_png(_hole())).json()
        assert c.get(second["url"]).json()["position"] == 1
        _error(c.get(job["result"]), 409, "running")
        gated.gate.set()
        with c.stream("GET", job["events"]) as stream:
            events = [json.loads(line[5:]) for line in stream.iter_lines() if line.startswith("data:")]
        assert events[-1]["state"] == "done" and events[-1]["step"] == 3 and events[-1]["seed"] == 2
        result = c.get(job["result"])
        assert result.status_code == 200 and result.headers["x-asuka-seed"] == "2"
        direct = _post(c, image=_png(_photo()), mask=_png(_hole()), seed=2, steps=3).content
        assert result.content == direct
        _error(c.get("/api/jobs/not-a-job"), 404, "no such job")
    app.close()


def test_cancel_queued_and_running_jobs(pipe):
    gated = GatedPipe(pipe)
    app = _app(gated, max_queue=1)
    with _client(app) as c:
        running = _post(c, "/api/jobs", image=_png(_photo()), mask=_png(_hole())).json()
        _wait(gated.stepping.is_set)
        queued = _post(c, "/api/jobs", image=_png(_photo()), mask=_png(_hole())).json()
        assert c.delete(queued["url"]).json()["state"] == "cancelled"
        assert c.delete(running["url"]).status_code == 200
        gated.gate.set()
        _wait(lambda: c.get(running["url"]).json()["state"] == "cancelled")
        status = c.get(running["url"]).json()
        assert status["step"] == 1 and "cancelled by the client" in status["error"]
        _error(c.get(running["result"]), 409, "cancelled")
    assert len(gated.sizes) == 1  # the cancelled queued job never ran
    app.close()


def test_full_queue_is_503_with_retry_after(pipe):
    gated = GatedPipe(pipe)
    app = _app(gated, max_queue=0)
    with _client(app) as c:
        first = _post(c, "/api/jobs", image=_png(_photo()), mask=_png(_hole()))
        assert first.status_code == 202
        _wait(gated.stepping.is_set)
        for path in ("/api/jobs", "/api/inpaint"):
            response = _post(c, path, image=_png(_photo()), mask=_png(_hole()))
            _error(response, 503, "busy")
            assert int(response.headers["retry-after"]) >= 1
        gated.gate.set()
        _wait(lambda: c.get(first.json()["url"]).json()["state"] == "done")
        assert _post(c, "/api/jobs", image=_png(_photo()), mask=_png(_hole())).status_code == 202
    app.close()


def test_memory_budget_of_queued_inputs(pipe):
    gated = GatedPipe(pipe)
    budget = H * W * 4 + 10  # one job's decoded image and mask
    app = _app(gated, max_queue=5, max_pending_bytes=budget)
    with _client(app) as c:
        assert _post(c, "/api/jobs", image=_png(_photo()), mask=_png(_hole())).status_code == 202
        _wait(gated.stepping.is_set)
        _error(_post(c, "/api/jobs", image=_png(_photo()), mask=_png(_hole())), 503, "memory budget")
        gated.gate.set()
    app.close()


def test_abandoned_jobs_are_cancelled(pipe):
    gated = GatedPipe(pipe)
    app = _app(gated, abandon_after=0.3, max_queue=2)
    with _client(app) as c:
        job = _post(c, "/api/jobs", image=_png(_photo()), mask=_png(_hole())).json()
        _wait(gated.stepping.is_set)
        time.sleep(0.5)  # nobody polls
        gated.gate.set()
        _wait(lambda: app.job(job["id"]).finished)
        assert app.job(job["id"]).state == "cancelled" and "page closed" in app.job(job["id"]).error
    app.close()


def test_results_are_bounded_in_time_and_memory(pipe):
    app = _app(pipe, max_queue=3, result_ttl=4.0, max_result_bytes=12_000)  # (TTL: room for a loaded machine)
    with _client(app) as c:
        ids = []
        for seed in range(3):
            job = _post(c, "/api/jobs", image=_png(_photo(seed)), mask=_png(_hole())).json()
            _wait(lambda: c.get(job["url"]).json()["state"] == "done")
            ids.append(job["id"])
        # each PNG is ~9 kB: only the newest fits in 12,000 bytes
        _error(c.get(f"/api/jobs/{ids[0]}/result"), 410, "dropped")
        assert c.get(f"/api/jobs/{ids[2]}/result").status_code == 200
        time.sleep(4.2)
        _error(c.get(f"/api/jobs/{ids[2]}"), 404, "expired")
    app.close()


# ------------------------------------------------------------------ a real socket: disconnects
@pytest.fixture()
def live(pipe):
    gated = GatedPipe(pipe)
    app = _app(gated, max_queue=2)
    server = make_server(app, "127.0.0.1", 0, quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    assert server.started.wait(20)
    yield server, app, gated
    gated.gate.set()
    server.shutdown()
    thread.join(timeout=20)
    server.server_close()


def _raw_post(port, path, files):
    boundary = "liveBoundary"
    body = b""
    for name, data in files.items():
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}.png\"\r\n"
                 "Content-Type: image/png\r\n\r\n").encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    sock.sendall((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {len(body)}\r\n"
                  f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n").encode() + body)
    return sock


def test_a_client_that_leaves_cancels_its_job(live):
    server, app, gated = live
    port = server.server_address[1]
    files = {"image": _png(_photo()), "mask": _png(_hole())}
    sock = _raw_post(port, "/api/inpaint", files)
    _wait(gated.stepping.is_set)
    sock.close()  # the waiting request goes away
    (job,) = app._jobs.values()
    _wait(lambda: job.cancel_reason is not None)
    gated.gate.set()
    _wait(lambda: job.finished)
    assert job.state == "cancelled" and job.step == 1 and "closed the connection" in job.error

    # An event stream that is closed cancels the job it watched.
    gated.stepping.clear()
    gated.gate.clear()
    sock = _raw_post(port, "/api/jobs", files)
    answer = _recv_answer(sock)
    sock.close()
    job_id = json.loads(answer.split("\r\n\r\n", 1)[1])["id"]
    _wait(gated.stepping.is_set)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    conn.request("GET", f"/api/jobs/{job_id}/events")
    response = conn.getresponse()
    assert response.status == 200 and response.readline().startswith(b"event: running")
    conn.close()
    _wait(lambda: app.job(job_id).cancel_reason is not None)
    assert "event stream" in app.job(job_id).cancel_reason


def _recv_answer(sock) -> str:
    """One whole HTTP answer from a raw socket (headers and body may come in separate packets)."""
    return _recv_answer_from(sock, b"")


def _recv_answer_from(sock, data: bytes) -> str:
    """:func:`_recv_answer`, given the answer's first ``data`` already read."""
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if length and len(body) >= int(length.group(1)):
                return data.decode()
        chunk = sock.recv(65536)
        if not chunk:
            return data.decode()
        data += chunk


# ------------------------------------------------------------------ asuka serve
def _serve_args(*argv):
    from asuka.cli import serve

    parser = argparse.ArgumentParser(prog="asuka")
    serve.register(parser.add_subparsers())
    return parser.parse_args(["serve", *argv])


def _post_form(server, path="/api/inpaint", **fields):
    """``(status, headers, body)`` of a multipart POST to a live server; bytes values are sent as
    files (other test files use this to serve their own pipelines)."""
    boundary = "asukaTestBoundary7MA4YWxk"
    body = b""
    for name, value in fields.items():
        filename = f'; filename="{name}.png"' if isinstance(value, bytes) else ""
        data = value if isinstance(value, bytes) else str(value).encode()
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"{filename}\r\n\r\n").encode() \
            + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=60)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def _get(server, path, headers=None):
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=60)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_cli_start_loads_the_model_and_serves(tmp_path, pipe):
    from asuka.cli import serve

    pipe.save_pretrained(tmp_path / "tiny")
    args = _serve_args("--model", str(tmp_path / "tiny"), "--port", "0", "--device", "cpu", "--steps", "3",
                       "--max-upload-mb", "1", "--max-megapixels", "2", "--quiet")
    assert args.func is serve.run and args.host == "127.0.0.1" and args.token is None
    server = serve.start(args)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert server.started.wait(20)
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", server.url)
        status, body = _get(server, "/api/info")
        info = json.loads(body)
        assert status == 200 and info["model"] == "tiny" and info["default_steps"] == 3
        assert info["max_upload_bytes"] == 2**20 and info["max_pixels"] == 2_000_000
        status, headers, body = _post_form(server, image=_png(_photo()), mask=_png(_hole()), seed=1)
        assert status == 200 and headers["x-asuka-steps"] == "3" and _decode(body).shape == (H, W, 3)
        busy = _serve_args("--model", str(tmp_path / "tiny"), "--port", str(server.server_address[1]))
        with pytest.raises(InputError, match="cannot listen on 127.0.0.1"):
            serve.start(busy)
    finally:
        server.shutdown()
        thread.join(timeout=20)
        server.server_close()


def test_cli_beyond_loopback_requires_a_token(tmp_path, pipe):
    from asuka.cli import serve

    pipe.save_pretrained(tmp_path / "tiny")
    args = _serve_args("--model", str(tmp_path / "tiny"), "--host", "127.0.0.2", "--port", "0",
                       "--device", "cpu", "--quiet", "--allowed-host", "box.lan")
    try:
        server = serve.start(args)
    except InputError as exc:  # a system without the 127/8 loopback range
        pytest.skip(f"cannot bind 127.0.0.2: {exc}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert server.started.wait(20) and len(args.token) >= 24
        assert serve.page_url(server, args.token).endswith(f"/#token={args.token}")
        assert server.security.allowed_hosts >= {"127.0.0.2", "box.lan", "localhost"}
        assert _get(server, "/api/info")[0] == 401
        assert _get(server, "/api/info", {"Authorization": f"Bearer {args.token}"})[0] == 200
    finally:
        server.shutdown()
        thread.join(timeout=20)
        server.server_close()


@pytest.mark.parametrize("argv, needle", [
    (["--model", "m", "--port", "70000"], "--port must be in [0, 65535], got 70000"),
    (["--model", "m", "--steps", "0"], "--steps must be in [1, --max-steps=500], got 0"),
    (["--model", "m", "--max-upload-mb", "0"], "--max-upload-mb must be > 0"),
    (["--model", "m", "--max-megapixels", "-1"], "--max-megapixels must be > 0"),
    (["--model", "m", "--max-queue", "-1"], "--max-queue must be >= 0"),
    (["--model", "m", "--upload-deadline", "0"], "--upload-deadline must be > 0, got 0.0"),
    (["--model", "m", "--token", "short"], "--token must have at least 8 characters"),
])
def test_cli_checks_options_before_loading(argv, needle):
    from asuka.cli import serve

    with pytest.raises(InputError) as info:
        serve.start(_serve_args(*argv))
    assert needle in str(info.value)


def test_cli_without_model_uses_the_default_or_says_it_is_required(tmp_path, monkeypatch):
    from asuka.cli import serve

    monkeypatch.setattr("asuka.registry.shipped_model_dir", lambda name="asuka-small": tmp_path / "not-installed")
    with pytest.raises(InputError, match="is not installed"):
        serve.start(_serve_args())


def test_cli_missing_model_folder_is_a_checkpoint_error(tmp_path):
    from asuka.cli import serve

    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no model_index.json"):
        serve.start(_serve_args("--model", str(tmp_path / "empty"), "--port", "0", "--device", "cpu"))
