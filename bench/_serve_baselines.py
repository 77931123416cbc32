"""The baseline servers of bench/serve.py, written the way a practitioner writes them. Not a benchmark.

- `flask_app()`: the seed's Flask app: `@app.route('/predict', methods=['POST'])`, `request.get_json()`,
  `jsonify`, one request at a time through the model and `TableSchema.transform` (Predictor.predict_frame).
  Run by Flask's threaded dev server (`python bench/_serve_baselines.py flask PORT`) or by gunicorn
  (`gunicorn --chdir bench '_serve_baselines:flask_app()'`).
- `fastapi_app()`: the same endpoint on FastAPI + uvicorn (uvloop, httptools), no batching: the model is
  called inline in the request's coroutine (no thread hop, the lowest latency a plain endpoint gets).
- `echo_app()`: a FastAPI endpoint that reads the body and answers a constant, no model: the HTTP floor
  of the machine (uvicorn, uvloop, httptools, FastAPI routing, wrk).

The bundle comes from env BENCH_SERVE_SOURCE. Every server runs torch with 1 thread, as torchkeep serve does
(on 2 shared cores more intra-op threads only add contention for one-row requests).
"""

import os
import sys
from typing import Any


def _predictor() -> Any:
    import torch

    import torchkeep

    torch.set_num_threads(1)
    return torchkeep.load(os.environ["BENCH_SERVE_SOURCE"])


def _rows(data: Any) -> list[dict[str, Any]]:
    return data["rows"] if "rows" in data else [data]


def flask_app() -> Any:
    import polars as pl
    from flask import Flask, jsonify, request

    predictor = _predictor()
    app = Flask(__name__)

    @app.route("/predict", methods=["POST"])
    def predict() -> Any:
        data = request.get_json()
        out = predictor.predict_frame(pl.DataFrame(_rows(data)))
        return jsonify({"predictions": out.to_dicts()})

    @app.route("/health")
    def health() -> Any:
        return jsonify({"status": "ok"})

    return app


def fastapi_app() -> Any:
    import polars as pl
    from fastapi import FastAPI, Request

    predictor = _predictor()
    app = FastAPI()

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        data = await request.json()
        out = predictor.predict_frame(pl.DataFrame(_rows(data)))
        return {"predictions": out.to_dicts()}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def echo_app() -> Any:
    from fastapi import FastAPI, Request, Response

    app = FastAPI()
    answer = b'{"predictions":[{"prediction":false,"probabilities":{"False":0.9,"True":0.1}}]}'

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        await request.body()
        return Response(answer, media_type="application/json")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


if __name__ == "__main__":  # python bench/_serve_baselines.py flask PORT: the seed's `app.run(...)`
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log line per request
    flask_app().run(host="127.0.0.1", port=int(sys.argv[2]), threaded=True)
