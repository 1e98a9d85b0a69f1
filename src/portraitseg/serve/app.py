"""The FastAPI application of ``portraitseg serve`` (:func:`create_app`).

Routes: ``GET /`` (the web page, from ``static/``), ``GET /api/health``, ``GET /api/options``
(presets, classes and defaults, for the page), ``POST /api/portrait``. Every error is JSON
``{"error": "..."}``: 4xx for what the client sent, 5xx for the server's own failures; the server
keeps serving after each one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from portraitseg._version import __version__
from portraitseg.presets import load_preset, preset_names
from portraitseg.serve.engine import Engine, QueueFull
from portraitseg.serve.options import OVERRIDES, PARAMETERS, ApiError, parse_options

#: Response header with the pipeline's notes (URL-quoted text; e.g. a focus point on no person).
NOTES_HEADER = "X-Portrait-Notes"
#: Seconds a client is asked to wait (``Retry-After``) when the render queue is full.
RETRY_AFTER = 2


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def read_body(request: Request, max_bytes: int, timeout: float) -> bytes:
    """The request body, at most ``max_bytes`` (else 413), all of it within ``timeout`` seconds
    (else 408)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, f"the upload is {int(declared):,} bytes, over the server's limit of "
                            f"{max_bytes:,} bytes (--max-upload-bytes): send a smaller file")
    deadline = time.monotonic() + timeout
    chunks, size = [], 0
    stream = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), max(0.0, deadline - time.monotonic()))
        except StopAsyncIteration:
            return b"".join(chunks)
        except asyncio.TimeoutError:
            raise ApiError(408, f"the upload did not arrive within {timeout:g} s (--timeout): send it "
                                "again over a faster connection, or send a smaller file") from None
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, f"the upload is over the server's limit of {max_bytes:,} bytes "
                                "(--max-upload-bytes): send a smaller file")
        chunks.append(chunk)


async def upload_and_params(request: Request, engine: Engine) -> tuple[bytes, dict[str, str]]:
    """The photo's bytes and the parameters (query string, plus form fields of a multipart
    upload whose photo is the field ``image``)."""
    limits = engine.limits
    body = await read_body(request, limits.max_upload_bytes, limits.timeout)
    params = dict(request.query_params)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return body, params

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=len(PARAMETERS))
    except HTTPException as err:  # malformed multipart, too many parts
        raise ApiError(400, f"the multipart upload cannot be read ({err.detail}): send the photo as the "
                            "form field 'image'") from None
    photo = form.get("image")
    if photo is None or isinstance(photo, str):
        raise ApiError(400, "the multipart upload has no file field 'image': send the photo as "
                            "image=@photo.jpg")
    data = await photo.read()
    params.update({k: v for k, v in form.multi_items() if k != "image" and isinstance(v, str)})
    return data, params


async def portrait_response(request: Request, engine: Engine) -> Response:
    """``POST /api/portrait``: read the upload and the parameters, queue the render, answer with
    the image (the pipeline's notes in :data:`NOTES_HEADER`) or :class:`ApiError`."""
    try:
        data, params = await upload_and_params(request, engine)
    except ClientDisconnect:
        return error(400, "the client closed the connection before the upload was complete")
    if not data:
        raise ApiError(400, "no photo in the request: send it as the body or as the form field 'image'")
    options = parse_options(params, request.headers.get("accept", ""), preset_names(),
                            engine.class_names, engine.preset)
    try:
        future = engine.queue.submit(lambda: engine.render(data, options))
    except QueueFull:
        raise ApiError(503, f"the server is busy ({engine.limits.capacity} renders running or "
                            f"waiting): retry in {RETRY_AFTER} s",
                       {"Retry-After": str(RETRY_AFTER)}) from None
    try:
        rendered = await asyncio.wrap_future(future)
    except ApiError:
        raise
    except MemoryError:
        raise ApiError(500, "out of memory while rendering: send a smaller photo, or start the "
                            "server with a lower --max-pixels") from None
    except Exception as err:  # noqa: BLE001 - reported to the client, the server keeps serving
        text = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ApiError(500, f"the render failed ({type(err).__name__}: {text}); the server is "
                            "still running: retry, or report this with the photo") from None
    headers = {NOTES_HEADER: quote("; ".join(rendered.notes))} if rendered.notes else None
    return Response(rendered.body, media_type=rendered.media_type, headers=headers)


def create_app(engine: Engine) -> FastAPI:
    """The application serving ``engine`` (loaded once, shared by every request)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.close()

    app = FastAPI(title="portraitseg", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url=None, lifespan=lifespan)
    static = files("portraitseg.serve") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        return error(err.status, err.message, err.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        return error(err.status_code, str(err.detail))

    @app.exception_handler(Exception)
    async def server_error(request: Request, err: Exception) -> JSONResponse:
        return error(500, f"the server failed ({type(err).__name__}); it is still running: retry, or "
                          "report this with the request")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(static / "index.html"), media_type="text/html")

    @app.get("/api/health")
    async def health() -> dict[str, Any]:
        return {"ok": True, "model": engine.model, "version": __version__,
                "queue": engine.queue.length, "capacity": engine.limits.capacity}

    @app.get("/api/options")
    async def options() -> dict[str, Any]:
        presets = preset_names()
        strengths = {name: load_preset(name).get("strength") for name in presets}
        return {"presets": presets, "preset": engine.preset, "strengths": strengths,
                "classes": list(engine.class_names), "keep": list(engine.base.keep),
                "overrides": list(OVERRIDES), "parameters": list(PARAMETERS),
                "max_upload_bytes": engine.limits.max_upload_bytes, "max_pixels": engine.limits.max_pixels}

    @app.post("/api/portrait")
    async def portrait(request: Request) -> Response:
        return await portrait_response(request, engine)

    return app
