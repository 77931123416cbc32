"""The prediction server around one bundle, loaded at start (never from a request) and swapped only by
an operator (POST /admin/reload, SIGHUP).

POST /predict is served by a lean ASGI handler (serve/handler.py, no framework code per request);
FastAPI serves the rest.

    POST /predict       {"rows": [{...}, ...]} or one row {...} -> {"predictions": [...]}
                        a model of torchkeep.fit: {"inputs": ...} -> {"outputs": [...]} (serve/own_model.py)
    GET  /healthz       200 while the process serves (liveness)
    GET  /readyz        200 once the model is loaded and has answered its warm-up, while it answers; else 503
    GET  /health        /readyz with the batcher's counters (batches, rows)
    GET  /metrics       Prometheus text format (serve/metrics.py)
    GET  /metadata      columns, types, known categories, task, metrics, limits, the model's source
    POST /admin/reload  {"source": "RUN_OR_BUNDLE"} or no body (the current source again); only with an
                        admin token (`Authorization: Bearer ...`), else 404
    /docs, /openapi.json
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations (Request, imported
# in create_app) at runtime.
import asyncio
import logging
import signal
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from torchkeep.errors import ConfigError, MissingExtraError
from torchkeep.predict.load import load
from torchkeep.serve.batcher import Batcher
from torchkeep.serve.handler import PredictHandler, bearer_ok, error_body, respond
from torchkeep.serve.metrics import Metrics
from torchkeep.serve.models import Loaded, Models, ReloadError

log = logging.getLogger("torchkeep")


@dataclass(kw_only=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch_rows: int = 512
    max_wait_ms: float = 0.0  # 0: purely adaptive batching (never waits on an idle server)
    max_body_bytes: int = 1 << 20  # larger bodies: 413, before they are read
    max_rows_per_request: int = 1000
    max_concurrency: int = 256  # requests being handled at once; more get 429
    max_queue: int = 128  # requests waiting for the model; more get 503 with Retry-After
    request_timeout_s: float = 30.0  # no answer by then: 503 with Retry-After (and the rows are not computed)
    retry_after_s: float = 1.0  # the Retry-After of those 503s
    token: str | None = None  # bearer token required on /predict and /metadata when set
    admin_token: str | None = None  # bearer token of POST /admin/reload; None: no such endpoint (404)
    strict: bool = False  # unknown fields in a row: ignored, or 422 when strict
    threads: int = 1  # torch CPU threads for the model (the event loop needs a core too)
    device: str = "cpu"  # where the model runs: cpu, cuda, cuda:N, auto
    graceful_shutdown_s: float = 30.0  # SIGTERM: how long requests in flight may take to finish

    def __post_init__(self) -> None:
        for name in ("port", "max_batch_rows", "max_body_bytes", "max_rows_per_request", "max_concurrency",
                     "max_queue", "threads"):
            if getattr(self, name) < (0 if name == "port" else 1):
                raise ConfigError(f"serve.{name} must be > 0 (got {getattr(self, name)})")
        for name in ("max_wait_ms", "request_timeout_s", "retry_after_s", "graceful_shutdown_s"):
            if not getattr(self, name) >= (0 if name == "max_wait_ms" else 0.001):
                raise ConfigError(f"serve.{name} must be {'>= 0' if name == 'max_wait_ms' else '> 0'}"
                                  f" (got {getattr(self, name)})")
        for name in ("token", "admin_token"):
            if getattr(self, name) is not None and len(getattr(self, name)) < 8:
                raise ConfigError(f"serve {name.replace('_', ' ')} must be at least 8 characters")


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
           "429": "too many requests in flight", "503": "queue full or no answer within the request timeout (Retry-After)"}


class ServeApp:
    """The ASGI app: POST /predict on the lean path; everything else (/healthz, /readyz, /metrics,
    /metadata, /admin/reload, /docs, /openapi.json, lifespan) is FastAPI."""

    def __init__(self, api: Any, predict: PredictHandler, models: Models) -> None:
        self.api, self.predict, self.models = api, predict, models

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/predict":
            if scope["method"] == "POST":
                await self.predict(scope, receive, send)
            else:
                await respond(send, 405, error_body("method", f"use POST (got {scope['method']})"), [(b"allow", b"POST")])
            return
        await self.api(scope, receive, send)


def create_app(predictor: Any, config: ServeConfig, source: str | None = None) -> ServeApp:
    try:
        from fastapi import FastAPI, Request
        from fastapi.openapi.utils import get_openapi
        from fastapi.responses import Response
    except ImportError:
        raise MissingExtraError("fastapi", "serve") from None

    first = Loaded(predictor, source or predictor.source, 1, config.max_rows_per_request, config.strict)
    handler: PredictHandler | None = None
    batcher = Batcher(first.predict, max_batch_rows=config.max_batch_rows, max_wait_ms=config.max_wait_ms,
                      idle=lambda: handler is not None and handler.in_flight <= 1,  # no other request in the server
                      on_batch=lambda rows: metrics.batch_rows.observe(rows))
    models = Models(first, batcher, device=config.device)
    metrics = Metrics(queue_depth=lambda: batcher.depth, in_flight=lambda: handler.in_flight if handler else 0,
                      generation=lambda: models.current.generation)
    handler = PredictHandler(models, batcher, metrics, config)
    token = config.token.encode() if config.token is not None else None
    admin_token = config.admin_token.encode() if config.admin_token is not None else None

    def json_response(content: Any, status: int = 200) -> Any:
        return Response(handler.dumps(content), status_code=status, media_type="application/json")

    async def reload(source: str | None) -> Any:
        try:
            model = await models.reload(source)
        except ReloadError as error:
            metrics.reloads.labels("failed").inc()
            log.error("reload failed, still serving %s: %s", models.current.source, error)
            return json_response({"error": {"field": "source", "message": str(error)}}, 422)
        metrics.reloads.labels("ok").inc()
        api.openapi_schema = None  # the request schema may have changed with the model
        return json_response({"status": "reloaded", **model.describe()})

    @asynccontextmanager
    async def lifespan(app: Any):
        import torch

        torch.set_num_threads(config.threads)
        batcher.start()
        await models.warm_up()
        loop = asyncio.get_running_loop()
        hangup = threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGHUP")
        if hangup:  # SIGHUP: reload the current source (a run's newest checkpoint or bundle)
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(reload(None)))
        yield
        if hangup:
            loop.remove_signal_handler(signal.SIGHUP)
        await batcher.stop()

    api = FastAPI(title="torchkeep", description=f"Predictions from {first.source}", lifespan=lifespan)

    def ready() -> tuple[bool, str]:
        if models.ready and batcher.alive:
            return True, ""
        return False, models.reason or (f"model failing: {batcher.failure}" if batcher.failure else "batcher stopped")

    @api.get("/health")
    async def health() -> Any:
        ok, reason = ready()
        if ok:
            return json_response({"status": "ok", "batches": batcher.batches, "rows": batcher.rows})
        return json_response({"status": "unavailable", "reason": reason}, 503)

    @api.get("/healthz")
    async def healthz() -> Any:
        return json_response({"status": "alive"})

    @api.get("/readyz")
    async def readyz() -> Any:
        ok, reason = ready()
        return json_response({"status": "ready", **models.current.describe()} if ok
                             else {"status": "not ready", "reason": reason}, 200 if ok else 503)

    @api.get("/metrics")
    async def metrics_endpoint() -> Any:
        body, content_type = metrics.expose()
        return Response(body, media_type=content_type)

    @api.get("/metadata")
    async def metadata(request: Request) -> Any:
        if token is not None and not bearer_ok(request.headers.get("authorization", "").encode("latin-1"), token):
            return Response(handler.unauthorized, status_code=401, media_type="application/json")
        model = models.current
        meta = model.predictor.meta
        return json_response({
            **(model.validator.describe() if model.own else model.predictor.schema.describe()),
            "metrics": meta.get("metrics", {}),
            "versions": meta.get("versions", {}),
            "limits": {"max_rows_per_request": config.max_rows_per_request, "max_body_bytes": config.max_body_bytes},
            "request_schema": model.validator.json_schema(),
            "served": model.describe(),  # source, generation (1 + reloads), task, loaded_at
        })

    if admin_token is not None:
        @api.post("/admin/reload", include_in_schema=False)
        async def admin_reload(request: Request) -> Any:
            if not bearer_ok(request.headers.get("authorization", "").encode("latin-1"), admin_token):
                return json_response({"error": {"field": "authorization", "message": "missing or wrong admin token"}}, 401)
            body = await request.body()
            try:
                parsed = handler.parse(body) if body.strip() else {}
            except (ValueError, RecursionError) as problem:
                return json_response({"error": {"field": "body", "message": f"malformed JSON: {str(problem)[:200]}"}}, 400)
            source = parsed.get("source") if isinstance(parsed, dict) else None
            if not isinstance(parsed, dict) or not isinstance(source, str | None) or source == "":
                return json_response({"error": {"field": "source", "message":
                                      'expected {"source": "RUN_OR_BUNDLE"} or no body (the current source again)'}}, 422)
            return await reload(source)

    def openapi() -> dict[str, Any]:  # FastAPI's schema, plus /predict (served outside FastAPI's routing)
        if api.openapi_schema is None:
            model = models.current
            schema = get_openapi(title=api.title, version=api.version, description=api.description, routes=api.routes)
            answers = model.validator.response_schema() if model.own else _PREDICTIONS_SCHEMA
            responses: dict[str, Any] = {"200": {"description": "one prediction per row, in order",
                                                 "content": {"application/json": {"schema": answers}}}}
            responses |= {code: {"description": text, "content": {"application/json": {"schema": _ERROR_SCHEMA}}}
                          for code, text in _ERRORS.items()}
            operation = {"summary": "Predict", "operationId": "predict", "responses": responses, "requestBody": {
                "required": True, "content": {"application/json": {"schema": model.validator.json_schema()}}}}
            if token is not None:
                bearer = {"bearer": {"type": "http", "scheme": "bearer"}}
                schema.setdefault("components", {})["securitySchemes"] = bearer
                operation["security"] = [{"bearer": []}]
            schema["paths"]["/predict"] = {"post": operation}
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi
    return ServeApp(api, handler, models)


def serve(source: str, config: ServeConfig) -> None:
    """Load the bundle named at start and serve it until SIGINT / SIGTERM (in-flight requests finish)."""
    try:
        import uvicorn
    except ImportError:
        raise MissingExtraError("uvicorn", "serve") from None
    predictor = load(source, device=config.device)
    app = create_app(predictor, config, source)
    print(f"serving {source} ({predictor.task or 'tensors'}) on http://{config.host}:{config.port}"
          f"  docs: http://{config.host}:{config.port}/docs", flush=True)
    # uvicorn finishes the requests in flight on SIGTERM / SIGINT (stops listening, answers what it has
    # read, closes idle connections), then re-raises the signal to the handler that was there before it;
    # a no-op one here makes a clean shutdown exit 0 (not 143).
    stopped_by: list[int] = []
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda received, frame: stopped_by.append(received))
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning", access_log=False,
                proxy_headers=False, timeout_graceful_shutdown=config.graceful_shutdown_s)
    if stopped_by:
        print(f"stopped by {signal.Signals(stopped_by[0]).name}; requests in flight finished", flush=True)
