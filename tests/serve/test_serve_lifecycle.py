"""Starting and stopping `torchkeep serve`: SIGTERM finishes the requests in flight and exits 0; a
source that is not a bundle is one error line and exit status 2, before anything listens."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import time
from pathlib import Path

import pytest

from in_flight import start_request

IN_FLIGHT = 4


def test_sigterm_finishes_requests_in_flight_then_exits_0(trained_run, start_server, feature_rows):
    server = start_server(trained_run / "bundle")
    bodies = [{"rows": feature_rows(3, 500 + i)} for i in range(IN_FLIGHT)]
    alone = [server.post(body).json() for body in bodies]
    encoded = [json.dumps(body).encode() for body in bodies]
    connections = [start_request(server.port, body) for body in encoded]
    time.sleep(0.3)  # the server has read the headers of each

    server.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # shutting down: the listening socket closes first
        try:
            socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
            time.sleep(0.05)
        except OSError:
            break
    else:
        pytest.fail("the server kept accepting new connections after SIGTERM")
    assert server.process.poll() is None, "the server exited with requests still in flight"
    responses = []
    for connection, body in zip(connections, encoded):
        connection.send(body[len(body) // 2 :])
        response = connection.getresponse()
        responses.append((response.status, json.loads(response.read())))
        connection.close()
    code, stdout, stderr = server.stop(timeout_s=30)

    assert [status for status, _ in responses] == [200] * IN_FLIGHT
    for (_, answer), expected in zip(responses, alone):
        assert [r["prediction"] for r in answer["predictions"]] == [r["prediction"] for r in expected["predictions"]]
        assert [r["probabilities"]["True"] for r in answer["predictions"]] == pytest.approx(
            [r["probabilities"]["True"] for r in expected["predictions"]], abs=1e-6)
    assert code == 0, stderr
    assert "stopped by SIGTERM" in stdout
    assert "Traceback" not in stderr, stderr


def bad_source(kind: str, trained_run: Path, tmp_path: Path) -> Path:
    if kind == "path that does not exist":
        return tmp_path / "no-such-bundle"
    if kind == "directory that is not a bundle":
        (tmp_path / "empty").mkdir()
        return tmp_path / "empty"
    tampered = tmp_path / "tampered"  # "tampered weights file": one byte flipped after export
    shutil.copytree(trained_run / "bundle", tampered)
    weights = tampered / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    return tampered


@pytest.mark.parametrize("kind", ["path that does not exist", "directory that is not a bundle", "tampered weights file"])
def test_a_bad_source_is_one_error_line_and_exit_2(torchkeep, trained_run, tmp_path, kind):
    source = bad_source(kind, trained_run, tmp_path)

    result = torchkeep("serve", source, "--port", "9", cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(source) in lines[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
