"""The FastAPI app of ``stackgan2 serve``: HTTP plumbing over ``stackgan2.serving``.

Imported only when the server starts (FastAPI is the optional ``serve`` extra). Every refusal is a JSON
``{"error": "..."}`` with a 4xx status; the page is the only file served, read once from the package.
``/openapi.json`` lists every status each operation can answer (``tests/test_serve_contract.py`` holds the
server to it with Schemathesis).
"""

from __future__ import annotations

import asyncio
import json
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stackgan2 import __version__
from stackgan2.imaging import png_bytes
from stackgan2.serving import (
    MAX_BODY_BYTES,
    BatchingGenerator,
    RequestError,
    image_request_schema,
    images_json,
    parse_image_request,
    parse_json_body,
)

PAGE = "serve_page.html"

# What each error status means; every one comes with an Error body. A prompt the schema allows can still be
# refused (422): the schema cannot say which words the model knows.
ERRORS = {
    400: "The body is not valid JSON (or not UTF-8).",
    404: "No such path.",
    405: "The path does not take this method; the Allow header lists the methods it takes.",
    406: 'Accept: image/png returns one image, but the request asks for several (n > 1 or stage "all").',
    413: f"The body is over {MAX_BODY_BYTES:,} bytes.",
    415: "The Content-Type is not application/json.",
    422: "The body breaks the request schema (the message names the first problem), or its prompt, though the "
         "schema allows it, cannot be drawn: it is blank, holds control characters, or has no word the text "
         "encoder knows. Unknown words beside a known one are ignored and listed in unknown_words.",
    500: "A bug in the server: the message names the exception; the traceback is in the server log.",
}


class Error(BaseModel):
    """Every refusal and failure: one line naming the problem."""

    error: str = Field(examples=['prompt is empty; describe the image in words, e.g. "a small red bird"'])


class GeneratedImage(BaseModel):
    index: int = Field(description="k, from 0 to n - 1")
    seed: int = Field(description="the noise seed of this image: seed + k")
    png: dict[str, str] = Field(description="a base64 PNG per branch, keyed by its resolution")


class Images(BaseModel):
    """The JSON answer of ``POST /v1/images`` (``serving.images_json`` builds it)."""

    prompt: str
    seed: int
    n: int
    unknown_words: list[str] = Field(description="words of the prompt the text encoder does not know (ignored)")
    truncated: bool = Field(description="whether the prompt had more words than the text encoder reads")
    resolutions: list[int]
    images: list[GeneratedImage]


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` entries of ``statuses``, each an Error body."""
    return {status: {"model": Error, "description": ERRORS[status]} for status in statuses}


def _error(message: str, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413 before the app reads it (also when chunked)."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        too_big = _error(f"request body is over {self.limit:,} bytes; at most {self.limit:,} are accepted", 413)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await too_big(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await too_big(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def wants_png(accept: str | None) -> bool:
    """Whether the Accept header prefers image/png over JSON (by q-value; JSON wins ties and */*)."""
    quality = {"image/png": 0.0, "application/json": 0.0}
    for part in (accept or "").split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        target = "application/json" if media in ("*/*", "application/*") else media
        if target in quality:
            quality[target] = max(quality[target], q)
    return quality["image/png"] > quality["application/json"]


def create_app(batcher: BatchingGenerator, info: dict[str, Any]) -> FastAPI:
    """The app serving ``batcher``'s model; ``info`` is the ``GET /v1/model`` body (``serving.model_info``)."""
    page = resources.files("stackgan2.cli").joinpath(PAGE).read_text(encoding="utf-8")
    resolutions = list(info["resolutions"])
    app = FastAPI(
        title="stackgan2",
        version=__version__,
        description="StackGAN++ text-to-image: POST a sentence, get PNGs of every branch.",
    )
    app.add_middleware(BodyLimit)

    @app.exception_handler(RequestError)
    async def _refused(request: Request, exc: RequestError) -> JSONResponse:
        return _error(str(exc), exc.status)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        message = f"{exc.detail}: {request.method} {request.url.path}"
        if exc.headers and "Allow" in exc.headers:  # a 405: RFC 9110 wants the accepted methods in Allow
            message += f" (it takes {exc.headers['Allow']})"
        return _error(message, exc.status_code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "request"
        return _error(f"{where}: {first.get('msg', 'invalid')}", 422)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:  # logged by uvicorn; the client gets no traceback
        return _error(f"internal error ({type(exc).__name__}); see the server log", 500)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/healthz", summary="200 once the model is loaded", responses=errors(500))
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "model": info["name"]}

    @app.get("/v1/model", summary="The served model: architecture, branches, training steps, vocabulary",
             responses=errors(500))
    async def model() -> dict[str, Any]:
        return info

    png_headers = {
        "X-Seed": {"description": "with Accept: image/png: the seed used", "schema": {"type": "string"}},
        "X-Unknown-Words": {"description": "with Accept: image/png: the unknown words, a JSON list", "schema": {"type": "string"}},
    }

    @app.post(
        "/v1/images",
        summary="Sentence -> images (JSON with base64 PNGs per branch, or one PNG with Accept: image/png)",
        responses={
            200: {"model": Images, "content": {"image/png": {}}, "headers": png_headers},
            **errors(400, 406, 413, 415, 422, 500),
        },
    )
    async def images(request: Request) -> Response:
        payload = parse_json_body(await request.body(), request.headers.get("content-type"))
        job = parse_image_request(payload, resolutions)
        png = wants_png(request.headers.get("accept"))
        if png and (job.n != 1 or len(job.branches) != 1):
            raise RequestError("Accept: image/png returns one image; ask for n = 1 and one stage, or accept application/json", 406)
        result = await asyncio.wrap_future(batcher.submit(job))
        if png:  # encoding is CPU work: off the event loop, beside the next forward
            data = await run_in_threadpool(png_bytes, result.images[0][0])
            headers = {"X-Seed": str(job.seed), "X-Unknown-Words": json.dumps(result.unknown)}
            return Response(data, media_type="image/png", headers=headers)
        body = await run_in_threadpool(lambda: json.dumps(images_json(result)).encode())
        return Response(body, media_type="application/json")

    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        """FastAPI's document, the request body of ``POST /v1/images`` and the answers to requests no operation
        takes (an unknown path, another method)."""
        schema = default_openapi()
        # added here, not as openapi_extra: FastAPI's OpenAPI model would turn the seed's integer bounds into
        # floats, and the float of MAX_SEED is 2**63, a seed the server refuses
        body = {"application/json": {"schema": image_request_schema(resolutions)}}
        schema["paths"]["/v1/images"]["post"]["requestBody"] = {"required": True, "content": body}
        error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        allow = {"description": "the methods the path takes", "required": True, "schema": {"type": "string"}}
        schema["components"]["responses"] = {
            "NotFound": {"description": ERRORS[404], "content": error},
            "MethodNotAllowed": {"description": ERRORS[405], "content": error, "headers": {"Allow": allow}},
        }
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
