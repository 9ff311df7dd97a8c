"""``asuka serve``: the web server on 127.0.0.1 (port 0) with the tiny pipeline; local traffic only."""

import argparse
import base64
import http.client
import io
import json
import re
import threading

import numpy as np
import PIL.Image
import pytest

from asuka.errors import InputError
from asuka.web import InpaintApp, make_server

H, W = 48, 64
MAX_UPLOAD = 200_000
MAX_PIXELS = 10_000




@pytest.fixture(scope="module")
def pipe():
    from asuka.testing import tiny_pipeline

    return tiny_pipeline(0)


def _serve(app):
    server = make_server(app, "127.0.0.1", 0, quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


def _stop(server, thread):
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(pipe):
    app = InpaintApp(pipe, model_name="tiny", default_steps=2, max_steps=20,
                     max_upload_bytes=MAX_UPLOAD, max_pixels=MAX_PIXELS, max_waiting=0)
    server, thread = _serve(app)
    yield server
    _stop(server, thread)


def _request(server, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


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


def _multipart(**fields):
    """(body, headers) of a multipart/form-data request; bytes values are sent as files."""
    boundary = "asukaTestBoundary7MA4YWxk"
    body = b""
    for name, value in fields.items():
        filename = f'; filename="{name}.png"' if isinstance(value, bytes) else ""
        data = value if isinstance(value, bytes) else str(value).encode()
        kind = "image/png" if filename else "text/plain"
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"{filename}\r\n"
                 f"Content-Type: {kind}\r\n\r\n").encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def _post_form(server, path="/api/inpaint", **fields):
    body, headers = _multipart(**fields)
    return _request(server, "POST", path, body, headers)


def _post_json(server, payload, accept_json=True):
    headers = {"Content-Type": "application/json"}
    if accept_json:
        headers["Accept"] = "application/json"
    return _request(server, "POST", "/api/inpaint", json.dumps(payload).encode(), headers)


def _decode(png_bytes):
    return np.asarray(PIL.Image.open(io.BytesIO(png_bytes)).convert("RGB"))


def _error(status, headers, body, expected_status, *needles):
    assert status == expected_status, (status, body)
    assert headers["Content-Type"] == "application/json"
    message = json.loads(body)["error"]
    assert "Traceback" not in message
    for needle in needles:
        assert needle in message, message
    return message


# ------------------------------------------------------------------ the page
def test_page_is_served_and_self_contained(server):
    status, headers, body = _request(server, "GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    page = body.decode()
    for needle in ('id="image-canvas"', 'id="mask-canvas"', 'id="brush-size"', 'id="run"', 'id="download"',
                   'src="/static/app.js"', 'href="/static/style.css"'):
        assert needle in page
    texts = [page]
    for path, kind in (("/static/app.js", "text/javascript"), ("/static/style.css", "text/css")):
        status, headers, body = _request(server, "GET", path)
        assert status == 200 and headers["Content-Type"].startswith(kind)
        texts.append(body.decode())
    assert "/api/inpaint" in texts[1] and "/api/mask" in texts[1]
    for text in texts:  # works offline: no CDN, no external fetch
        assert not re.search(r"https?://|//cdn|@import", text)


def test_info_and_progress(server):
    status, _, body = _request(server, "GET", "/api/info")
    info = json.loads(body)
    assert status == 200 and info["model"] == "tiny" and info["default_steps"] == 2
    assert info["components"]["mae"] == "MAEPrior" and info["components"]["text_encoder"] is None
    assert info["max_upload_bytes"] == MAX_UPLOAD and info["working_resolution"] == 64
    assert info["device"] == "cpu" and info["dtype"] == "float32"
    status, _, body = _request(server, "GET", "/api/progress")
    assert status == 200 and json.loads(body) == {"busy": False, "step": 0, "steps": 0, "waiting": 0}


# ------------------------------------------------------------------ inpainting
def test_inpaint_keeps_known_pixels_and_is_reproducible(server):
    image, mask = _photo(), _hole()
    status, headers, body = _post_form(server, image=_png(image), mask=_png(mask), seed=7)
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert headers["X-Asuka-Seed"] == "7" and headers["X-Asuka-Steps"] == "2"
    out = _decode(body)
    assert out.shape == (H, W, 3)
    keep = mask == 0
    assert np.array_equal(out[keep], image[keep])
    assert not np.array_equal(out[~keep], image[~keep])
    again = _post_form(server, image=_png(image), mask=_png(mask), seed=7)[2]
    assert again == body
    other = _decode(_post_form(server, image=_png(image), mask=_png(mask), seed=8)[2])
    assert not np.array_equal(other, out)
    status, _, body = _request(server, "GET", "/api/progress")
    assert json.loads(body)["steps"] == 2 and json.loads(body)["step"] == 2


def test_json_request_equals_form_request_and_random_seed_is_reported(server):
    image, mask = _photo(1), _hole()
    form = _decode(_post_form(server, image=_png(image), mask=_png(mask), seed=3, steps=3)[2])
    payload = {"image": "data:image/png;base64," + base64.b64encode(_png(image)).decode(),
               "mask": base64.b64encode(_png(mask)).decode(), "seed": 3, "steps": 3}
    status, headers, body = _post_json(server, payload)
    answer = json.loads(body)
    assert status == 200 and answer["width"] == W and answer["height"] == H and answer["seed"] == 3
    assert answer["image"].startswith("data:image/png;base64,")
    assert np.array_equal(_decode(base64.b64decode(answer["image"].split(",", 1)[1])), form)

    del payload["seed"]
    status, headers, body = _post_json(server, payload, accept_json=False)  # PNG answer
    assert status == 200 and headers["Content-Type"] == "image/png"
    seed = int(headers["X-Asuka-Seed"])
    assert _post_form(server, image=_png(image), mask=_png(mask), seed=seed, steps=3)[2] == body


def test_options_composite_feather_full_image_and_resized_mask(server):
    image, mask = _photo(2), _hole()
    plain = _decode(_post_form(server, image=_png(image), mask=_png(mask), seed=1)[2])
    raw = _decode(_post_form(server, image=_png(image), mask=_png(mask), seed=1, composite="false")[2])
    keep = mask == 0
    assert np.array_equal(raw[~keep], plain[~keep]) and not np.array_equal(raw[keep], image[keep])
    status, headers, body = _post_form(server, image=_png(image), mask=_png(mask[::2, ::2]), seed=1,
                                       resize_mask="true", full_image="on", feather="2.5")
    assert status == 200 and _decode(body).shape == (H, W, 3)
    # an empty mask: the image back unchanged, and a warning
    status, headers, body = _post_form(server, image=_png(image), mask=_png(np.zeros((H, W), np.uint8)))
    assert status == 200 and np.array_equal(_decode(body), image) and "empty" in headers["X-Asuka-Warning"]


def test_mask_endpoint_reads_alpha_masks_and_resizes(server):
    stroke = np.zeros((H // 2, W // 2, 4), np.uint8)
    stroke[5:15, 10:22, 3] = 255  # one colour on a transparent layer: the alpha is the mask
    status, headers, body = _post_form(server, "/api/mask", mask=_png(stroke), width=W, height=H)
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert headers["X-Asuka-Note"] == f"mask resized from {W // 2}x{H // 2} to {W}x{H} (nearest)"
    got = np.asarray(PIL.Image.open(io.BytesIO(body)))
    expected = np.zeros((H, W), np.uint8)
    expected[10:30, 20:44] = 255
    assert np.array_equal(got, expected)
    status, headers, _ = _post_form(server, "/api/mask", mask=_png(_hole()), width=W, height=H)
    assert status == 200 and "X-Asuka-Note" not in headers


# ------------------------------------------------------------------ bad input
BAD_FORMS = [
    (dict(image=b"IMG"), "missing field 'mask'"),
    (dict(image=b"this is not an image", mask="MASK"), "cannot read image (20 bytes): not an image format"),
    (dict(image="TRUNCATED", mask="MASK"), "cannot read image (200 bytes) as an image"),
    (dict(image="IMG", mask=b""), "mask: the uploaded file is empty"),
    (dict(image="IMG", mask="SMALL"), "mask size 32x24 does not match the image size 64x48"),
    (dict(image="IMG", mask="MASK", steps=0), "steps must be an integer in [1, 20], got 0"),
    (dict(image="IMG", mask="MASK", steps=21), "steps must be an integer in [1, 20], got 21"),
    (dict(image="IMG", mask="MASK", steps="ten"), "steps must be an integer"),
    (dict(image="IMG", mask="MASK", seed=-1), "seed must be an integer in [0, "),
    (dict(image="IMG", mask="MASK", composite="maybe"), "composite must be true or false, got 'maybe'"),
    (dict(image="IMG", mask="MASK", feather="nan"), "feather must be a number"),
    (dict(image="IMG", mask="MASK", stpes=3), "unknown field(s) stpes"),
]


@pytest.mark.parametrize("fields, needle", BAD_FORMS, ids=[n.split(":")[0][:30] for _, n in BAD_FORMS])
def test_bad_form_input_is_400_with_a_message(server, fields, needle):
    files = {"IMG": _png(_photo()), "MASK": _png(_hole()), "SMALL": _png(_hole(24, 32)),
             "TRUNCATED": _png(_photo())[:200]}
    fields = {k: files.get(v, v) if isinstance(v, str) else v for k, v in fields.items()}
    _error(*_post_form(server, **fields), 400, needle)


@pytest.mark.parametrize("body, content_type, needle", [
    (b"{not json", "application/json", "not valid JSON"),
    (b"[1, 2]", "application/json", "must be an object, got list"),
    (b'{"image": "@@@", "mask": "AAAA"}', "application/json", "image is not valid base64"),
    (b'{"image": 5, "mask": "AAAA"}', "application/json", "image must be a base64 string"),
    (b"image=1", "application/x-www-form-urlencoded", "unsupported Content-Type"),
    (b"--x\r\nno header end", "multipart/form-data; boundary=x", "malformed multipart"),
    (b"abc", "multipart/form-data", "without a boundary"),
])
def test_bad_body_is_400_with_a_message(server, body, content_type, needle):
    _error(*_request(server, "POST", "/api/inpaint", body, {"Content-Type": content_type}), 400, needle)


def test_oversized_upload_and_image_are_413(server):
    big = np.random.default_rng(0).integers(0, 256, (200, 400, 3), dtype=np.uint8)  # ~240 kB as PNG
    _error(*_post_form(server, image=_png(big), mask=_png(_hole())), 413,
           "over this server's limit of 200,000 bytes")
    wide = np.zeros((100, 120, 3), np.uint8)  # small file, 12,000 pixels > 10,000
    _error(*_post_form(server, image=_png(wide), mask=_png(_hole())), 413,
           "image is 120x100 = 12,000 pixels", "at most 10,000")


def test_routes_methods_origin_busy_and_internal_errors(server, monkeypatch):
    _error(*_request(server, "GET", "/nope"), 404, "no such page: /nope")
    _error(*_request(server, "GET", "/static/../server.py"), 404)
    _error(*_request(server, "GET", "/api/inpaint"), 405, "/api/inpaint takes POST")
    _error(*_request(server, "PUT", "/api/inpaint", b""), 501)
    body, headers = _multipart(image=_png(_photo()), mask=_png(_hole()))
    _error(*_request(server, "POST", "/api/inpaint", body, {**headers, "Origin": "http://evil.example"}),
           403, "cross-origin")
    host = "%s:%d" % server.server_address[:2]
    assert _request(server, "POST", "/api/inpaint", body,
                    {**headers, "Origin": f"http://{host}", "Host": host})[0] == 200

    app = server.app
    app._run_lock.acquire()  # a run in progress and max_waiting=0: the next request is refused
    try:
        _error(*_request(server, "POST", "/api/inpaint", body, headers), 503, "busy")
    finally:
        app._run_lock.release()

    def broken(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(app, "pipe", broken)
    message = _error(*_request(server, "POST", "/api/inpaint", body, headers), 500, "RuntimeError: boom")
    assert "second line" not in message


def test_loading_server_answers_503():
    server, thread = _serve(None)
    try:
        _error(*_request(server, "GET", "/api/info"), 503, "still loading")
        assert _request(server, "GET", "/")[0] == 200
    finally:
        _stop(server, thread)


def test_app_checks_its_limits(pipe):
    with pytest.raises(InputError, match="default_steps .60. must not exceed max_steps .50."):
        InpaintApp(pipe, default_steps=60, max_steps=50)
    with pytest.raises(InputError, match="max_upload_bytes must be an integer >= 1, got 0"):
        InpaintApp(pipe, max_upload_bytes=0)


# ------------------------------------------------------------------ asuka serve
def _serve_args(*argv):
    from asuka.cli import serve

    parser = argparse.ArgumentParser(prog="asuka")
    serve.register(parser.add_subparsers())
    return parser.parse_args(["serve", *argv])


def test_cli_start_loads_the_model_and_serves(tmp_path, pipe):
    from asuka.cli import serve

    pipe.save_pretrained(tmp_path / "tiny")
    args = _serve_args("--model", str(tmp_path / "tiny"), "--port", "0", "--device", "cpu", "--steps", "3",
                       "--max-upload-mb", "1", "--quiet")
    assert args.func is serve.run and args.host == "127.0.0.1"
    server = serve.start(args)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", server.url)
        info = json.loads(_request(server, "GET", "/api/info")[2])
        assert info["model"] == str(tmp_path / "tiny") and info["default_steps"] == 3
        assert info["max_upload_bytes"] == 2**20
        status, headers, body = _post_form(server, image=_png(_photo()), mask=_png(_hole()))
        assert status == 200 and headers["X-Asuka-Steps"] == "3" and _decode(body).shape == (H, W, 3)

        busy = _serve_args("--model", str(tmp_path / "tiny"), "--port", str(server.server_address[1]))
        with pytest.raises(InputError, match="cannot listen on 127.0.0.1"):
            serve.start(busy)
    finally:
        _stop(server, thread)


@pytest.mark.parametrize("argv, needle", [
    (["--model", "m", "--port", "70000"], "--port must be in [0, 65535], got 70000"),
    (["--model", "m", "--steps", "0"], "--steps must be in [1, --max-steps=500], got 0"),
    (["--model", "m", "--max-upload-mb", "0"], "--max-upload-mb must be > 0"),
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
    from asuka.errors import CheckpointError

    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no model_index.json"):
        serve.start(_serve_args("--model", str(tmp_path / "empty"), "--port", "0", "--device", "cpu"))
