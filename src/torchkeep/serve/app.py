"""The prediction server: FastAPI app around one bundle, loaded at start (never from a request).

    POST /predict   {"rows": [{...}, ...]} or one row {...} -> {"predictions": [...]}
    GET  /health    200 when the model answers (checked at start, kept by the batcher), else 503
    GET  /metadata  columns, types, known categories, task, metrics, limits
    /docs, /openapi.json

Client input never yields a 5xx: malformed JSON 400, wrong content type 415, body or rows too
large 413, invalid rows 422 naming the field, over the concurrency limit 429, bad token 401.
"""


import hmac
import json
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import polars as pl

from torchkeep.errors import ConfigError
from torchkeep.serve.batcher import Batcher
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


def records(predictions: pl.DataFrame) -> list[dict[str, Any]]:
    """Decoded predictions as JSON objects: prediction, plus probabilities per label."""
    labels = [c.removeprefix("probability_") for c in predictions.columns if c.startswith("probability_")]
    values = predictions["prediction"].to_list()
    if not labels:
        return [{"prediction": value} for value in values]
    probabilities = predictions.select(f"probability_{label}" for label in labels).rows()
    return [{"prediction": value, "probabilities": dict(zip(labels, row))} for value, row in zip(values, probabilities)]


def create_app(predictor: Any, config: ServeConfig) -> Any:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    validator = RowValidator(predictor.schema, max_rows=config.max_rows_per_request, strict=config.strict)

    def predict_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return records(predictor.predict_frame(validator.frame(rows)))

    batcher = Batcher(predict_rows, max_batch_rows=config.max_batch_rows, max_wait_ms=config.max_wait_ms)
    state = {"in_flight": 0, "ready": False, "reason": "starting"}

    @asynccontextmanager
    async def lifespan(app: Any):
        import torch

        torch.set_num_threads(config.threads)
        batcher.start()
        try:  # /health is true only once the model has really answered
            await batcher.submit([{name: None for name, _ in validator.columns}])
            state["ready"], state["reason"] = True, ""
        except Exception as error:
            state["reason"] = f"warm-up prediction failed: {error}"
            log.error("model cannot answer: %s", error)
        yield
        await batcher.stop()

    app = FastAPI(title="torchkeep", description=f"Predictions from {predictor.source}", lifespan=lifespan)

    def error(status: int, field: str, message: str) -> JSONResponse:
        return JSONResponse({"error": {"field": field, "message": message}}, status_code=status)

    def authorized(request: Request) -> bool:
        if config.token is None:
            return True
        header = request.headers.get("authorization", "")
        supplied = header.removeprefix("Bearer ").encode() if header.startswith("Bearer ") else b""
        return hmac.compare_digest(supplied, config.token.encode())

    @app.get("/health")
    async def health() -> JSONResponse:
        if state["ready"] and batcher.alive:
            return JSONResponse({"status": "ok", "batches": batcher.batches, "rows": batcher.rows})
        reason = state["reason"] or (f"model failing: {batcher.failure}" if batcher.failure else "batcher stopped")
        return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503)

    @app.get("/metadata")
    async def metadata(request: Request) -> JSONResponse:
        if not authorized(request):
            return error(401, "authorization", "missing or wrong bearer token")
        meta = predictor.meta
        return JSONResponse({
            **predictor.schema.describe(),
            "metrics": meta.get("metrics", {}),
            "versions": meta.get("versions", {}),
            "limits": {"max_rows_per_request": config.max_rows_per_request, "max_body_bytes": config.max_body_bytes},
            "request_schema": validator.json_schema(),
        })

    body_schema = {"content": {"application/json": {"schema": validator.json_schema()}}, "required": True}

    @app.post("/predict", openapi_extra={"requestBody": body_schema})
    async def predict(request: Request) -> JSONResponse:
        if not authorized(request):
            return error(401, "authorization", "missing or wrong bearer token")
        if state["in_flight"] >= config.max_concurrency:
            return JSONResponse({"error": {"field": "", "message": "too many requests in flight"}},
                                status_code=429, headers={"Retry-After": "1"})
        state["in_flight"] += 1
        try:
            return await _predict(request)
        finally:
            state["in_flight"] -= 1

    async def _predict(request: Request) -> JSONResponse:
        content_type = request.headers.get("content-type", "")
        if not content_type.split(";")[0].strip().lower() == "application/json":
            return error(415, "content-type", f"expected application/json (got {content_type or 'none'!r})")
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > config.max_body_bytes):
            return error(413, "body", f"body larger than {config.max_body_bytes} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > config.max_body_bytes:
                return error(413, "body", f"body larger than {config.max_body_bytes} bytes")
        try:
            parsed = json.loads(body, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as problem:
            return error(400, "body", f"malformed JSON: {str(problem)[:200]}")
        try:
            rows = validator.rows(parsed)
        except RequestError as problem:
            return error(problem.status, problem.field, problem.message)
        if await request.is_disconnected():  # the caller has gone: do not spend the model on it
            return error(499, "", "client closed the request")
        started = time.perf_counter()
        predictions = await batcher.submit(rows)
        return JSONResponse({"predictions": predictions},
                            headers={"X-Compute-Ms": f"{(time.perf_counter() - started) * 1000:.2f}"})

    return app


def serve(source: str, config: ServeConfig) -> None:
    """Load the bundle named at start and serve it until SIGINT / SIGTERM (in-flight requests finish)."""
    try:
        import uvicorn
    except ImportError:
        from torchkeep.errors import MissingExtraError

        raise MissingExtraError("uvicorn", "serve") from None
    import torchkeep

    predictor = torchkeep.load(source)
    app = create_app(predictor, config)
    print(f"serving {source} ({predictor.task}) on http://{config.host}:{config.port}"
          f"  docs: http://{config.host}:{config.port}/docs", flush=True)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=30)
