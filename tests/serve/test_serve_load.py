"""A bounded load test against a real `torchkeep serve` process on 127.0.0.1: 2,000 requests at
concurrency 16, one in ten malformed (bad JSON, wrong types, missing fields, bodies over the size
limit). Every good request is answered correctly, every bad one gets a 4xx naming the field, nothing
gets a 5xx; meanwhile the model is swapped for another bundle (POST /admin/reload) and no request
fails. Then /metrics, parsed with prometheus_client's own parser, agrees with what the clients saw.
Last, SIGTERM under load: the requests in flight complete, then the server exits 0."""

from __future__ import annotations

import http.client
import json
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import torchkeep
from in_flight import start_request

REQUESTS = 2000
CONCURRENCY = 16
MAX_BODY_BYTES = 16 * 1024
ADMIN = "admin-token-for-load-tests"
TARGET = "late"


@pytest.fixture(scope="module")
def second_bundle(tmp_path_factory: pytest.TempPathFactory, make_table) -> Path:
    """Another model of the same columns (other rows, other weights): what the server is reloaded with."""
    run_dir = tmp_path_factory.mktemp("load") / "second"
    torchkeep.train(make_table(300, seed=99), target=TARGET, run_dir=str(run_dir), epochs=1, quiet=True)
    return run_dir / "bundle"


class Client:
    """One keep-alive connection, as a load generator holds it."""

    def __init__(self, port: int) -> None:
        self.port, self.connection = port, None

    def post(self, body: bytes, path: str = "/predict", headers: dict[str, str] | None = None,
             close: bool = False) -> tuple[int, dict[str, Any], dict[str, str]]:
        if self.connection is None:
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        sent = {"Content-Type": "application/json", **(headers or {}), **({"Connection": "close"} if close else {})}
        try:
            self.connection.request("POST", path, body, sent)
            response = self.connection.getresponse()
            data = response.read()
        except Exception:
            self.connection.close()
            self.connection = None
            raise
        if close or response.will_close:
            self.connection.close()
            self.connection = None
        return response.status, json.loads(data), dict(response.getheaders())


def bad_request(kind: int, row: dict[str, Any]) -> tuple[bytes, int, str, bool]:
    """(body, expected status, expected error field, send on its own connection)."""
    if kind == 0:
        return b'{"rows": [{"carrier": "AA", ', 400, "body", False
    if kind == 1:
        return json.dumps({"rows": [{**row, "dep_delay": "twelve"}]}).encode(), 422, "rows[0].dep_delay", False
    if kind == 2:
        return json.dumps({"rows": [row, {k: v for k, v in row.items() if k != "carrier"}]}).encode(), 422, \
            "rows[1].carrier", False
    huge = json.dumps({"rows": [row] * 200}).encode()  # > MAX_BODY_BYTES
    assert len(huge) > MAX_BODY_BYTES
    return huge, 413, "body", True


def same_predictions(answer: list[dict[str, Any]], expected: list[dict[str, Any]]) -> bool:
    return len(answer) == len(expected) and all(
        a["prediction"] == e["prediction"] and abs(a["probabilities"]["True"] - e["probabilities"]["True"]) < 1e-6
        for a, e in zip(answer, expected))


