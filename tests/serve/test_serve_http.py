"""`torchkeep serve` as a client sees it: a real server process on 127.0.0.1, called with `requests`
and with `curl`.

Predictions equal `torchkeep predict` on the same rows; unseen categories and nulls are served; every
bad request gets its own precise 4xx (never a 5xx) and the server keeps serving; in a concurrent burst
a bad request gets its 422 while every other request gets exactly the answer it gets alone.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import requests

TOKEN = "s3cret-token-for-tests"
MAX_BODY_BYTES = 64 * 1024
MAX_ROWS = 100


@pytest.fixture(scope="module")
def servers(trained_run: Path, start_server):
    """(plain server with small limits, strict server behind a bearer token), started side by side."""
    plain = start_server(trained_run, "--max-body-bytes", str(MAX_BODY_BYTES), "--max-rows", str(MAX_ROWS), wait=False)
    guarded = start_server(trained_run / "bundle", "--strict", "--token", TOKEN, wait=False)
    return plain.wait_until_healthy(), guarded.wait_until_healthy()


@pytest.fixture(scope="module")
def server(servers):
    return servers[0]


@pytest.fixture(scope="module")
def guarded(servers):
    return servers[1]


def probability(record: dict[str, Any]) -> float:
    return record["probabilities"]["True"]


def encode_post(body: Any) -> bytes:
    """A complete HTTP/1.1 POST /predict, as bytes on the wire."""
    payload = json.dumps(body).encode()
    return (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(payload), payload))


def curl(*args: str) -> tuple[int, str]:
    """(HTTP status, body) from the curl command line."""
    result = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    body, _, status = result.stdout.rpartition("\n")
    return int(status), body


# -- predictions --------------------------------------------------------------------------------


def test_predictions_equal_torchkeep_predict_on_the_same_rows(server, trained_run, feature_rows, torchkeep, tmp_path):
    unseen = {"carrier": "ZZ", "gate": "Q", "weekend": None, "hour": 99, "distance": 40_000, "dep_delay": None,
              "temperature": None}  # unseen string and integer levels, nulls everywhere else
    rows = pl.DataFrame(feature_rows(40, 7) + [unseen])
    rows.write_csv(tmp_path / "rows.csv")
    predicted = torchkeep("predict", trained_run, "--data", "rows.csv", "--out", "predicted.csv", cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    expected = pl.read_csv(tmp_path / "predicted.csv")
    sent = pl.read_csv(tmp_path / "rows.csv").to_dicts()  # the very values the CLI read

    response = server.post({"rows": sent})

    assert response.status_code == 200, response.text
    served = response.json()["predictions"]
    assert len(served) == len(sent)
    assert [r["prediction"] for r in served] == expected["prediction"].to_list()
    for record, p_true, p_false in zip(served, expected["probability_True"], expected["probability_False"]):
        assert probability(record) == pytest.approx(p_true, abs=1e-6)
        assert record["probabilities"]["False"] == pytest.approx(p_false, abs=1e-6)


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs the curl command")
def test_curl_gets_the_same_predictions_as_requests(server, feature_rows, tmp_path):
    body = {"rows": feature_rows(5, 11)}
    (tmp_path / "body.json").write_text(json.dumps(body))

    status, text = curl(f"{server.url}/predict", "-H", "Content-Type: application/json",
                        "--data-binary", f"@{tmp_path / 'body.json'}")

    assert status == 200, text
    assert json.loads(text) == server.post(body).json()
    assert curl(f"{server.url}/health")[0] == 200
    status, text = curl(f"{server.url}/predict", "-H", "Content-Type: application/json", "-d", '{"rows": [')
    assert (status, json.loads(text)["error"]["field"]) == (400, "body")


def test_a_single_row_object_is_one_prediction(server, feature_rows):
    row = feature_rows(1, 3)[0]

    single = server.post(row)
    listed = server.post({"rows": [row]})

    assert single.status_code == 200, single.text
    assert single.json() == listed.json()
    assert len(single.json()["predictions"]) == 1
    assert set(single.json()["predictions"][0]["probabilities"]) == {"False", "True"}


def test_unseen_categories_and_nulls_are_served(server, feature_rows):
    row = feature_rows(1, 5)[0]
    variants = [
        {**row, "carrier": "never-seen"},
        {**row, "hour": 3},  # an integer level not in training
        {**row, "gate": None, "weekend": None, "hour": None, "carrier": None},
        {**row, "distance": None, "dep_delay": None, "temperature": None},
        {name: None for name in row},
    ]

    response = server.post({"rows": variants})

    assert response.status_code == 200, response.text
    for record in response.json()["predictions"]:
        assert 0 <= probability(record) <= 1 and record["prediction"] in (True, False)


def test_extra_unknown_fields_are_ignored_by_default(server, feature_rows):
    row = feature_rows(1, 8)[0]

    with_extra = server.post({**row, "comment": "ignored", "late": True, "nested": {"a": [1]}})

    assert with_extra.status_code == 200, with_extra.text
    assert with_extra.json() == server.post(row).json()


# -- bad input: a precise 4xx each, never a 5xx ----------------------------------------------------

ROW = {"carrier": "UA", "gate": "A", "weekend": False, "hour": 9, "distance": 1000, "dep_delay": 12.5,
       "temperature": 20.0}


def row_text(**values: str) -> str:
    """One row as raw JSON text, values given as JSON source (so `NaN` and `1e999` go through verbatim)."""
    fields = {name: json.dumps(value) for name, value in ROW.items()} | values
    return "{" + ", ".join(f'"{name}": {text}' for name, text in fields.items()) + "}"


JSON = {"Content-Type": "application/json"}
BAD_REQUESTS = {
    # name: (body bytes, headers, status, field)
    "malformed JSON": (b'{"rows": [{"carrier": "UA",', JSON, 400, "body"),
    "empty body": (b"", JSON, 400, "body"),
    "not UTF-8": (b'{"carrier": "\xff\xfe"}', JSON, 400, "body"),
    "nested too deep": (b"[" * 100_000 + b"]" * 100_000, JSON, 413, "body"),  # over the 64 KiB limit
    "deep but small": (b"[" * 30_000 + b"]" * 30_000, JSON, 400, "body"),
    "wrong content type": (row_text().encode(), {"Content-Type": "text/plain"}, 415, "content-type"),
    "no content type": (row_text().encode(), {}, 415, "content-type"),
    "form content type": (row_text().encode(), {"Content-Type": "application/x-www-form-urlencoded"}, 415, "content-type"),
    "body is a list": (b"[1, 2]", JSON, 422, "body"),
    "body is a string": (b'"rows"', JSON, 422, "body"),
    "rows not a list": (b'{"rows": {"carrier": "UA"}}', JSON, 422, "rows"),
    "rows null": (b'{"rows": null}', JSON, 422, "rows"),
    "empty rows": (b'{"rows": []}', JSON, 422, "rows"),
    "a row that is not an object": (f'{{"rows": [{row_text()}, 7]}}'.encode(), JSON, 422, "rows[1]"),
    "string where a number belongs": (row_text(dep_delay='"12.5"').encode(), JSON, 422, "rows[0].dep_delay"),
    "word where a number belongs": (row_text(distance='"far"').encode(), JSON, 422, "rows[0].distance"),
    "boolean where a number belongs": (row_text(temperature="true").encode(), JSON, 422, "rows[0].temperature"),
    "boolean where an integer level belongs": (row_text(hour="false").encode(), JSON, 422, "rows[0].hour"),
    "fraction where an integer level belongs": (row_text(hour="9.5").encode(), JSON, 422, "rows[0].hour"),
    "number where a string belongs": (row_text(carrier="42").encode(), JSON, 422, "rows[0].carrier"),
    "number where a boolean belongs": (row_text(weekend="1").encode(), JSON, 422, "rows[0].weekend"),
    "object where a number belongs": (row_text(dep_delay='{"v": 1}').encode(), JSON, 422, "rows[0].dep_delay"),
    "JSON NaN literal": (row_text(dep_delay="NaN").encode(), JSON, 400, "body"),
    "JSON Infinity literal": (row_text(dep_delay="-Infinity").encode(), JSON, 400, "body"),
    "number that overflows to inf": (row_text(dep_delay="1e999").encode(), JSON, 422, "rows[0].dep_delay"),
    "integer beyond float range": (row_text(distance="9" * 400).encode(), JSON, 422, "rows[0].distance"),
    "integer with too many digits": (row_text(distance="9" * 5000).encode(), JSON, 400, "body"),
    "finite but too extreme for float32": (row_text(distance="1e308").encode(), JSON, 422, "rows[0]"),
    "lone surrogate in a string": (row_text(carrier='"\\ud800"').encode(), JSON, 422, "rows[0].carrier"),
    "surrogate encoded as UTF-8 bytes": (row_text(carrier='"X"').encode().replace(b"X", b"\xed\xa0\x80"), JSON, 400, "body"),
    "missing column": (b'{"rows": [' + row_text().encode() + b', {"carrier": "UA", "gate": "A", "weekend": true,'
                       b' "hour": 9, "distance": 1, "temperature": 3}]}', JSON, 422, "rows[1].dep_delay"),
    "too many rows": (json.dumps({"rows": [ROW] * (MAX_ROWS + 1)}).encode(), JSON, 413, "rows"),
    "huge body": (json.dumps({"rows": [ROW] * 2000}).encode(), JSON, 413, "body"),
}


@pytest.mark.parametrize("name", BAD_REQUESTS)
def test_bad_input_gets_its_precise_4xx(server, name):
    body, headers, status, field = BAD_REQUESTS[name]

    response = requests.post(f"{server.url}/predict", data=body, headers=headers, timeout=30)

    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["field"] == field
    assert error["message"]


def test_a_huge_chunked_body_is_cut_off_at_the_limit(server):
    def chunks():  # no Content-Length: the server must count the bytes itself
        for _ in range(64):
            yield b" " * 4096

    response = requests.post(f"{server.url}/predict", data=chunks(), headers=JSON, timeout=30)

    assert response.status_code == 413, response.text
    assert response.json()["error"]["field"] == "body"


def test_every_message_names_what_was_expected(server):
    text = server.post({"rows": [{**ROW, "dep_delay": "soon"}]}).json()["error"]["message"]
    assert "number" in text and "soon" in text
    assert "NaN" in requests.post(f"{server.url}/predict", data=row_text(dep_delay="NaN"), headers=JSON).json()["error"]["message"]
    assert "send null" in server.post({k: v for k, v in ROW.items() if k != "gate"}).json()["error"]["message"]


def test_get_on_predict_is_405_and_the_server_still_serves_after_bad_input(server):
    assert requests.get(f"{server.url}/predict", timeout=10).status_code == 405
    assert server.post(ROW).status_code == 200
    assert requests.get(f"{server.url}/health", timeout=10).json()["status"] == "ok"


# -- strict mode and the bearer token ----------------------------------------------------------------


def test_strict_mode_rejects_unknown_fields_naming_them(guarded):
    auth = {"Authorization": f"Bearer {TOKEN}"}

    extra = guarded.post({"rows": [ROW, {**ROW, "comment": "x"}]}, headers=auth)
    odd_name = guarded.post({**ROW, "\ud800": 1}, headers=auth)  # a field name with no UTF-8 form
    labelled = guarded.post({**ROW, "late": True}, headers=auth)  # the target column is known, not extra

    assert extra.status_code == 422 and extra.json()["error"]["field"] == "rows[1].comment"
    assert odd_name.status_code == 422 and odd_name.json()["error"]["field"] == "rows[0].\ud800"
    assert labelled.status_code == 200, labelled.text


@pytest.mark.parametrize("header", [None, "Bearer wrong-token-123", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer "])
def test_a_missing_or_wrong_token_is_401(guarded, header):
    headers = {} if header is None else {"Authorization": header}

    predict = guarded.post(ROW, headers=headers)
    metadata = requests.get(f"{guarded.url}/metadata", headers=headers, timeout=10)

    assert predict.status_code == 401 and predict.json()["error"]["field"] == "authorization"
    assert metadata.status_code == 401


def test_the_right_token_is_200_and_health_needs_none(guarded, server):
    auth = {"Authorization": f"Bearer {TOKEN}"}

    assert guarded.post(ROW, headers=auth).json() == server.post(ROW).json()
    assert requests.get(f"{guarded.url}/metadata", headers=auth, timeout=10).status_code == 200
    assert requests.get(f"{guarded.url}/health", timeout=10).status_code == 200


# -- health, metadata, OpenAPI --------------------------------------------------------------------------


def test_health_metadata_and_openapi(server, trained_run):
    schema = json.loads((trained_run / "schema.json").read_text())
    names = [c["name"] for c in schema["categorical"]] + [c["name"] for c in schema["continuous"]]

    health = requests.get(f"{server.url}/health", timeout=10)
    metadata = requests.get(f"{server.url}/metadata", timeout=10).json()
    openapi = requests.get(f"{server.url}/openapi.json", timeout=10)
    docs = requests.get(f"{server.url}/docs", timeout=10)

    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert [c["name"] for c in metadata["columns"]] == names
    assert metadata["task"] == "binary" and metadata["target"] == "late"
    assert {c["name"]: c["type"] for c in metadata["columns"]}["dep_delay"] == "continuous"
    assert metadata["limits"] == {"max_rows_per_request": MAX_ROWS, "max_body_bytes": MAX_BODY_BYTES}
    assert "valid_roc_auc" in metadata["metrics"]
    assert openapi.status_code == 200
    request_schema = openapi.json()["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert request_schema["properties"]["rows"]["items"]["required"] == names
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


# -- a concurrent burst: isolation of results and errors -------------------------------------------------

BURST = 40


@pytest.mark.parametrize("bad_kind", ["invalid value", "value too extreme for the model"])
def test_one_bad_request_in_a_concurrent_burst_gets_its_422_and_the_others_their_own_answers(server, feature_rows, bad_kind):
    # Distinct rows per request (1-3 each) so that an answer delivered to the wrong caller shows.
    bodies = [{"rows": feature_rows(1 + i % 3, 1000 + i)} for i in range(BURST)]
    bad = BURST // 2
    if bad_kind == "invalid value":  # rejected by validation, before any batch
        bodies[bad]["rows"][-1]["dep_delay"] = "twelve"
        expected_field = f"rows[{len(bodies[bad]['rows']) - 1}].dep_delay"
    else:  # valid JSON that makes the model's output non-finite: computed inside a batch with the others
        bodies[bad]["rows"][-1]["distance"] = 1e308
        expected_field = f"rows[{len(bodies[bad]['rows']) - 1}]"
    alone = [server.post(body).json() for body in bodies]
    seen = [round(probability(r), 9) for i, answer in enumerate(alone) if i != bad for r in answer["predictions"]]
    assert len(set(seen)) == len(seen), "rows must be distinct for this test to mean anything"
    requests_bytes = [encode_post(body) for body in bodies]
    before = server.counters()
    gate = threading.Barrier(BURST)

    def send(i: int) -> tuple[int, dict[str, Any]]:
        # Connected and encoded beforehand, so that after the barrier each caller only writes: the
        # 40 requests reach the server within a millisecond or two, while it is busy with the first.
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as connection:
            gate.wait(timeout=30)
            connection.sendall(requests_bytes[i])
            response = http.client.HTTPResponse(connection)
            response.begin()
            return response.status, json.loads(response.read())

    with ThreadPoolExecutor(BURST) as pool:
        responses = list(pool.map(send, range(BURST)))
    after = server.counters()

    statuses = [status for status, _ in responses]
    assert statuses[bad] == 422 and responses[bad][1]["error"]["field"] == expected_field
    assert statuses[:bad] + statuses[bad + 1 :] == [200] * (BURST - 1)
    for i, (_, answer) in enumerate(responses):
        if i == bad:
            continue
        got = answer["predictions"]
        assert [r["prediction"] for r in got] == [r["prediction"] for r in alone[i]["predictions"]]
        assert [probability(r) for r in got] == pytest.approx([probability(r) for r in alone[i]["predictions"]], abs=1e-6)
    good_rows = sum(len(b["rows"]) for i, b in enumerate(bodies) if i != bad)
    computed_rows = after["rows"] - before["rows"]
    assert computed_rows == good_rows + (len(bodies[bad]["rows"]) if bad_kind != "invalid value" else 0)
    assert after["batches"] - before["batches"] < BURST - 1, "concurrent requests should share batches"
    assert requests.get(f"{server.url}/health", timeout=10).json()["status"] == "ok"


def test_a_request_whose_client_has_gone_is_not_computed(server, feature_rows):
    """A caller that sends its rows and hangs up while they wait behind other work costs no model time."""
    big = encode_post({"rows": feature_rows(MAX_ROWS, 77)})
    doomed = encode_post({"rows": feature_rows(7, 78)})
    before = server.counters()
    callers = [socket.create_connection(("127.0.0.1", server.port), timeout=60) for _ in range(8)]
    with socket.create_connection(("127.0.0.1", server.port)) as leaver:
        for caller in callers:  # 800 rows of work, more than one batch (512 rows)...
            caller.sendall(big)
        leaver.sendall(doomed)  # ...then 7 rows from a caller that hangs up at once
    statuses = []
    for caller in callers:
        response = http.client.HTTPResponse(caller)
        response.begin()
        statuses.append(response.status)
        response.read()
        caller.close()
    after = server.counters()

    assert statuses == [200] * len(callers)
    assert after["rows"] - before["rows"] == len(callers) * MAX_ROWS  # not + 7


def test_last_the_servers_stop_cleanly_having_logged_no_error_and_never_the_token(server, guarded):
    """Runs last in this module: nothing above made a server log a traceback (as a 5xx would)."""
    for each in (server, guarded):
        assert each.process.poll() is None, "the server died"
        code, stdout, stderr = each.stop()
        assert code == 0, stderr
        assert "Traceback" not in stderr and "error" not in stderr.lower(), stderr
        assert TOKEN not in stdout + stderr
