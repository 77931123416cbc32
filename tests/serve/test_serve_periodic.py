"""A run with `--numeric-encoding periodic` served over HTTP gives `torchkeep.load(run).predict`'s numbers,
for a batch and for the one-row road (both go through the model's periodic embeddings)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

TARGET = "late"


@pytest.fixture(scope="module")
def periodic_run(tmp_path_factory: pytest.TempPathFactory, make_table) -> Path:
    import torchkeep

    run_dir = tmp_path_factory.mktemp("serve-periodic") / "run"
    torchkeep.train(make_table(300, seed=2), target=TARGET, run_dir=str(run_dir), epochs=2, quiet=True,
                    numeric_encoding="periodic")
    return run_dir


def test_served_periodic_model_matches_predict(periodic_run, start_server, feature_rows) -> None:
    import torchkeep

    rows = feature_rows(25, 11)
    expected = torchkeep.load(str(periodic_run)).predict(pl.DataFrame(rows))
    server = start_server(periodic_run)
    for sent, want in ((rows, expected), (rows[:1], expected.head(1))):
        response = server.post({"rows": sent})
        assert response.status_code == 200, response.text
        served = response.json()["predictions"]
        assert [r["prediction"] for r in served] == want["prediction"].to_list()
        for record, p_true in zip(served, want["probability_True"]):
            assert record["probabilities"]["True"] == pytest.approx(p_true, abs=1e-6)
