"""The prediction server around one bundle, loaded at start (never from a request).

POST /predict is served by a lean ASGI handler (no framework code per request); FastAPI serves the rest.

    POST /predict   {"rows": [{...}, ...]} or one row {...} -> {"predictions": [...]}
                    a model of torchkeep.fit: {"inputs": ...} -> {"outputs": [...]} (serve/own_model.py)
    GET  /health    200 when the model answers (checked at start, kept by the batcher), else 503
    GET  /metadata  columns, types, known categories, task, metrics, limits
    /docs, /openapi.json

Client input never yields a 5xx: malformed JSON 400, wrong content type 415, body or rows too
large 413, invalid rows 422 naming the field, over the concurrency limit 429, bad token 401.
"""


import asyncio
import hmac
import json
import logging
import math
import signal
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import polars as pl

from torchkeep.errors import ConfigError, MissingExtraError
from torchkeep.predict.load import load
from torchkeep.predict.own_model import TensorPredictor
from torchkeep.serve.batcher import Batcher
from torchkeep.serve.images import ImageRowValidator
from torchkeep.serve.own_model import TensorRequests
from torchkeep.serve.validate import RequestError, RowValidator

log = logging.getLogger("torchkeep")


@dataclass(kw_only=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch_rows: int = 512
    max_wait_ms: float = 0.0  # 0: purely adaptive batching (never waits on an idle server)
    max_body_bytes: int = 1 << 20
    max_rows_per_request: int = 1000
    max_concurrency: int = 256  # requests being handled at once; more get 429
    token: str | None = None  # bearer token required on /predict and /metadata when set
    strict: bool = False  # unknown fields in a row: ignored, or 422 when strict
    threads: int = 1  # torch CPU threads for the model (the event loop needs a core too)
    device: str = "cpu"  # where the model runs: cpu, cuda, cuda:N, auto

    def __post_init__(self) -> None:
        for name in ("port", "max_batch_rows", "max_body_bytes", "max_rows_per_request", "max_concurrency", "threads"):
            if getattr(self, name) < (0 if name == "port" else 1):
                raise ConfigError(f"serve.{name} must be > 0 (got {getattr(self, name)})")
        if self.max_wait_ms < 0:
            raise ConfigError(f"serve.max_wait_ms must be >= 0 (got {self.max_wait_ms})")
        if self.token is not None and len(self.token) < 8:
            raise ConfigError("serve token must be at least 8 characters")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON number")


# Made once: json.loads / json.dumps with options build a new decoder / encoder on every call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def records(predictions: pl.DataFrame) -> list[dict[str, Any] | None]:
    """Decoded predictions as JSON objects: prediction, plus probabilities per label.

    None for a row whose output is not finite (inputs so extreme that float32 overflows): JSON
    cannot carry NaN, and the caller answers 422 for that row instead of failing to encode."""
    labels = [c.removeprefix("probability_") for c in predictions.columns if c.startswith("probability_")]
    values = predictions.get_column("prediction").to_list()
    if not labels:  # regression: the prediction is the number
        return [{"prediction": value} if math.isfinite(value) else None for value in values]
    # Column by column: a frame-level select goes through polars' query engine (~25x slower for one row).
    probabilities = zip(*(predictions.get_column(f"probability_{label}").to_list() for label in labels))
    return [{"prediction": value, "probabilities": dict(zip(labels, row))} if all(map(math.isfinite, row)) else None
            for value, row in zip(values, probabilities)]


_PREDICTIONS_SCHEMA = {
    "type": "object",
    "properties": {"predictions": {"type": "array", "items": {"type": "object", "properties": {
        "prediction": {"description": "class label, or the target in its original units"},
        "probabilities": {"type": "object", "additionalProperties": {"type": "number"}}}}}},
}
_ERROR_SCHEMA = {"type": "object", "properties": {"error": {"type": "object", "properties": {
    "field": {"type": "string", "description": "what was wrong, e.g. rows[3].dep_delay"},
    "message": {"type": "string"}}}}}
_ERRORS = {"400": "malformed JSON", "401": "missing or wrong bearer token", "413": "body or rows over the limit",
           "415": "content type is not application/json", "422": "a row that does not fit the schema (field named)",
           "429": "too many requests in flight"}


def _error_body(field: str, message: str) -> bytes:
    # ASCII-escaped (json's default): a field name taken from the request may hold a lone surrogate
    # ("\ud800"), which has no UTF-8 form and would turn this 4xx into a 500.
    return json.dumps({"error": {"field": field, "message": message}}).encode()


def _bearer_ok(header: bytes, token: bytes) -> bool:
    supplied = header[7:] if header.startswith(b"Bearer ") else b""
    return hmac.compare_digest(supplied, token)


class ServeApp:
    """The ASGI app: POST /predict on a lean path that touches no framework code per request (this is
    the hot path: FastAPI's middleware, routing and dependency solving cost more than the model for a
    one-row request); everything else (/health, /metadata, /docs, /openapi.json, lifespan) is FastAPI."""

    def __init__(self, api: Any, predict: Any) -> None:
        self.api, self.predict = api, predict

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/predict":
            if scope["method"] == "POST":
                await self.predict(scope, receive, send)
            else:
                await _respond(send, 405, _error_body("method", f"use POST (got {scope['method']})"),
                               [(b"allow", b"POST")])
            return
        await self.api(scope, receive, send)


def _gone(watcher: asyncio.Future[Any]) -> bool:
    """Whether a receive() after the whole body has answered that the client disconnected."""
    return watcher.done() and not watcher.cancelled() and watcher.exception() is None \
        and watcher.result().get("type") == "http.disconnect"


async def _respond(send: Any, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


def create_app(predictor: Any, config: ServeConfig) -> ServeApp:
    from fastapi import FastAPI, Request
    from fastapi.openapi.utils import get_openapi
    from fastapi.responses import JSONResponse, Response

    own = isinstance(predictor, TensorPredictor)  # a model of torchkeep.fit: JSON tensors (serve/own_model.py)
    if own:
        validator: Any = TensorRequests(predictor, max_rows=config.max_rows_per_request, strict=config.strict)
    elif getattr(predictor.schema, "kind", "table") == "image":  # base64 images in JSON, or multipart uploads
        validator = ImageRowValidator(predictor.schema, max_rows=config.max_rows_per_request, strict=config.strict)
    else:
        validator = RowValidator(predictor.schema, max_rows=config.max_rows_per_request, strict=config.strict)
    token = config.token.encode() if config.token is not None else None
    too_large = _error_body("body", f"body larger than {config.max_body_bytes} bytes")
    unauthorized = _error_body("authorization", "missing or wrong bearer token")

    def predict_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
        return records(predictor.predict_frame(validator.frame(rows)))

    state = {"in_flight": 0, "ready": False, "reason": "starting"}
    batcher = Batcher(validator.predict if own else predict_rows, max_batch_rows=config.max_batch_rows,
                      max_wait_ms=config.max_wait_ms, idle=lambda: state["in_flight"] <= 1)  # no other request in the server

    @asynccontextmanager
    async def lifespan(app: Any):
        import torch

        torch.set_num_threads(config.threads)
        batcher.start()
        try:  # /health is true only once the model has really answered
            await batcher.submit([validator.warmup_row()])
            state["ready"], state["reason"] = True, ""
        except Exception as error:
            state["reason"] = f"warm-up prediction failed: {error}"
            log.error("model cannot answer: %s", error)
        yield
        await batcher.stop()

    api = FastAPI(title="torchkeep", description=f"Predictions from {predictor.source}", lifespan=lifespan)

    @api.get("/health")
    async def health() -> JSONResponse:
        if state["ready"] and batcher.alive:
            return JSONResponse({"status": "ok", "batches": batcher.batches, "rows": batcher.rows})
        reason = state["reason"] or (f"model failing: {batcher.failure}" if batcher.failure else "batcher stopped")
        return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503)

    @api.get("/metadata")
    async def metadata(request: Request) -> Response:
        if token is not None and not _bearer_ok(request.headers.get("authorization", "").encode("latin-1"), token):
            return Response(unauthorized, status_code=401, media_type="application/json")
        meta = predictor.meta
        return JSONResponse({
            **(validator.describe() if own else predictor.schema.describe()),
            "metrics": meta.get("metrics", {}),
            "versions": meta.get("versions", {}),
            "limits": {"max_rows_per_request": config.max_rows_per_request, "max_body_bytes": config.max_body_bytes},
            "request_schema": validator.json_schema(),
        })

    def openapi() -> dict[str, Any]:  # FastAPI's schema, plus /predict (served outside FastAPI's routing)
        if api.openapi_schema is None:
            schema = get_openapi(title=api.title, version=api.version, description=api.description, routes=api.routes)
            answers = validator.response_schema() if own else _PREDICTIONS_SCHEMA
            responses: dict[str, Any] = {"200": {"description": "one prediction per row, in order",
                                                 "content": {"application/json": {"schema": answers}}}}
            responses |= {code: {"description": text, "content": {"application/json": {"schema": _ERROR_SCHEMA}}}
                          for code, text in _ERRORS.items()}
            operation = {"summary": "Predict", "operationId": "predict", "responses": responses, "requestBody": {
                "required": True, "content": {"application/json": {"schema": validator.json_schema()}}}}
            if token is not None:
                bearer = {"bearer": {"type": "http", "scheme": "bearer"}}
                schema.setdefault("components", {})["securitySchemes"] = bearer
                operation["security"] = [{"bearer": []}]
            schema["paths"]["/predict"] = {"post": operation}
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi

    async def predict(scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = dict(scope["headers"])  # ASGI: lower-case byte names
        if token is not None and not _bearer_ok(headers.get(b"authorization", b""), token):
            return await _respond(send, 401, unauthorized)
        if state["in_flight"] >= config.max_concurrency:
            return await _respond(send, 429, _error_body("", "too many requests in flight"), [(b"retry-after", b"1")])
        state["in_flight"] += 1
        try:
            answer = await _predict(headers, receive)
        finally:
            state["in_flight"] -= 1
        if answer is not None:  # None: the client has gone
            await _respond(send, *answer)

    Answer = tuple[int, bytes, list[tuple[bytes, bytes]]]  # status, body, extra headers

    async def _predict(headers: dict[bytes, bytes], receive: Any) -> Answer | None:
        content_type = headers.get(b"content-type", b"")
        media_type = content_type.split(b";")[0].strip().lower()
        upload = media_type == b"multipart/form-data" and getattr(validator, "accepts_files", False)
        if media_type != b"application/json" and not upload:
            shown = content_type.decode("latin-1")[:100] or "none"
            return 415, _error_body("content-type", f"expected application/json (got {shown!r})"), []
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or len(declared) > 18
                                     or int(declared) > config.max_body_bytes):
            return 413, too_large, []
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            if len(body) > config.max_body_bytes:
                return 413, too_large, []
            more = message.get("more_body", False)
        try:
            parsed = None if upload else _DECODER.decode(body.decode(json.detect_encoding(body)))
        except (ValueError, RecursionError) as problem:  # UnicodeDecodeError is a ValueError
            return 400, _error_body("body", f"malformed JSON: {str(problem)[:200]}"), []
        try:
            rows = validator.files(content_type, body) if upload else validator.rows(parsed)
        except RequestError as problem:
            return problem.status, _error_body(problem.field, problem.message), []
        started = time.perf_counter()
        result = batcher.enqueue(rows)
        # With the body read, the next message is http.disconnect: a caller that leaves while its rows
        # wait cancels them, and the batcher skips cancelled requests (no model time for nobody).
        watcher = asyncio.ensure_future(receive())
        watcher.add_done_callback(lambda _: _gone(watcher) and result.cancel())  # no-op once the result is in
        try:
            predictions = await result
        except asyncio.CancelledError:
            if _gone(watcher):
                return None
            raise
        except Exception as problem:  # the HTTP edge: valid input the model could not answer (logged by the batcher)
            message = f"the model failed on this request ({type(problem).__name__}); see the server log"
            return 500, _error_body("", message), []
        finally:
            watcher.cancel()
        if None in predictions:
            field = f"{'inputs' if own else 'rows'}[{predictions.index(None)}]"
            return 422, _error_body(field, "values too extreme for the model: its output is not a finite number"), []
        compute_ms = f"{(time.perf_counter() - started) * 1000:.2f}".encode()
        answer = validator.answer(predictions) if own else {"predictions": predictions}
        return 200, _ENCODER.encode(answer).encode(), [(b"x-compute-ms", compute_ms)]

    return ServeApp(api, predict)


def serve(source: str, config: ServeConfig) -> None:
    """Load the bundle named at start and serve it until SIGINT / SIGTERM (in-flight requests finish)."""
    try:
        import uvicorn
    except ImportError:
        raise MissingExtraError("uvicorn", "serve") from None
    predictor = load(source, device=config.device)
    app = create_app(predictor, config)
    print(f"serving {source} ({predictor.task or 'tensors'}) on http://{config.host}:{config.port}"
          f"  docs: http://{config.host}:{config.port}/docs", flush=True)
    # uvicorn finishes the requests in flight on SIGTERM / SIGINT, then re-raises the signal to the
    # handler that was there before it; a no-op one here makes a clean shutdown exit 0 (not 143).
    stopped_by: list[int] = []
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda received, frame: stopped_by.append(received))
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning", access_log=False,
                proxy_headers=False, timeout_graceful_shutdown=30)
    if stopped_by:
        print(f"stopped by {signal.Signals(stopped_by[0]).name}; requests in flight finished", flush=True)
