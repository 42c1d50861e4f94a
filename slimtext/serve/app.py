"""The HTTP server: FastAPI app over a Predictor and a DynamicBatcher.

    POST /v1/classify   {"texts": [...], "top_k": k?} -> labels and probabilities, in input order
    GET  /v1/model      labels, config, compression, backend, versions, limits
    GET  /healthz       the process is alive          GET /readyz   model loaded and warmed up
    GET  /metrics       Prometheus text format         GET /docs     OpenAPI page
    GET  /              the web page (static/, no external assets)

Every error is JSON of one shape, `{"error": {"type": ..., "message": ...}}`, and bad input is
always a 4xx: requests are checked (auth, content type, body size) in one ASGI middleware before
anything is parsed, then by pydantic, then against the per-app limits.
"""

from __future__ import annotations

import asyncio
import copy
import errno
import hmac
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPBearer
from fastapi.staticfiles import StaticFiles
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

import slimtext

from ..data.dataset import is_blank
from .batcher import BatcherClosedError, DynamicBatcher, InferenceError, QueueFullError

log = logging.getLogger("slimtext.serve")

STATIC = Path(__file__).parent / "static"
CONFIG_ENV = "SLIMTEXT_SERVE_CONFIG"  # how `run(workers=N)` hands settings to worker processes
# prometheus-client's multiprocess mode: with several workers each process writes its metrics to
# files in this folder and /metrics (whichever worker answers) reports the sum over all of them.
PROM_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Paths with their own metric label; anything else is "other", so scanners can't blow up the
# label set.
ENDPOINTS = ("/", "/v1/classify", "/v1/model", "/healthz", "/readyz", "/metrics", "/docs",
             "/openapi.json", "/favicon.ico")  # fmt: skip
# Methods with their own label, for the same reason (any token is a valid HTTP method).
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
JSON_BODY_PATHS = ("/v1/classify",)
# The status /metrics records for a client that hung up before any response was sent (nginx's
# "client closed request"): not a 5xx, so impatient clients don't page anyone.
CLIENT_CLOSED = 499


# -- request / response schema (this is what /docs shows) ----------------------------------------


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"texts": ["what a great match", "rates rise"]}]},
    )
    texts: list[StrictStr] = Field(
        min_length=1, description="Texts to classify; results come back in the same order."
    )
    top_k: Annotated[StrictInt, Field(ge=1)] | None = Field(
        None, description="Also return the k most likely labels per text, best first."
    )

    @field_validator("texts")
    @classmethod
    def _not_blank(cls, texts: list[str]) -> list[str]:
        # As the Python API and `slimtext predict`: a blank text has nothing to classify.
        blank = [i for i, t in enumerate(texts) if is_blank(t)]
        if blank:
            raise ValueError(
                f"texts {blank[:10]} are empty or only whitespace or invisible characters"
            )
        return texts


class LabelScore(BaseModel):
    label: str
    score: float = Field(description="Probability, 0..1.")


class Prediction(BaseModel):
    label: str = Field(description="The most likely label.")
    score: float = Field(description="Its probability, 0..1.")
    top_k: list[LabelScore] | None = Field(None, description="Only when the request sets top_k.")


class ClassifyResponse(BaseModel):
    model: str = Field(description="Name of the model directory that answered.")
    results: list[Prediction]


class ErrorDetail(BaseModel):
    type: str = Field(description="Machine-readable kind, e.g. `validation_error`.")
    message: str = Field(description="What is wrong, for a human.")


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Limits(BaseModel):
    max_batch_size: int
    max_wait_ms: float
    max_queue: int
    max_texts_per_request: int
    max_text_chars: int
    max_body_bytes: int


class ModelInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    name: str
    labels: list[str]
    backend: str
    device: str
    max_length: int | None
    long_text: str | None = Field(
        default=None, description="Longer texts: truncate | head-tail | chunks."
    )
    config: dict[str, Any]
    compression: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Compression steps applied after training (config.json's records; `config` "
        "is the shape before them: a pruned model has fewer heads and FFN neurons, a quantized "
        "one int8/int4 weights).",
    )
    metrics: dict[str, Any]
    model_slimtext_version: str | None = Field(description="slimtext version that wrote it.")
    slimtext_version: str = Field(description="slimtext version serving it.")
    limits: Limits


ERRORS = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "Malformed JSON.",
        401: "Missing or wrong API key.",
        413: "Body, text count or a text over the limit.",
        415: "Body is not application/json.",
        422: "Well-formed JSON of the wrong shape.",
        500: "Inference failed for this request.",
        503: "Queue full or shutting down; retry after `Retry-After` seconds.",
    }.items()
}


