"""A bounded schemathesis fuzz run against a real server's /openapi.json: valid and invalid bodies,
headers and methods for every operation; the check is that nothing answers 5xx."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("schemathesis")

TOKEN = "fuzz-token-0123456789"
MAX_EXAMPLES = 50


@pytest.mark.parametrize("flags", [(), ("--strict", "--token", TOKEN)], ids=["default", "strict-with-token"])
def test_schemathesis_finds_no_server_error(trained_run, start_server, flags):
    server = start_server(trained_run / "bundle", *flags)
    before = server.counters()
    auth = ["--header", f"Authorization: Bearer {TOKEN}"] if flags else []

    result = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "run", f"{server.url}/openapi.json",
         "--checks", "not_a_server_error", "--max-examples", str(MAX_EXAMPLES), "--workers", "1",
         "--request-timeout", "30", *auth],
        capture_output=True, text=True, timeout=120,
    )
    after = server.counters()
    code, _, stderr = server.stop()

    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "No issues found" in result.stdout, result.stdout[-4000:]
    assert after["rows"] > before["rows"], "the fuzzer never got a valid body through to the model"
    assert code == 0 and "Traceback" not in stderr, stderr
