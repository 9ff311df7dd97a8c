"""Inpainting in the browser: a local web page and a JSON/PNG API (``asuka serve``).

Python use::

    from asuka.pipeline import load_pipeline
    from asuka.web import InpaintApp, make_server

    app = InpaintApp(load_pipeline("path/to/pipeline"), model_name="my-model")
    server = make_server(app, host="127.0.0.1", port=7860)
    print(server.url)
    server.serve_forever()

:mod:`asuka.web.app` is the model side (checked inputs, jobs, no HTTP); :mod:`asuka.web.server`
the FastAPI/uvicorn side (routes, limits, security). The page (``asuka/web/static``) is plain
HTML, CSS and JavaScript with no external fetches, so it works offline.
"""

from asuka.web.app import InpaintApp, InpaintResult, InpaintSpec, Job, WebError
from asuka.web.server import InpaintServer, Security, create_app, make_server

__all__ = ["InpaintApp", "InpaintResult", "InpaintServer", "InpaintSpec", "Job", "Security", "WebError",
           "create_app", "make_server"]
