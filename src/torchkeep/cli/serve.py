"""`torchkeep serve RUN_OR_BUNDLE`: an HTTP JSON prediction server (extra `torchkeep[serve]`)."""

from __future__ import annotations

import argparse
import os
from typing import Any

EPILOG = """examples:
  torchkeep serve runs/flights-20261125-1200
  curl -s localhost:8000/predict -H 'content-type: application/json' \\
       -d '{"rows": [{"month": 1, "day": 2, "hour": 9, "carrier": "UA", ...}]}'
  torchkeep serve runs/fashion     # a model of torchkeep.fit: {"inputs": [row, ...]} -> {"outputs": [...]}

The bundle is loaded once at start; nothing is ever loaded from a request. Bad requests get a 4xx
naming the field; unseen categories and nulls are served.

operations:
  GET /healthz (alive), GET /readyz (model loaded and warmed up), GET /metrics (Prometheus: requests
  by status, latency, batch rows, queue depth). Back-pressure: over --max-concurrency 429; over
  --max-queue waiting requests, or no answer within --request-timeout-s, 503 with Retry-After.
  SIGTERM: stop listening, finish the requests in flight (up to --graceful-shutdown-s), exit 0.
  Swapping the model without a failed request, with the new one warmed up first:
    kill -HUP PID                                  # the same source again (a run: its newest checkpoint)
    torchkeep serve runs/flights --admin-token "$ADMIN"      # or env TORCHKEEP_ADMIN_TOKEN, then:
    curl -s localhost:8000/admin/reload -H "Authorization: Bearer $ADMIN" -d '{"source": "runs/new/bundle"}'
  Without an admin token POST /admin/reload is 404; a wrong token is 401; a source that does not
  load or answer is 422 and the old model keeps serving.
"""


def add_parser(commands: Any) -> None:
    p = commands.add_parser("serve", help="serve a run's model over HTTP (JSON)",
                            description="Serve a run or bundle (local path or s3://) with dynamic batching.",
                            epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="RUN_OR_BUNDLE")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token", help="require `Authorization: Bearer TOKEN` (default: env TORCHKEEP_TOKEN)")
    p.add_argument("--max-batch-rows", type=int, default=512, help="rows per model call (default 512)")
    p.add_argument("--max-wait-ms", type=float, default=0.0,
                   help="under load, wait this long for more requests to batch (default 0: never wait)")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="larger bodies get 413 (default 1 MiB)")
    p.add_argument("--max-rows", type=int, default=1000, dest="max_rows_per_request", help="rows per request")
    p.add_argument("--max-concurrency", type=int, default=256, help="requests in flight; more get 429")
    p.add_argument("--max-queue", type=int, default=128,
                   help="requests waiting for the model; more get 503 with Retry-After (default 128)")
    p.add_argument("--request-timeout-s", type=float, default=30.0,
                   help="no answer by then: 503 with Retry-After, rows not computed (default 30)")
    p.add_argument("--graceful-shutdown-s", type=float, default=30.0,
                   help="on SIGTERM, how long requests in flight may take to finish (default 30)")
    p.add_argument("--admin-token", help="enable POST /admin/reload with `Authorization: Bearer TOKEN`"
                   " (default: env TORCHKEEP_ADMIN_TOKEN; unset: 404)")
    p.add_argument("--strict", action="store_true", help="422 for unknown fields in rows (default: ignored)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for the model (default 1)")
    p.add_argument("--device", default="cpu", help="where the model runs: cpu (default), cuda, cuda:N, auto")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from torchkeep.serve.app import ServeConfig, serve

    config = ServeConfig(
        host=args.host, port=args.port, token=args.token or os.environ.get("TORCHKEEP_TOKEN") or None,
        max_batch_rows=args.max_batch_rows, max_wait_ms=args.max_wait_ms, max_body_bytes=args.max_body_bytes,
        max_rows_per_request=args.max_rows_per_request, max_concurrency=args.max_concurrency,
        strict=args.strict, threads=args.threads, device=args.device, max_queue=args.max_queue,
        request_timeout_s=args.request_timeout_s, graceful_shutdown_s=args.graceful_shutdown_s,
        admin_token=args.admin_token or os.environ.get("TORCHKEEP_ADMIN_TOKEN") or None,
    )
    if config.host not in ("127.0.0.1", "localhost", "::1") and config.token is None:
        logging.getLogger("torchkeep").warning(
            "serving on %s without a token: anyone who can reach this address can call the model", config.host)
    serve(args.source, config)
    return 0