def metric_samples(url_port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    connection = http.client.HTTPConnection("127.0.0.1", url_port, timeout=30)
    connection.request("GET", "/metrics")
    response = connection.getresponse()
    assert response.status == 200 and response.getheader("content-type").startswith("text/plain")
    text = response.read().decode()
    connection.close()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_load_with_malformed_requests_and_a_reload_fails_nothing(trained_run, second_bundle, start_server, feature_rows):
    server = start_server(trained_run / "bundle", "--max-body-bytes", str(MAX_BODY_BYTES), "--admin-token", ADMIN)
    pool = [feature_rows(1 + i % 3, 1000 + i) for i in range(40)]
    first, second = torchkeep.load(str(trained_run / "bundle")), torchkeep.load(str(second_bundle))
    expected = [(first.predict_records(rows), second.predict_records(rows)) for rows in pool]
    clients = threading.local()
    reloaded = threading.Event()
    outcomes: list[tuple[str, Any]] = []

    def one(i: int) -> tuple[str, Any]:
        client = getattr(clients, "client", None) or Client(server.port)
        clients.client = client
        if i == REQUESTS // 3:  # the swap, from inside the load
            status, answer, _ = client.post(json.dumps({"source": str(second_bundle)}).encode(), "/admin/reload",
                                            {"Authorization": f"Bearer {ADMIN}"})
            reloaded.set()
            return ("reload", status, answer)
        rows = pool[i % len(pool)]
        if i % 10 == 7:
            body, status_expected, field, alone = bad_request(i // 10 % 4, rows[0])
            status, answer, _ = client.post(body, close=alone)
            return ("bad", (status, status_expected), (answer.get("error", {}), field))
        status, answer, _ = client.post(json.dumps({"rows": rows}).encode())
        old, new = expected[i % len(pool)]
        predictions = answer.get("predictions", [])
        return ("good", status, (same_predictions(predictions, old), same_predictions(predictions, new)))

    started = time.monotonic()
    with ThreadPoolExecutor(CONCURRENCY) as executor:
        outcomes = list(executor.map(one, range(REQUESTS)))
    seconds = time.monotonic() - started

    reloads = [o for o in outcomes if o[0] == "reload"]
    assert reloads[0][1] == 200 and reloads[0][2]["generation"] == 2, reloads
    good = [o for o in outcomes if o[0] == "good"]
    assert Counter(status for _, status, _ in good) == {200: len(good)}
    assert all(old or new for _, _, (old, new) in good), "an answer that is neither model's"
    assert sum(new and not old for _, _, (old, new) in good) > 0, "the new model never answered"
    bad = [o for o in outcomes if o[0] == "bad"]
    assert len(bad) == REQUESTS // 10
    for _, (status, status_expected), (error, field) in bad:
        assert status == status_expected and error["field"] == field and error["message"], (status, error)
    samples = metric_samples(server.port)
    by_status = {dict(labels)["status"]: value for (name, labels), value in samples.items()
                 if name == "torchkeep_requests_total"}
    assert not [s for s in by_status if s.startswith("5")], by_status
    assert by_status["200"] >= len(good) and by_status["413"] == sum(o[1][0] == 413 for o in bad)
    assert samples[("torchkeep_reloads_total", (("result", "ok"),))] == 1
    assert samples[("torchkeep_model_generation", ())] == 2
    assert samples[("torchkeep_request_duration_seconds_count", ())] == sum(by_status.values())
    assert samples[("torchkeep_batch_rows_count", ())] >= 1 and ("torchkeep_queue_depth", ()) in samples
    print(f"{REQUESTS} requests at concurrency {CONCURRENCY} in {seconds:.1f} s, a reload among them")
    code, _, stderr = server.stop()
    assert code == 0 and "Traceback" not in stderr, stderr


def test_sigterm_under_load_completes_the_requests_in_flight(trained_run, start_server, feature_rows):
    server = start_server(trained_run / "bundle")
    rows = feature_rows(2, 77)
    body = json.dumps({"rows": rows}).encode()
    expected = torchkeep.load(str(trained_run / "bundle")).predict_records(rows)
    stop = threading.Event()
    answered: list[int] = []
    refused: list[str] = []
    wrong: list[Any] = []

    def load() -> None:  # keep-alive clients until the server goes away
        client = Client(server.port)
        while not stop.is_set():
            try:
                status, answer, _ = client.post(body)
            except OSError as error:  # after SIGTERM: refused, or an idle connection closed by the server
                refused.append(type(error).__name__)
                time.sleep(0.01)
                continue
            if status != 200 or not same_predictions(answer["predictions"], expected):
                wrong.append((status, answer))
            answered.append(status)

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    in_flight = [start_request(server.port, body) for _ in range(8)]
    time.sleep(0.3)  # the server has read their headers
    before = len(answered)
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert server.process.poll() is None, "the server exited with requests still in flight"
    results = []
    for connection in in_flight:
        connection.send(body[len(body) // 2 :])
        response = connection.getresponse()
        results.append((response.status, json.loads(response.read())))
        connection.close()
    code, stdout, stderr = server.stop(timeout_s=30)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)

    assert before > 0 and wrong == []
    assert [status for status, _ in results] == [200] * len(in_flight)
    assert all(same_predictions(answer["predictions"], expected) for _, answer in results)
    assert code == 0 and "stopped by SIGTERM" in stdout and "Traceback" not in stderr, stderr
