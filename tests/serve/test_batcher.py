"""The adaptive Batcher on its own: a lone request runs at once, requests that arrive while the model is
busy share the next batch, and a batch that fails is re-run request by request so that one request's
failure never becomes the others'."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from torchkeep.serve.batcher import Batcher


class Model:
    """Doubles `x`; slow enough that requests pile up behind a batch; fails on a row marked `boom`."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds, self.calls = seconds, []
        self.lock = threading.Lock()

    def __call__(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        with self.lock:
            self.calls.append([row["x"] for row in rows])
        time.sleep(self.seconds)
        if any(row.get("boom") for row in rows):
            raise RuntimeError("boom")
        return [{"y": 2 * row["x"]} for row in rows]


async def with_batcher(model: Model, body, **options: Any) -> Any:
    batcher = Batcher(model, **options)
    batcher.start()
    try:
        return await body(batcher)
    finally:
        await batcher.stop()


def test_a_lone_request_runs_at_once_even_with_a_wait_configured():
    model = Model()

    async def body(batcher: Batcher) -> tuple[Any, float]:
        started = time.perf_counter()
        result = await batcher.submit([{"x": 1}, {"x": 2}])
        return result, time.perf_counter() - started

    result, seconds = asyncio.run(with_batcher(model, body, max_wait_ms=500))

    assert result == [{"y": 2}, {"y": 4}]
    assert seconds < 0.25  # max_wait_ms applies only when requests are already queued


def test_requests_arriving_while_busy_share_a_batch_and_get_their_own_rows():
    model = Model(seconds=0.05)

    async def body(batcher: Batcher) -> list[Any]:
        first = asyncio.ensure_future(batcher.submit([{"x": 0}]))
        await asyncio.sleep(0.01)  # the first batch is computing now
        rest = [batcher.submit([{"x": 10 * i + j} for j in range(i)]) for i in range(1, 6)]
        return [await first, *await asyncio.gather(*rest)]

    results = asyncio.run(with_batcher(model, body))

    assert results[0] == [{"y": 0}]
    for i, result in enumerate(results[1:], start=1):
        assert result == [{"y": 2 * (10 * i + j)} for j in range(i)]
    assert len(model.calls) == 2 and len(model.calls[1]) == 15  # the five queued requests: one batch


def test_max_batch_rows_splits_the_queue():
    model = Model(seconds=0.02)

    async def body(batcher: Batcher) -> list[Any]:
        first = asyncio.ensure_future(batcher.submit([{"x": 0}]))
        await asyncio.sleep(0.005)
        rest = [batcher.submit([{"x": i}] * 3) for i in range(1, 5)]
        return [await first, *await asyncio.gather(*rest)]

    results = asyncio.run(with_batcher(model, body, max_batch_rows=6))

    assert results[1:] == [[{"y": 2 * i}] * 3 for i in range(1, 5)]
    assert [len(call) for call in model.calls] == [1, 6, 6]


def test_one_failing_request_in_a_batch_fails_alone():
    model = Model(seconds=0.05)

    async def body(batcher: Batcher) -> list[Any]:
        first = asyncio.ensure_future(batcher.submit([{"x": 0}]))
        await asyncio.sleep(0.01)
        queued = [batcher.submit([{"x": i, "boom": i == 3}]) for i in range(1, 6)]
        return await asyncio.gather(first, *queued, return_exceptions=True)

    outcomes = asyncio.run(with_batcher(model, body))

    assert isinstance(outcomes[3], RuntimeError)
    assert [o for i, o in enumerate(outcomes) if i != 3] == [[{"y": 2 * i}] for i in (0, 1, 2, 4, 5)]
    assert model.calls[1:] == [[1, 2, 3, 4, 5], [1], [2], [3], [4], [5]]  # one batch, then one by one


def test_health_follows_whether_the_model_answers():
    model = Model()

    async def body(batcher: Batcher) -> list[bool]:
        alive = [batcher.alive]
        try:
            await batcher.submit([{"x": 1, "boom": True}])
        except RuntimeError:
            alive.append(batcher.alive)
        await batcher.submit([{"x": 2}])
        return alive + [batcher.alive]

    assert asyncio.run(with_batcher(model, body)) == [True, False, True]


def test_a_cancelled_request_is_not_computed():
    """What the server does for a caller that disconnects while its rows wait for the model."""
    model = Model(seconds=0.05)

    async def body(batcher: Batcher) -> list[Any]:
        first = batcher.enqueue([{"x": 0}])
        await asyncio.sleep(0.01)
        gone, kept = batcher.enqueue([{"x": 1}]), batcher.enqueue([{"x": 2}])
        gone.cancel()
        return [await first, await kept, gone.cancelled()]

    assert asyncio.run(with_batcher(model, body)) == [[{"y": 0}], [{"y": 4}], True]
    assert model.calls == [[0], [2]]


def test_a_lone_small_request_on_an_idle_server_runs_on_the_event_loop():
    model = Model()
    threads: list[str] = []
    model_call = model.__call__

    def predict(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        threads.append(threading.current_thread().name)
        return model_call(rows)

    async def body(batcher: Batcher) -> None:
        await batcher.submit([{"x": 1}])  # idle, small: inline
        await batcher.submit([{"x": i} for i in range(17)])  # idle but larger than inline_max_rows: thread

    async def busy_body(batcher: Batcher) -> None:
        await batcher.submit([{"x": 1}])  # another request is in flight: thread

    asyncio.run(with_batcher(predict, body, idle=lambda: True, inline_max_rows=16))
    asyncio.run(with_batcher(predict, busy_body, idle=lambda: False))

    assert threads[0] == threading.main_thread().name
    assert threads[1].startswith("torchkeep-model") and threads[2].startswith("torchkeep-model")
