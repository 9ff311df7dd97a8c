"""Inpainting in the browser: a local web page and a small JSON/PNG API (``asuka serve``).

Python use::

    from asuka.pipeline import load_pipeline
    from asuka.web import InpaintApp, make_server

    app = InpaintApp(load_pipeline("path/to/pipeline"), model_name="path/to/pipeline")
    server = make_server(app, host="127.0.0.1", port=7860)
    print(server.url)
    server.serve_forever()

The page (``asuka/web/static``) is plain HTML, CSS and JavaScript with no external fetches,
so it works offline. Routes and request formats: :mod:`asuka.web.server`.
"""

from asuka.web.server import InpaintApp, InpaintResult, InpaintServer, WebError, make_server

__all__ = ["InpaintApp", "InpaintResult", "InpaintServer", "WebError", "make_server"]
