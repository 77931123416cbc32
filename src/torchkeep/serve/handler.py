"""POST /predict on a lean ASGI path: no framework code per request (FastAPI's middleware, routing and
dependency solving cost more than the model for a one-row request). The body is read once, parsed once
(orjson; the standard library only where orjson refuses, for its exact answer), validated once, queued
with the model that validated it, and answered with orjson.

Client input never yields a 5xx: malformed JSON 400, bad token 401, wrong content type 415, body or rows
too large 413, invalid rows 422 naming the field, over the concurrency limit 429. The server's own
limits are 503 with Retry-After: the queue is full, or the answer did not come within the request timeout.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Sequence
from typing import Any

from torchkeep.errors import MissingExtraError
from torchkeep.serve.batcher import Batcher
from torchkeep.serve.metrics import Metrics
from torchkeep.serve.models import Models
from torchkeep.serve.validate import RequestError

Answer = tuple[int, bytes, list[tuple[bytes, bytes]]]  # status, body, extra headers
GONE = 499  # the client left before its answer (nginx's number; only /metrics shows it)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON number")


# Made once: json.loads / json.dumps with options build a new decoder / encoder on every call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def error_body(field: str, message: str) -> bytes:
    # ASCII-escaped (json's default): a field name taken from the request may hold a lone surrogate
    # ("\ud800"), which has no UTF-8 form and would turn this 4xx into a 500.
    return json.dumps({"error": {"field": field, "message": message}}).encode()


def bearer_ok(header: bytes, token: bytes) -> bool:
    supplied = header[7:] if header.startswith(b"Bearer ") else b""
    return hmac.compare_digest(supplied, token)


def _gone(watcher: asyncio.Future[Any]) -> bool:
    """Whether a receive() after the whole body has answered that the client disconnected."""
    return watcher.done() and not watcher.cancelled() and watcher.exception() is None \
        and watcher.result().get("type") == "http.disconnect"


async def respond(send: Any, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


class PredictHandler:
    def __init__(self, models: Models, batcher: Batcher, metrics: Metrics, config: Any) -> None:
        try:
            import orjson
        except ImportError:
            raise MissingExtraError("orjson", "serve") from None
        self.orjson = orjson
        self.models, self.batcher, self.metrics, self.config = models, batcher, metrics, config
        self.token = config.token.encode() if config.token is not None else None
        self.in_flight = 0
        self.too_large = error_body("body", f"body larger than {config.max_body_bytes} bytes")
        self.unauthorized = error_body("authorization", "missing or wrong bearer token")
        self.retry_after = [(b"retry-after", str(max(1, round(config.retry_after_s))).encode())]

    def parse(self, body: bytes) -> Any:
        try:
            return self.orjson.loads(body)
        except self.orjson.JSONDecodeError:  # UTF-16/32, integers past 64 bits, lone surrogates: json decides
            return _DECODER.decode(body.decode(json.detect_encoding(body)))

    def dumps(self, answer: Any) -> bytes:
        try:
            return self.orjson.dumps(answer)
        except TypeError:  # a label with a lone surrogate: json escapes it
            return _ENCODER.encode(answer).encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        started = time.perf_counter()
        headers = dict(scope["headers"])  # ASGI: lower-case byte names
        if self.token is not None and not bearer_ok(headers.get(b"authorization", b""), self.token):
            answer: Answer | None = (401, self.unauthorized, [])
        elif self.in_flight >= self.config.max_concurrency:
            answer = (429, error_body("", "too many requests in flight"), [(b"retry-after", b"1")])
        else:
            self.in_flight += 1
            try:
                answer = await self._answer(headers, receive)
            finally:
                self.in_flight -= 1
        if answer is None:  # the client has gone
            self.metrics.answered(GONE, time.perf_counter() - started)
            return
        await respond(send, *answer)
        self.metrics.answered(answer[0], time.perf_counter() - started)

    async def _answer(self, headers: dict[bytes, bytes], receive: Any) -> Answer | None:
        model = self.models.current  # this request is validated and answered by this generation
        validator, config = model.validator, self.config
        content_type = headers.get(b"content-type", b"")
        media_type = content_type.split(b";")[0].strip().lower()
        upload = media_type == b"multipart/form-data" and getattr(validator, "accepts_files", False)
        if media_type != b"application/json" and not upload:
            shown = content_type.decode("latin-1")[:100] or "none"
            return 415, error_body("content-type", f"expected application/json (got {shown!r})"), []
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or len(declared) > 18
                                     or int(declared) > config.max_body_bytes):
            return 413, self.too_large, []
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            if len(body) > config.max_body_bytes:
                return 413, self.too_large, []
            more = message.get("more_body", False)
        try:
            parsed = None if upload else self.parse(body)
        except (ValueError, RecursionError) as problem:  # UnicodeDecodeError is a ValueError
            return 400, error_body("body", f"malformed JSON: {str(problem)[:200]}"), []
        try:
            rows = validator.files(headers.get(b"content-type", b""), body) if upload else validator.rows(parsed)
        except RequestError as problem:
            return problem.status, error_body(problem.field, problem.message), []
        if self.batcher.depth >= config.max_queue:  # back-pressure: a bounded queue, not unbounded memory
            return 503, error_body("", f"the server is busy ({config.max_queue} requests waiting); retry later"), \
                self.retry_after
        started = time.perf_counter()
        failed = f"the model failed on this request ({{}}); see the server log"
        if self.in_flight == 1:  # maybe a lone small request on an idle server: computed here, no queue hop
            # One turn of the event loop first: requests that arrived with this one (a burst) start and
            # queue, so that they share a batch instead of each running alone (serve/batcher.py).
            await asyncio.sleep(0)
        try:
            predictions = self.batcher.run_now(rows, model.predict)
        except Exception as problem:  # the HTTP edge: valid input the model could not answer (logged by the batcher)
            return 500, error_body("", failed.format(type(problem).__name__)), []
        if predictions is None:
            result = self.batcher.enqueue(rows, model.predict)
            timed_out = False

            def time_out() -> None:
                nonlocal timed_out
                timed_out = not result.done()
                result.cancel()  # not computed if its batch has not started; ignored when it has

            timer = asyncio.get_running_loop().call_later(config.request_timeout_s, time_out)
            # With the body read, the next message is http.disconnect: a caller that leaves while its rows
            # wait cancels them, and the batcher skips cancelled requests (no model time for nobody).
            watcher = asyncio.ensure_future(receive())
            watcher.add_done_callback(lambda _: _gone(watcher) and result.cancel())  # no-op once the result is in
            try:
                predictions = await result
            except asyncio.CancelledError:
                if _gone(watcher):
                    return None
                if timed_out:
                    return 503, error_body("", f"no answer within {config.request_timeout_s:g} s; retry later"), \
                        self.retry_after
                raise
            except Exception as problem:  # as above
                return 500, error_body("", failed.format(type(problem).__name__)), []
            finally:
                timer.cancel()
                watcher.cancel()
        if None in predictions:
            field = f"{'inputs' if model.own else 'rows'}[{predictions.index(None)}]"
            return 422, error_body(field, "values too extreme for the model: its output is not a finite number"), []
        compute_ms = f"{(time.perf_counter() - started) * 1000:.2f}".encode()
        answer = validator.answer(predictions) if model.own else {"predictions": predictions}
        return 200, self.dumps(answer), [(b"x-compute-ms", compute_ms)]
