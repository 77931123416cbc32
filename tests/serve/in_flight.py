"""A request left in flight: for the tests of what a server does with requests it is still reading."""

from __future__ import annotations

import http.client


def start_request(port: int, body: bytes) -> http.client.HTTPConnection:
    """A POST /predict whose headers and first half of the body have been sent: in flight."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.putrequest("POST", "/predict")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(len(body)))
    connection.endheaders()
    connection.send(body[: len(body) // 2])
    return connection
