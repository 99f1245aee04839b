"""The HTTP API and the drawing page: an ASGI app (FastAPI) that is a client of a :class:`~mnistctl.Reader`.

Every answer is JSON in the schema of ``predict --json`` (a result's ``to_dict()``); every error is
``{"error": "<what is wrong> — <what to do>"}`` with a 4xx status, as the command line's one-line errors are.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from mnistctl import __version__
from mnistctl.config import MIN_CONFIDENCE
from mnistctl.results import ReadFailure
from mnistctl.serve.batcher import Batcher, Stopping

if TYPE_CHECKING:
    from mnistctl.reader import Reader
    from mnistctl.results import Reading

MAX_UPLOAD = 10_000_000  # bytes of request body, by default (10 MB, as `serve --max-upload` counts)
MAX_FILES = 256  # images in one /v1/digits request
IMAGE_FIELD = "image"
log = logging.getLogger("mnistctl.serve")

TopK = Annotated[
    int, Query(ge=0, le=9, description="also give this many runners-up per digit (the likeliest where it declines)")
]
Invert = Annotated[
    Literal["auto", "yes", "no"], Query(description="yes: dark ink on light paper; no: light on dark; auto: guess")
]
Preprocess = Annotated[bool, Query(description="false: only resize to 28×28 (for images framed like MNIST's)")]
Pixels = Annotated[bool, Query(description="also give the 28×28 input the network saw (0-255, rows)")]
MinConfidence = Annotated[
    float, Query(ge=0, le=1, description='below this probability, "digit": null with "reason": "unsure"')
]
AlwaysAnswer = Annotated[bool, Query(description="name the likeliest digit even when unsure or not a digit")]


def _answering(min_confidence: MinConfidence = MIN_CONFIDENCE, always_answer: AlwaysAnswer = False) -> dict[str, Any]:
    """When the reader declines to name a digit: the query options every read endpoint takes, as its keywords."""
    return {"min_confidence": min_confidence, "always_answer": always_answer}


Answering = Annotated[dict[str, Any], Depends(_answering)]


class ApiError(Exception):
    """An answer of ``status`` with ``{"error": "<what> — <fix>"}``."""

    def __init__(self, status: int, what: str, fix: str) -> None:
        super().__init__(what)
        self.status = status
        self.message = f"{what} — {fix}"


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def create_app(reader: Reader, *, max_upload: int = MAX_UPLOAD, max_wait: float = 0.0) -> FastAPI:
    """The app for ``reader``: see docs/serve.md for its endpoints. ``max_upload``: bytes a request body may
    have; ``max_wait``: seconds a lone request waits for others to share its forward pass."""
    batcher = Batcher(reader, max_wait=max_wait)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        try:
            yield
        finally:
            batcher.stop()

    app = FastAPI(
        title="mnistctl",
        version=__version__,
        summary="Handwritten digits read by mnistctl's model: the same reader as `mnistctl predict`.",
        lifespan=lifespan,
    )
    _add_error_handlers(app)
    _add_page_and_status(app, reader, batcher)

    @app.post("/v1/digit", summary="Read the digit in one image (the raw body, or the multipart field 'image')")
    async def digit(
        request: Request,
        answering: Answering,
        top_k: TopK = 0,
        invert: Invert = "auto",
        preprocess: Preprocess = True,
        pixels: Pixels = False,
    ) -> Response:
        image = await _one_image(request, max_upload)
        reading = await batcher.read("digit", image, invert=invert, preprocess=preprocess, **answering)
        return _answer(reading, top_k, pixels)

    @app.post("/v1/number", summary="Read the number written on one line in an image, digit by digit")
    async def number(
        request: Request,
        answering: Answering,
        top_k: TopK = 0,
        invert: Invert = "auto",
        pixels: Pixels = False,
    ) -> Response:
        image = await _one_image(request, max_upload)
        reading = await batcher.read("number", image, invert=invert, **answering)
        return _answer(reading, top_k, pixels)

    @app.post("/v1/digits", summary="Read one digit from each image of a multipart request, in order")
    async def digits(
        request: Request,
        answering: Answering,
        top_k: TopK = 0,
        invert: Invert = "auto",
        preprocess: Preprocess = True,
    ) -> Response:
        files = await _form_files(request, max_upload)
        if not files:
            raise ApiError(400, "the form holds no image files", "send each image as a file part of the form")
        options = {"invert": invert, "preprocess": preprocess, **answering}
        readings = (batcher.read("digit", data, **options) for _, _, data in files)
        results = await asyncio.gather(*readings)  # all queued at once: they share forward passes
        named = [{"path": name, **r.to_dict(top_k)} for (_, name, _), r in zip(files, results, strict=True)]
        return json_response(named)

    return app


def _add_page_and_status(app: FastAPI, reader: Reader, batcher: Batcher) -> None:
    """The drawing page and its script (package data, read once), /healthz and /v1/model."""
    page = resources.files("mnistctl.serve").joinpath("page")
    html, js = page.joinpath("index.html").read_text(encoding="utf-8"), page.joinpath("page.js").read_bytes()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> Response:
        return HTMLResponse(html)

    @app.get("/page.js", include_in_schema=False)
    def script() -> Response:
        return Response(js, media_type="text/javascript")

    @app.get("/healthz", summary="Whether the server answers; how many images it has read, in how many batches")
    def healthz() -> Response:
        return json_response({"status": "ok", "images": batcher.images, "batches": batcher.batches})

    @app.get("/v1/model", summary="The model: architecture, accuracy, how it was trained, normalisation")
    def model() -> Response:
        return json_response({**reader.meta.to_dict(), "mnistctl": __version__})


def _answer(reading: Reading, top_k: int, pixels: bool) -> Response:
    if isinstance(reading, ReadFailure):
        raise ApiError(422, reading.error, "send an image of a digit (PNG, JPEG, GIF, BMP, TIFF or WebP)")
    return json_response(reading.to_dict(top_k, pixels=pixels))


# ------------------------------------------------------------------------------------------ request bodies


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes: at once when its
    Content-Length says so, else after ``limit`` bytes have been received."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _too_large(limit)
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > limit:
            raise _too_large(limit)
    return bytes(received)


def _too_large(limit: int) -> ApiError:
    fix = "send a smaller image, or start the server with a larger --max-upload"
    return ApiError(413, f"the upload is larger than {limit:,} bytes", fix)


async def _one_image(request: Request, limit: int) -> bytes:
    """The image of a single-image request: the body itself (an image/* or application/octet-stream type, or
    none), or the multipart field ``image`` (or the form's only file)."""
    kind = _content_type(request)
    if kind == "multipart/form-data":
        files = await _form_files(request, limit)
        named = [data for field, _, data in files if field == IMAGE_FIELD] or [data for _, _, data in files]
        if len(named) != 1:
            what = "the form holds no image" if not named else "the form holds several images"
            fix = f"send one image as the multipart field '{IMAGE_FIELD}' (or use /v1/digits for several)"
            raise ApiError(400, what, fix)
        return named[0]
    if kind and not (kind.startswith("image/") or kind == "application/octet-stream"):
        fix = f"send the bytes as Content-Type: image/png (or image/jpeg ...), or as the form field '{IMAGE_FIELD}'"
        raise ApiError(415, f"the body's content type {kind} is not an image", fix)
    body = await _body(request, limit)
    if not body:
        raise ApiError(400, "the request has no body", "send the image's bytes as the body")
    return body


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _form_files(request: Request, limit: int) -> list[tuple[str, str, bytes]]:
    """The file parts of a multipart form, in order, as (field, file name or field, bytes); the whole body is bounded
    by ``limit`` before the form is parsed."""
    if _content_type(request) != "multipart/form-data":
        fix = "send the images as file parts of a multipart/form-data body (curl -F image=@digit.png)"
        raise ApiError(415, "the request is not a multipart form", fix)
    body = await _body(request, limit)
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=MAX_FILES, max_fields=MAX_FILES)
    except HTTPException as exc:  # Starlette's own word for a malformed form or too many parts
        raise ApiError(
            400, f"the form cannot be read ({exc.detail})", "send a well-formed multipart/form-data body"
        ) from exc
    try:
        parts = [(key, value) for key, value in form.multi_items() if isinstance(value, UploadFile)]
        return [(key, value.filename or key, await value.read()) for key, value in parts]
    finally:
        await form.close()


# ------------------------------------------------------------------------------------------------- errors


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> Response:
        return json_response({"error": exc.message}, exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors())
        return json_response({"error": f"{problems} — see /docs for each endpoint's options"}, 422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            message = f"there is no {request.url.path} — the endpoints are listed at /docs"
        elif exc.status_code == 405:
            message = f"{request.method} is not accepted at {request.url.path} — the endpoints are listed at /docs"
        else:
            message = f"{exc.detail} — see /docs"
        return json_response({"error": message}, exc.status_code, exc.headers)

    @app.exception_handler(Stopping)
    async def stopping(_: Request, exc: Stopping) -> Response:
        return json_response({"error": "the server is stopping — send the request again in a moment"}, 503)

    @app.exception_handler(ClientDisconnect)
    async def client_left(request: Request, _: ClientDisconnect) -> Response:
        log.info("%s %s: the client left before its request was all sent", request.method, request.url.path)
        return Response(status_code=499)  # nobody reads it: nginx's word for it, in the access log

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("%s %s failed", request.method, request.url.path)  # the traceback stays in the server's log
        return json_response({"error": "the server failed to answer — its log says why; try again"}, 500)
