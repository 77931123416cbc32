"""What `GET /metrics` exposes, in Prometheus' text format (prometheus-client, extra `torchkeep[serve]`).

    torchkeep_requests_total{status="200"}        POST /predict answers by HTTP status
    torchkeep_request_duration_seconds            POST /predict latency, body read to answer ready (histogram)
    torchkeep_batch_rows                          rows per model call (histogram)
    torchkeep_queue_depth                         requests waiting for the model now
    torchkeep_requests_in_flight                  POST /predict requests in the server now
    torchkeep_reloads_total{result="ok"}          model reloads (POST /admin/reload, SIGHUP) by result
    torchkeep_model_generation                    1 for the model loaded at start, +1 per reload

Each app has its own registry (not prometheus-client's global one), so one process can hold several
apps (tests do) and a scrape shows only this server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torchkeep.errors import MissingExtraError

LATENCY_BUCKETS_S = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class Metrics:
    def __init__(self, *, queue_depth: Callable[[], float], in_flight: Callable[[], float],
                 generation: Callable[[], float]) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        except ImportError:
            raise MissingExtraError("prometheus_client", "serve") from None
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("torchkeep_requests", "POST /predict answers by HTTP status", ["status"],
                                registry=self.registry)
        self.latency = Histogram("torchkeep_request_duration_seconds", "POST /predict latency (body read to answer)",
                                 buckets=LATENCY_BUCKETS_S, registry=self.registry)
        self.batch_rows = Histogram("torchkeep_batch_rows", "rows per model call", buckets=BATCH_BUCKETS,
                                    registry=self.registry)
        self.reloads = Counter("torchkeep_reloads", "model reloads by result", ["result"], registry=self.registry)
        for name, text, read in (("torchkeep_queue_depth", "requests waiting for the model", queue_depth),
                                 ("torchkeep_requests_in_flight", "POST /predict requests in the server", in_flight),
                                 ("torchkeep_model_generation", "1 at start, +1 per reload", generation)):
            Gauge(name, text, registry=self.registry).set_function(read)
        self._by_status: dict[int, Any] = {}

    def answered(self, status: int, seconds: float) -> None:
        counter = self._by_status.get(status)
        if counter is None:  # the labelled child once per status: .labels() costs more than .inc()
            counter = self._by_status[status] = self.requests.labels(str(status))
        counter.inc()
        self.latency.observe(seconds)

    def expose(self) -> tuple[bytes, str]:
        """The scrape body and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
