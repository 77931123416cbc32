"""What operations get from `torchkeep serve`: liveness and readiness, Prometheus metrics, back-pressure
(503 with Retry-After for a full queue or the request timeout), and swapping the model: POST /admin/reload
only with the admin token, SIGHUP for the source named at start (here a directory replaced on disk)."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

import torchkeep

ADMIN = "admin-token-for-ops-tests"


@pytest.fixture(scope="module")
def other_bundle(tmp_path_factory: pytest.TempPathFactory, make_table) -> Path:
    run_dir = tmp_path_factory.mktemp("ops") / "other"
    torchkeep.train(make_table(300, seed=42), target="late", run_dir=str(run_dir), epochs=1, quiet=True)
    return run_dir / "bundle"


def test_liveness_readiness_and_metrics_and_no_admin_endpoint_without_its_token(trained_run, start_server, feature_rows):
    server = start_server(trained_run / "bundle")
    assert server.post({"rows": feature_rows(2, 1)}).status_code == 200
    assert server.post({"rows": [{"carrier": "AA"}]}).status_code == 422

    alive = requests.get(f"{server.url}/healthz", timeout=10)
    ready = requests.get(f"{server.url}/readyz", timeout=10)
    scrape = requests.get(f"{server.url}/metrics", timeout=10)
    reload = requests.post(f"{server.url}/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)

    assert alive.status_code == 200 and alive.json()["status"] == "alive"
    assert ready.status_code == 200 and ready.json()["generation"] == 1
    assert ready.json()["source"] == str(trained_run / "bundle")
    families = {family.name: family for family in text_string_to_metric_families(scrape.text)}
    assert {"torchkeep_requests", "torchkeep_request_duration_seconds", "torchkeep_batch_rows",
            "torchkeep_queue_depth", "torchkeep_requests_in_flight"} <= set(families)
    statuses = {s.labels["status"]: s.value for s in families["torchkeep_requests"].samples if s.name.endswith("_total")}
    assert statuses == {"200": 1, "422": 1}
    assert reload.status_code == 404


def test_admin_reload_needs_its_token_and_a_bad_source_keeps_the_old_model(trained_run, start_server, feature_rows,
                                                                           tmp_path):
    server = start_server(trained_run / "bundle", "--admin-token", ADMIN)
    body = {"rows": feature_rows(3, 5)}
    before = server.post(body).json()
    url = f"{server.url}/admin/reload"

    wrong = requests.post(url, headers={"Authorization": "Bearer not-the-admin-token"}, timeout=10)
    predict_token = requests.post(url, timeout=10)
    missing = requests.post(url, json={"source": str(tmp_path / "nowhere")}, timeout=30,
                            headers={"Authorization": f"Bearer {ADMIN}"})
    same = requests.post(url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)  # no body: the source again

    assert (wrong.status_code, predict_token.status_code) == (401, 401)
    assert missing.status_code == 422 and missing.json()["error"]["field"] == "source"
    assert str(tmp_path / "nowhere") in missing.json()["error"]["message"]
    assert same.status_code == 200 and same.json()["generation"] == 2
    assert server.post(body).json() == before


def test_sighup_swaps_in_what_the_source_path_now_holds(trained_run, other_bundle, start_server, feature_rows, tmp_path):
    served = tmp_path / "current"
    shutil.copytree(trained_run / "bundle", served)
    server = start_server(served)
    rows = feature_rows(4, 9)
    expected = torchkeep.load(str(other_bundle)).predict_records(rows)
    shutil.rmtree(served)
    shutil.copytree(other_bundle, served)

    server.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while requests.get(f"{server.url}/readyz", timeout=10).json()["generation"] != 2:
        assert time.monotonic() < deadline, "SIGHUP did not reload the model"
        time.sleep(0.1)

    answer = server.post({"rows": rows}).json()["predictions"]
    assert [a["prediction"] for a in answer] == [e["prediction"] for e in expected]
    assert [a["probabilities"]["True"] for a in answer] == pytest.approx([e["probabilities"]["True"] for e in expected],
                                                                         abs=1e-6)
    code, _, stderr = server.stop()
    assert code == 0 and "reloaded" in stderr and "Traceback" not in stderr


@pytest.mark.parametrize("flags", [("--max-queue", "1"), ("--request-timeout-s", "0.002")],
                         ids=["queue full", "request timeout"])
def test_back_pressure_is_503_with_retry_after(trained_run, start_server, feature_rows, flags):
    server = start_server(trained_run / "bundle", *flags)
    body = json.dumps({"rows": feature_rows(800, 3)})
    gate = threading.Barrier(16)

    def send(_: int) -> requests.Response:
        gate.wait(timeout=30)
        return requests.post(f"{server.url}/predict", data=body, headers={"Content-Type": "application/json"}, timeout=60)

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(send, range(16)))

    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 503} and 503 in statuses, statuses
    for response in responses:
        if response.status_code == 503:
            assert response.headers["retry-after"] == "1" and "retry later" in response.json()["error"]["message"]
    deadline = time.monotonic() + 10  # and it serves on, once the batches already started are done
    while server.post({"rows": feature_rows(1, 4)}).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)