class ApiError(Exception):
    """Raised anywhere in a handler; becomes the JSON error shape with this status."""

    def __init__(self, status: int, type: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.type, self.message, self.headers = status, type, message, headers


def error_response(status: int, type: str, message: str, headers: dict | None = None):
    body = {"error": {"type": type, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


class _CORS(CORSMiddleware):
    """Starlette's CORS, with its refused preflight (a plain-text 400) in our JSON error shape."""

    def preflight_response(self, request_headers) -> Response:
        resp = super().preflight_response(request_headers)
        if resp.status_code != 400:
            return resp
        # "Disallowed CORS origin, method, headers": what it refused, in its own words
        why = bytes(resp.body).decode("utf-8", "replace")
        return error_response(400, "cors_refused", f"{why} (see serve --cors-origin)")


# -- settings -------------------------------------------------------------------------------------


@dataclass
class ServeConfig:
    """Everything `create_app` needs from a model path; JSON-able, so worker processes can get it
    through an environment variable. The API key itself is never stored, only the variable name."""

    model_dir: str
    backend: str = "auto"
    device: str = "cpu"
    max_batch_size: int = 64
    max_wait_ms: float = 5.0
    max_queue: int = 1024
    max_texts_per_request: int | None = None  # min(256, max_queue)
    max_text_chars: int = 10_000
    max_body_bytes: int = 4 * 1024 * 1024
    api_key_env: str | None = None
    cors_origins: list[str] = field(default_factory=list)
    threads: int | None = None  # torch intra-op threads in this process; None: torch's default

    def api_key(self) -> str | None:
        if not self.api_key_env:
            return None
        # Stripped as create_app strips it: a key read from a file (a Kubernetes secret made
        # with --from-file, `KEY=$(cat key)` of a CRLF file) kept its newline, no client could
        # send it (HTTP drops a header's edge whitespace) and every request was a 401.
        key = os.environ.get(self.api_key_env, "").strip()
        if not key:
            # Fail closed: a typo in the variable name must not serve the API without a key.
            raise ValueError(f"--api-key-env {self.api_key_env}: that variable is unset or empty")
        return key

    def validate(self) -> None:
        """Raise ValueError for any setting that can't work, before anything loads. `run` calls
        it in the parent process: raised in a `--workers N` worker it would only crash that
        worker, and uvicorn restarts crashed workers forever."""
        check_limits(
            max_batch_size=self.max_batch_size, max_wait_ms=self.max_wait_ms,
            max_queue=self.max_queue, max_texts_per_request=self.max_texts_per_request,
            max_text_chars=self.max_text_chars, max_body_bytes=self.max_body_bytes,
        )  # fmt: skip
        check_cors_origins(self.cors_origins)
        from ..infer import BACKENDS
        from ..train.precision import resolve_device

        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        resolve_device(self.device)  # the trainer's check: cpu, cuda or cuda:N that exists
        if self.backend.startswith("onnxruntime"):  # a missing extra, said once, not per worker
            # onnx too when a graph must be made: no export of this kind beside the model
            from ..artifact import INT8_FILE, ONNX_FILE
            from ..export import require_onnxruntime

            name = INT8_FILE if self.backend.endswith("int8") else ONNX_FILE
            require_onnxruntime(onnx=not Path(self.model_dir, name).is_file())

    def create_app(self) -> FastAPI:
        self.validate()
        kw = asdict(self)
        del kw["model_dir"], kw["api_key_env"], kw["threads"]
        if self.threads:
            import torch

            # Process-wide, so here (a serving process) and not in create_app (a library call).
            # torch's default is one thread per core in *each* worker; on a busy or shared host
            # the OpenMP threads then spin against each other and the event loop (measured on a
            # loaded 2-core box: 81 ms for 8 texts with 2 threads, 3.5 ms with 1).
            torch.set_num_threads(self.threads)
        # The event loop and the inference thread share the GIL. Python's default 5 ms switch
        # interval makes each wait up to 5 ms for the other to let go of it, once per torch op
        # (GIL convoy); 0.5 ms measured +25-50% req/s at concurrency 64 on the 2-core box.
        sys.setswitchinterval(0.0005)
        return create_app(self.model_dir, api_key=self.api_key(), **kw)


def factory() -> FastAPI:
    """uvicorn `--factory` entry point for worker processes: settings come from CONFIG_ENV."""
    raw = os.environ.get(CONFIG_ENV)
    if not raw:
        raise RuntimeError(f"{CONFIG_ENV} is not set; start the server with slimtext.serve.run")
    return ServeConfig(**json.loads(raw)).create_app()


def resolve_backend(backend: str) -> str:
    # "auto" is resolved by slimtext.infer: it times the installed backends and keeps the fastest.
    return backend


# -- metrics --------------------------------------------------------------------------------------


@dataclass
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    batch_size: Histogram
    inference: Histogram
    queue_depth: Gauge


def multiprocess_metrics() -> bool:
    return bool(os.environ.get(PROM_DIR_ENV))


def make_metrics() -> Metrics:
    # Per-app registry: several apps in one process (tests) must not share or clash on metrics.
    # In multiprocess mode values live in per-process files instead (prometheus-client picks
    # that storage at import when PROMETHEUS_MULTIPROC_DIR is set) and are summed at scrape.
    reg = CollectorRegistry()
    return Metrics(
        registry=reg,
        requests=Counter(
            "slimtext_requests", "HTTP requests.", ["endpoint", "method", "status"], registry=reg
        ),
        latency=Histogram(
            "slimtext_request_latency_seconds",
            "HTTP request latency.",
            ["endpoint"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=reg,
        ),  # fmt: skip
        batch_size=Histogram(
            "slimtext_batch_size",
            "Texts per model call.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=reg,
        ),  # fmt: skip
        inference=Histogram(
            "slimtext_inference_latency_seconds",
            "Seconds per model call.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=reg,
        ),  # fmt: skip
        queue_depth=Gauge(
            "slimtext_queue_depth",
            "Texts waiting to be batched.",
            registry=reg,
            multiprocess_mode="livesum",  # summed over live workers; ignored in one process
        ),
    )


def render_metrics(metrics: Metrics) -> bytes:
    if not multiprocess_metrics():
        return generate_latest(metrics.registry)
    from prometheus_client import multiprocess

    reg = CollectorRegistry()
    multiprocess.MultiProcessCollector(reg)
    return generate_latest(reg)


# -- the guard: auth, content type, body size, request metrics -----------------------------------


def _with_page_headers(path: str, headers) -> list:
    """`headers` plus nosniff on every response, and on HTML (the page at / and the same file
    under /static/, which went out without them) a policy that forbids everything but the
    page's own origin (it has no inline script) and framing (its API-key field must not be
    clickjacked). FastAPI's /docs and /redoc load their scripts from a CDN and keep theirs."""
    out = list(headers)
    names = {k.lower() for k, _ in out}
    if b"x-content-type-options" not in names:
        out.append((b"x-content-type-options", b"nosniff"))
    ctype = next((v for k, v in out if k.lower() == b"content-type"), b"")
    if ctype.startswith(b"text/html") and not path.startswith(("/docs", "/redoc")):
        if b"content-security-policy" not in names:
            out.append((b"content-security-policy", b"default-src 'self'"))
        if b"x-frame-options" not in names:
            out.append((b"x-frame-options", b"DENY"))
    return out


class Guard:
    """Pure ASGI middleware, so it sees every request (also 404s and errors raised before
    routing) and can refuse a large body while reading it instead of after buffering it."""

    # A client that sends its headers and then the body slowly, or never, held a connection
    # (and its memory) open for as long as it liked: one deadline for the whole body.
    body_timeout_s = 30.0

    def __init__(self, app, *, api_key: str | None, max_body_bytes: int, metrics: Metrics):
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        endpoint = path if path in ENDPOINTS else "other"
        if path.startswith("/static/"):
            endpoint = "/static"
        status, disconnected = None, False
        t0 = time.perf_counter()

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": _with_page_headers(path, message["headers"])}
            await send(message)

        async def receive_watch():
            nonlocal disconnected
            message = await receive()
            disconnected = disconnected or message["type"] == "http.disconnect"
            return message

        try:
            await self._handle(scope, receive_watch, send_status)
        finally:
            if status is None:  # nothing sent: the client left first, or the app raised
                status = CLIENT_CLOSED if disconnected else 500
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.metrics.requests.labels(endpoint, method, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)

    async def _handle(self, scope, receive, send):
        headers = {k.decode("latin-1").lower(): v for k, v in scope["headers"]}
        path, method = scope["path"], scope["method"]

        async def refuse(status, type, message, extra=None):
            await error_response(status, type, message, extra)(scope, receive, send)

        if self.api_key and (path.startswith("/v1/") or path == "/metrics"):
            scheme, _, token = headers.get("authorization", b"").partition(b" ")
            # compare_digest: the time taken must not reveal how much of the key matched.
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.api_key):
                return await refuse(
                    401, "unauthorized", "missing or wrong API key; send 'Authorization: Bearer "
                    "<key>'", {"WWW-Authenticate": "Bearer"},
                )  # fmt: skip
        if method not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        if path in JSON_BODY_PATHS and method == "POST":  # other methods: the router's 405
            ctype = headers.get("content-type", b"").decode("latin-1").split(";")[0].strip()
            if ctype.lower() != "application/json":
                return await refuse(
                    415, "unsupported_media_type",
                    f"send the body as JSON with Content-Type: application/json "
                    f"(got {ctype or 'no content type'!r})",
                )  # fmt: skip
        too_big = f"request body is larger than {self.max_body_bytes} bytes"
        try:
            declared = int(headers.get("content-length", b"0"))
        except ValueError:
            return await refuse(400, "bad_request", "invalid Content-Length header")
        if declared > self.max_body_bytes:
            return await refuse(413, "body_too_large", too_big)
        # Read the body here (chunked uploads have no Content-Length) and stop at the cap.
        chunks, size = [], 0
        deadline = time.monotonic() + self.body_timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), deadline - time.monotonic())
            except asyncio.TimeoutError:
                slow = f"request body not received within {self.body_timeout_s:g} s"
                return await refuse(408, "request_timeout", slow, {"Connection": "close"})
            if message["type"] == "http.disconnect":
                return  # nobody to answer; __call__ records CLIENT_CLOSED
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                return await refuse(413, "body_too_large", too_big)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        # The client may hang up while its texts wait for a batch (a load balancer's timeout):
        # the server's next message after the whole body is then the disconnect. The request
        # is cancelled at that point, so its texts are skipped and /metrics records 499; the
        # app would otherwise run them and count a 200 nobody received.
        gone = asyncio.Event()

        async def watch():
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()  # later calls wait for the disconnect, as the server's would
            return {"type": "http.disconnect"}

        handler = asyncio.ensure_future(self.app(scope, replay, send))
        watcher = asyncio.ensure_future(watch())
        try:
            await asyncio.wait({handler, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if handler.done():
                await handler  # its exception, if any, goes on as before
            else:  # the client left first
                handler.cancel()
                await asyncio.wait({handler})  # (a cancellation of ours still propagates)
                if not handler.cancelled():
                    handler.exception()  # retrieved: nobody to report it to
        finally:
            watcher.cancel()
            handler.cancel()  # a no-op when it is done; cancelled with us otherwise


# -- the app --------------------------------------------------------------------------------------


def describe(predictor, *, backend: str, device: str) -> dict:
    """Model facts for /v1/model; tolerant of duck-typed predictors (tests use stubs)."""
    md = getattr(predictor, "model_dir", None)
    meta = getattr(md, "meta", None) or {}
    config = getattr(md, "config", None)
    # Resolved: `slimtext serve .` (or `models/m/..`) would otherwise be named "" (or "..").
    name = (Path(meta["path"]).resolve().name if meta.get("path") else "") or "model"
    return dict(
        name=name,
        labels=list(predictor.labels),
        backend=getattr(predictor, "backend", backend),
        device=str(getattr(predictor, "device", device)),
        max_length=getattr(md, "max_length", None),
        long_text=getattr(predictor, "long_text", None),
        config=config.to_dict() if hasattr(config, "to_dict") else {},
        # Without the records a pruned or quantized model read as the uncompressed shape
        # (num_heads 4 / ffn_size 1024 for 1 + 3 heads and ~500 neurons, no word of int8).
        compression=list(meta.get("compression") or []),
        metrics=_metrics_summary(meta.get("metrics") or {}),
        model_slimtext_version=meta.get("slimtext_version"),
        slimtext_version=slimtext.__version__,
    )


def _metrics_summary(metrics: dict) -> dict:
    """metrics.json for /v1/model: each evaluation's figures without its per-class table and
    confusion matrix (16 MB an answer for 2,000 classes; they stay in metrics.json)."""
    out: dict = {}
    for k, v in metrics.items():
        if isinstance(v, dict) and "per_class" in v:
            out[k] = {f: v[f] for f in ("accuracy", "macro_f1", "n", "loss") if f in v}
        elif isinstance(v, dict) and any(isinstance(x, dict) and "per_class" in x
                                         for x in v.values()):  # fmt: skip
            out[k] = _metrics_summary(v)  # before_changes_in_memory: {valid, test}
        else:
            out[k] = v
    return out


def format_validation_error(exc: RequestValidationError) -> tuple[int, str, str]:
    """Pydantic's error list -> (status, type, one readable message)."""
    errors = exc.errors()
    if not errors:
        return 422, "validation_error", "invalid request"
    first = errors[0]
    if first.get("type") == "json_invalid":
        ctx = first.get("ctx") or {}
        return 400, "invalid_json", f"body is not valid JSON: {ctx.get('error', first['msg'])}"
    loc = [p for p in first.get("loc", ()) if p != "body"]
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    if not loc and first.get("type") == "missing":
        message = 'request body is required: {"texts": [...]}'
    elif not loc:
        message = 'body must be a JSON object: {"texts": [...], "top_k": k}'
    elif first.get("type") == "extra_forbidden":
        message = f"unknown field {where!r}; allowed: texts, top_k"
    else:
        msg = first["msg"]
        if first.get("type") == "value_error":  # our own validators' text, without pydantic's
            msg = msg.removeprefix("Value error, ")
        message = f"{where}: {msg}" if where else msg
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problems)"
    return 422, "validation_error", message


def check_limits(
    *,
    max_batch_size: int,
    max_wait_ms: float,
    max_queue: int,
    max_texts_per_request: int | None,
    max_text_chars: int,
    max_body_bytes: int,
) -> int:
    """Raise ValueError for limits that could never work; returns `max_texts_per_request` with
    its default filled in. One function for `create_app` and `ServeConfig.validate`, so a
    `--workers N` parent rejects exactly what a worker would."""
    DynamicBatcher.check_settings(max_batch_size, max_wait_ms, max_queue)
    if max_texts_per_request is None:
        max_texts_per_request = min(256, max_queue)
    if max_texts_per_request > max_queue:
        raise ValueError(
            f"max_texts_per_request ({max_texts_per_request}) must be <= max_queue ({max_queue}),"
            " or a request of that size could never be admitted (--max-texts-per-request, "
            "--max-queue)"
        )
    if max_texts_per_request < 1 or max_text_chars < 1 or max_body_bytes < 1:
        raise ValueError("max_texts_per_request, max_text_chars and max_body_bytes must be >= 1")
    return max_texts_per_request


def check_cors_origins(origins: Sequence[str]) -> list[str]:
    """ValueError for an origin no browser ever sends. A browser's Origin header is exactly
    `scheme://host[:port]`, and Starlette compares it as a string: `http://app.example/` (as
    copied from the address bar) or `app.example` were accepted and then refused every request
    from that very page, with nothing said at start-up."""
    from urllib.parse import urlsplit

    for origin in origins:
        if origin in ("*", "null"):  # "null": what a page opened from a file:// sends
            continue
        parts = urlsplit(origin)
        extra = parts.path or parts.query or parts.fragment or origin.endswith(("?", "#"))
        if parts.scheme and parts.netloc and not extra:
            continue
        hint = (
            f"; did you mean {parts.scheme}://{parts.netloc}?"
            if parts.scheme and parts.netloc
            else " (for example https://app.example.com or http://localhost:3000)"
        )
        raise ValueError(
            f"--cors-origin {origin!r}: an origin is scheme://host[:port] with no path, or *{hint}"
        )
    return list(origins)


def create_app(
    model,
    *,
    backend: str = "auto",
    device: str = "cpu",
    max_batch_size: int = 64,
    max_wait_ms: float = 5.0,
    max_queue: int = 1024,
    max_texts_per_request: int | None = None,
    max_text_chars: int = 10_000,
    max_body_bytes: int = 4 * 1024 * 1024,
    api_key: str | None = None,
    cors_origins: Sequence[str] = (),
) -> FastAPI:
    """A FastAPI app serving `model` (a model directory path or a loaded Predictor).

    The model loads here, so a bad directory fails now; the batcher starts and one warm-up
    prediction runs in the app's lifespan (after compiling every graph, on a compile backend;
    `/readyz` answers 503 until it is done).
    `max_queue` counts texts; a request that does not fit gets 503 + Retry-After.
    `max_texts_per_request` defaults to min(256, max_queue).
    """
    max_texts_per_request = check_limits(
        max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_queue=max_queue,
        max_texts_per_request=max_texts_per_request, max_text_chars=max_text_chars,
        max_body_bytes=max_body_bytes,
    )  # fmt: skip
    cors_origins = check_cors_origins(cors_origins)
    if api_key:  # as ServeConfig.api_key: HTTP can't carry a key's edge whitespace ("": no key)
        api_key = api_key.strip()
        if not api_key:
            raise ValueError("api_key is empty or only whitespace")
    from ..api import TextClassifier

    backend = resolve_backend(backend)
    if isinstance(model, (str, os.PathLike)):
        predictor = slimtext.load(model, backend=backend, device=device, batch_size=max_batch_size)
    elif isinstance(model, TextClassifier):
        # A fitted estimator serves through its predictor (an AttributeError on `.labels`
        # otherwise); an unfitted one raises NotFittedError here.
        predictor = model._check_fitted()
    elif not (hasattr(model, "labels") and hasattr(model, "predict_proba")):
        raise TypeError(
            "create_app takes a model directory or a Predictor (slimtext.load(dir)), "
            f"got {type(model).__name__}"
        )
    else:
        predictor = model
    # what `auto` chose and left out, said at start-up: the operator's only way to know
    notes = getattr(predictor, "auto_notes", list)()
    labels = list(predictor.labels)
    info = describe(predictor, backend=backend, device=device)
    limits = Limits(
        max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_queue=max_queue,
        max_texts_per_request=max_texts_per_request, max_text_chars=max_text_chars,
        max_body_bytes=max_body_bytes,
    )  # fmt: skip
    metrics = make_metrics()

    multiproc = multiprocess_metrics()

    def track_depth() -> None:
        # A callback gauge can't be read across processes: store the depth after every model
        # call instead (under load that is many times a second; idle, it is 0 anyway).
        if multiproc:
            metrics.queue_depth.set(batcher.depth)

    def on_batch(size: int, seconds: float) -> None:
        if state["ready"]:  # the warm-up's call is not traffic
            metrics.batch_size.observe(size)
            metrics.inference.observe(seconds)
        track_depth()

    batcher = DynamicBatcher(
        lambda texts: predictor.predict_proba(texts),
        max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_queue=max_queue,
        on_batch=on_batch,
    )  # fmt: skip
    if not multiproc:
        metrics.queue_depth.set_function(lambda: batcher.depth)
    state = {"ready": False, "status": "starting"}

    async def warm_up() -> None:
        # Through the batcher, so the first real request finds every lazy init done. A task, not
        # inline in the lifespan, so /healthz answers (and /readyz says 503) while it runs.
        try:
            # A compiled backend builds its graphs on first use (batch 1, larger batches, length-
            # grouped ones: seconds each); all of them now, not under the first real load.
            warm_all = getattr(predictor, "warm_up_all", None)
            if warm_all and str(getattr(predictor, "backend", "")).startswith("compile"):
                await batcher.run_in_worker(warm_all)
            await batcher.submit(["warm-up"])
            state["ready"], state["status"] = True, "ready"
        except BatcherClosedError:  # stopped (SIGTERM) while warming up: a shutdown, not a crash
            pass  # (the status already says shutting_down)
        except Exception as e:  # stay alive but not ready: /readyz says why
            log.exception("warm-up prediction failed")
            # the underlying error's kind, not only the batcher's InferenceError wrapping it
            cause = e.__cause__ or e.__context__
            state["status"] = f"warm-up failed: {type(e).__name__}" + (
                f" ({type(cause).__name__})" if cause is not None else ""
            )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for note in notes:  # here, where uvicorn's logging is set up
            (log.warning if " left out: " in note else log.info)(note)
        await batcher.start()
        state["status"] = "warming_up"
        warming = asyncio.create_task(warm_up())
        try:
            yield
        finally:
            # uvicorn has stopped accepting and waited for open requests; finish the queue.
            state["ready"], state["status"] = False, "shutting_down"
            await batcher.close()
            await warming
            if multiproc:  # drop this worker's live gauges from the sum
                from prometheus_client import multiprocess

                multiprocess.mark_process_dead(os.getpid())

    app = FastAPI(
        title="slimtext",
        version=slimtext.__version__,
        # /openapi.json and /docs answer without the API key: the labels only when there is none
        summary="Text classifier"
        if api_key
        else f"Text classifier `{info['name']}`: {', '.join(labels[:10])}"
        + (" ..." if len(labels) > 10 else ""),
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    app.state.metrics = metrics
    app.state.predictor = predictor
    app.state.serve_state = state

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error_response(exc.status, exc.type, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return error_response(*format_validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = str(exc.detail)
        if exc.status_code == 400:  # FastAPI's only 400: a body it could not decode (not UTF-8)
            kind, message = "invalid_json", f"body is not valid JSON: {message.lower()}"
        return error_response(exc.status_code, kind, message, exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return error_response(500, "internal_error", "internal server error")

    # Only documents the scheme in /docs; Guard does the checking (before the body is parsed).
    security = [Depends(HTTPBearer(auto_error=False))] if api_key else []

    @app.post(
        "/v1/classify",
        response_model=ClassifyResponse,
        response_model_exclude_none=True,
        responses=ERRORS,
        dependencies=security,
        summary="Classify texts",
    )
    async def classify(req: ClassifyRequest) -> ClassifyResponse:
        """Labels and probabilities for each text, in input order. Requests are merged with
        concurrent ones into batches of up to `max_batch_size` texts."""
        texts = req.texts
        if len(texts) > max_texts_per_request:
            raise ApiError(
                413, "too_many_texts",
                f"{len(texts)} texts in one request; the limit is {max_texts_per_request}",
            )  # fmt: skip
        for i, t in enumerate(texts):
            if len(t) > max_text_chars:
                raise ApiError(
                    413, "text_too_long",
                    f"texts[{i}] is longer than {max_text_chars} characters ({len(t)})",
                )  # fmt: skip
            try:
                t.encode("utf-8")
            except UnicodeEncodeError:  # JSON "\ud800" decodes to a lone surrogate
                raise ApiError(
                    422, "validation_error", f"texts[{i}] is not valid Unicode (lone surrogate)"
                ) from None
        if req.top_k is not None and req.top_k > len(labels):
            raise ApiError(
                422, "validation_error",
                f"top_k is {req.top_k} but the model has {len(labels)} labels",
            )  # fmt: skip
        try:
            probs = await batcher.submit(texts)
        except QueueFullError as e:
            raise ApiError(503, "overloaded", str(e), {"Retry-After": "1"}) from None
        except BatcherClosedError as e:
            raise ApiError(503, "shutting_down", str(e), {"Retry-After": "1"}) from None
        except InferenceError as e:
            raise ApiError(500, "inference_error", str(e)) from None
        # Plain JSON, not a ClassifyResponse: FastAPI would validate and re-serialise the model
        # on the event loop for every request, the one thread every request goes through.
        # `response_model` still documents the shape; a test checks the two agree.
        body = {"model": info["name"], "results": _predictions(probs, labels, req.top_k)}
        try:  # NaN would go out as a bare `NaN`, which strict JSON parsers refuse
            text = json.dumps(body, allow_nan=False)
        except ValueError:
            raise ApiError(
                500, "inference_error", "the model gave a probability that is not a number"
            ) from None
        return Response(text, media_type="application/json")

    @app.get("/v1/model", response_model=ModelInfo, dependencies=security, summary="Model info")
    @app.head("/v1/model", dependencies=security, include_in_schema=False)
    async def model_info() -> ModelInfo:
        return ModelInfo(**info, limits=limits)

    # HEAD too: load balancers and uptime checkers often probe with it. A route of its own, out
    # of the schema: one route for both gave the two operations the same OpenAPI id.
    @app.get("/healthz", summary="Liveness: the process answers")
    @app.head("/healthz", include_in_schema=False)
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        summary="Readiness: model loaded and warmed up",
        responses={503: {"description": "Not ready (yet, or shutting down)."}},
    )
    @app.head("/readyz", include_in_schema=False)
    async def readyz():
        if state["ready"]:
            return {"status": "ready"}
        return JSONResponse({"status": state["status"]}, status_code=503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    @app.head("/metrics", include_in_schema=False)  # every GET resource answers HEAD (was 405)
    async def prometheus() -> Response:
        return Response(render_metrics(metrics), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    @app.head("/", include_in_schema=False)  # uptime checkers probe the page with HEAD
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")  # its headers: `_with_page_headers`

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        # Browsers ask for it with every page load: no content, rather than a 404 in the logs
        # and in /metrics' error counts.
        return Response(status_code=204)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(Guard, api_key=api_key, max_body_bytes=max_body_bytes, metrics=metrics)
    if cors_origins:  # off by default; added last so it is outermost and answers preflights
        app.add_middleware(
            # HEAD: the routes that answer it (/v1/model, /metrics behind the key) refused its
            # preflight, so a page of another origin could not probe them with the key
            _CORS, allow_origins=list(cors_origins), allow_methods=["GET", "HEAD", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            # a page of another origin must read how long to wait after a 503 (browsers hide
            # every response header outside a short safe list unless it is exposed)
            expose_headers=["Retry-After"],
        )  # fmt: skip
    return app


def _predictions(probs: np.ndarray, labels: list[str], top_k: int | None) -> list[dict]:
    """One `Prediction`-shaped dict per row of `probs` (`top_k` only when asked)."""
    best = probs.argmax(axis=1).tolist()
    order = np.argsort(-probs, axis=1, kind="stable")[:, :top_k].tolist() if top_k else None
    out = []
    for i, row in enumerate(probs.tolist()):
        pred = {"label": labels[best[i]], "score": row[best[i]]}
        if order is not None:
            pred["top_k"] = [{"label": labels[j], "score": row[j]} for j in order[i]]
        out.append(pred)
    return out


def _check_metrics_dir(folder: str) -> None:
    """ValueError now if the workers could not write their metrics files into `folder`: each
    died at start-up with a traceback, uvicorn kept starting new ones, and nothing answered."""
    if not os.path.isdir(folder):
        raise ValueError(f"{PROM_DIR_ENV}={folder}: no such folder (make it, or unset it)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{PROM_DIR_ENV}={folder}: not writable by this user")


def _check_port(host: str, port: int) -> None:
    """ValueError now if `host:port` cannot be listened on (another server holds it)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ValueError(f"--host {host!r}: {e.strerror}") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            s.bind(addr)
        except OSError as e:
            why = (
                "ports below 1024 need privileges: choose --port 1024 or above"
                if e.errno in (errno.EACCES, errno.EPERM)
                else "is another server there? choose another --port"
            )
            raise ValueError(f"cannot listen on {host}:{port} ({e.strerror}): {why}") from None


def _stop_quietly_after_shutdown() -> None:
    """SIGTERM is how a server is stopped: uvicorn answers the requests in flight, then raises
    the signal again for the handler it found, which for `slimtext` printed "error: stopped by
    SIGTERM" and exited 143. A clean stop exits 0."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        # and Ctrl-C, which the `slimtext` command otherwise reports as "error: interrupted"
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, lambda *_: sys.exit(0))


def run(
    model_dir: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    backend: str = "auto",
    device: str = "cpu",
    max_batch_size: int = 64,
    max_wait_ms: float = 5.0,
    max_queue: int = 1024,
    max_texts_per_request: int | None = None,
    max_text_chars: int = 10_000,
    max_body_bytes: int = 4 * 1024 * 1024,
    api_key_env: str | None = None,
    cors_origins: Sequence[str] = (),
    workers: int = 1,
    threads: int | None = None,
    log_level: str = "info",
) -> None:
    """Serve `model_dir` over HTTP with uvicorn until interrupted (SIGINT/SIGTERM drain first).

    `workers` > 1 starts that many processes, each with its own model and batcher; /metrics
    then reports the sum over all workers (prometheus-client's multiprocess mode, in a temporary
    folder unless PROMETHEUS_MULTIPROC_DIR is set). `threads` sets torch's intra-op threads in
    each."""
    import uvicorn

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    cfg = ServeConfig(
        model_dir=str(model_dir), backend=backend, device=device, max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms, max_queue=max_queue, max_texts_per_request=max_texts_per_request,
        max_text_chars=max_text_chars, max_body_bytes=max_body_bytes, api_key_env=api_key_env,
        cors_origins=list(cors_origins), threads=threads,
    )  # fmt: skip
    # Here, before either path, so one worker and N workers reject the same settings alike.
    cfg.validate()
    _check_port(host, port)  # before the model loads: uvicorn said it after, and exited 3
    # The access log on stderr with the rest: stdout is for results (README)
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    # slimtext's own lines (the backend auto picked) in uvicorn's format, on stderr
    log_config["loggers"]["slimtext"] = {"handlers": ["default"], "level": log_level.upper(),
                                         "propagate": False}  # fmt: skip
    common = dict(host=host, port=port, log_level=log_level, timeout_graceful_shutdown=30,
                  log_config=log_config)  # fmt: skip
    if multiprocess_metrics():  # the user's folder: every worker (or the one) writes there
        _check_metrics_dir(os.environ[PROM_DIR_ENV])
    _stop_quietly_after_shutdown()
    if workers == 1:
        uvicorn.run(cfg.create_app(), **common)
        return
    # Fail here, once, rather than in N workers: check the key variable and the model directory.
    cfg.api_key()
    from ..artifact import read_model_dir

    read_model_dir(model_dir)
    os.environ[CONFIG_ENV] = json.dumps(asdict(cfg))
    own_dir = None
    if not multiprocess_metrics():
        # Set before the workers start: each imports prometheus-client afresh and sees it.
        own_dir = tempfile.mkdtemp(prefix="slimtext-metrics-")
        os.environ[PROM_DIR_ENV] = own_dir
    try:
        uvicorn.run("slimtext.serve.app:factory", factory=True, workers=workers, **common)
    finally:
        if own_dir:
            del os.environ[PROM_DIR_ENV]
            shutil.rmtree(own_dir, ignore_errors=True)
