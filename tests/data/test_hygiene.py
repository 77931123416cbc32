"""Column hygiene as a user meets it: what cannot help a model is dropped with one warning line each,
recorded in the schema (and so in `torchkeep inspect` and the run summary), never silently wrong."""

from __future__ import annotations

import json
import logging

import numpy as np
import polars as pl
import pytest

import torch

from torchkeep.data.columns import encode_continuous_block
from torchkeep.data.io import as_frame, read_table
from torchkeep.data.table import TableSchema
from torchkeep.data.table_spec import min_level_count_for
from torchkeep.errors import DataError


def test_constant_and_all_null_columns_are_dropped_and_recorded(make_table):
    frame = make_table().with_columns(country=pl.lit("US"), runway=pl.lit(None, dtype=pl.String),
                                      altitude=pl.lit(3.0))
    schema = TableSchema.fit(frame, target="late")
    assert {"country", "runway", "altitude"}.isdisjoint(schema.feature_names)
    reasons = {n["column"]: n["reason"] for n in schema.notes if n["action"] == "dropped"}
    assert reasons["runway"] == "null in every row"
    assert "'US'" in reasons["country"] and "3.0" in reasons["altitude"]
    assert TableSchema.from_json(schema.to_json()).notes == schema.notes
    assert schema.describe()["dropped"] == ["country", "runway", "altitude"]


def test_a_single_value_with_nulls_is_kept_for_its_missing_indicator(make_table):
    frame = make_table(rows=40).with_columns(flag=pl.Series([1.0 if i % 2 else None for i in range(40)]))
    schema = TableSchema.fit(frame, target="late")
    flag = next(c for c in schema.continuous if c.name == "flag")
    assert flag.missing_indicator and flag.std == 1.0
    tensors = schema.transform(frame)
    assert np.isfinite(tensors["continuous"].numpy()).all()


def test_an_identifier_column_is_dropped_unless_named_categorical(make_table):
    frame = make_table().with_columns(booking=pl.Series([f"B{i:05d}" for i in range(300)]))
    schema = TableSchema.fit(frame, target="late")
    assert "booking" not in schema.feature_names
    note = next(n for n in schema.notes if n["column"] == "booking")
    assert "identifier" in note["reason"] and "--categorical booking" in note["reason"]
    kept = TableSchema.fit(frame, target="late", categorical=["booking"])
    assert "booking" in kept.feature_names


def test_numbers_stored_as_text_are_read_as_numbers(make_table):
    frame = make_table()
    as_text = frame.with_columns(pl.col("dep_delay").round(3).cast(pl.String).str.pad_start(12))
    schema = TableSchema.fit(as_text, target="late")
    column = next(c for c in schema.continuous if c.name == "dep_delay")
    assert column.median == pytest.approx(frame.get_column("dep_delay").round(3).median())
    assert any(n["column"] == "dep_delay" and n["action"] == "read as numbers" for n in schema.notes)
    # the same numbers as numbers or as text give the same tensors at predict time
    numeric = as_text.with_columns(pl.col("dep_delay").str.strip_chars().cast(pl.Float64))
    assert schema.transform(as_text)["continuous"].equal(schema.transform(numeric)["continuous"])
    # a text column with one word among numbers stays categorical
    mixed = frame.with_columns(pl.Series("code", ["x"] + [str(i % 7) for i in range(299)]))
    assert "code" in [c.name for c in TableSchema.fit(mixed, target="late").categorical]


def test_repeated_column_names_are_an_error_naming_them(tmp_path):
    (tmp_path / "dup.csv").write_text("a,b,a\n1,2,3\n4,5,6\n")
    with pytest.raises(DataError, match=r"dup.csv: column name\(s\) 'a' \(2 times\)"):
        read_table(str(tmp_path / "dup.csv"))
    pandas = pytest.importorskip("pandas")
    with pytest.raises(DataError, match=r"'a' \(2 times\)"):
        as_frame(pandas.DataFrame([[1, 2, 3]], columns=["a", "b", "a"]))


def test_nothing_left_names_what_was_dropped():
    frame = pl.DataFrame({"k": ["x"] * 30, "y": [0, 1] * 15})
    with pytest.raises(DataError, match=r"no feature columns left.*1 dropped: 'k'"):
        TableSchema.fit(frame, target="y")


@pytest.fixture(scope="module")
def messy_run(torchkeep, make_table, tmp_path_factory):
    """`torchkeep train` on a table with a constant column, an all-null one and null targets."""
    workdir = tmp_path_factory.mktemp("messy")
    table = make_table().with_columns(
        country=pl.lit("US"), runway=pl.lit(None, dtype=pl.String),
        late=pl.when(pl.int_range(pl.len()) % 7 == 0).then(None).otherwise(pl.col("late")))
    table.write_csv(workdir / "messy.csv")
    result = torchkeep("train", "--data", "messy.csv", "--target", "late", "--epochs", 2, "--run-dir", "run",
                       cwd=workdir)
    return workdir, result, table.get_column("late").null_count()


def test_cli_warns_once_per_column_and_trains(messy_run):
    workdir, result, nulls = messy_run
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 3, warnings
    assert any(f"{nulls} row(s) with a null target" in line for line in warnings)
    assert any("'country' dropped" in line for line in warnings)
    assert any("'runway' dropped: null in every row" in line for line in warnings)
    assert all("messy.csv" in line for line in warnings)


def test_inspect_and_the_run_record_what_was_dropped(torchkeep, messy_run):
    workdir, result, nulls = messy_run
    schema = json.loads((workdir / "run" / "schema.json").read_text())
    assert [n["column"] for n in schema["notes"]] == ["late", "country", "runway"]
    shown = torchkeep("inspect", "run", cwd=workdir)
    assert shown.returncode == 0, shown.stderr
    assert "country" in shown.stdout and "dropped" in shown.stdout
    as_json = json.loads(torchkeep("inspect", "run", "--json", cwd=workdir).stdout)
    assert "notes" in json.dumps(as_json)


def test_a_target_null_in_every_row_is_an_error(torchkeep, make_table, tmp_path):
    make_table().with_columns(late=pl.lit(None, dtype=pl.Boolean)).write_csv(tmp_path / "empty.csv")
    result = torchkeep("train", "--data", "empty.csv", "--target", "late", "--run-dir", "run", cwd=tmp_path)
    assert result.returncode == 2 and "null in every row" in result.stderr
    assert not (tmp_path / "run").exists()


def test_warnings_go_through_logging_in_python(make_table, tmp_path, caplog):
    import torchkeep

    frame = make_table().with_columns(country=pl.lit("US"))
    with caplog.at_level(logging.WARNING, logger="torchkeep"):
        torchkeep.train(frame, target="late", epochs=1, run_dir=str(tmp_path / "run"), quiet=True)
    assert any("'country' dropped" in r.getMessage() for r in caplog.records)


def test_extreme_values_are_clipped_by_robust_scaling(make_table):
    schema = TableSchema.fit(make_table(), target="late", scaling="robust", numeric_encoding="ple")
    extreme = make_table(rows=4, seed=2).with_columns(pl.Series("distance", [1e308, -1e308, 0, 1e12]))
    encoded = schema.transform(extreme, with_target=False)["continuous"]
    assert np.isfinite(encoded.numpy()).all()
    first = encoded[:, 0].numpy()  # distance's scaled value: within (-3, 3)
    assert first[0] == pytest.approx(3.0, abs=1e-5) and first[1] == pytest.approx(-3.0, abs=1e-5)


def test_rare_levels_share_the_unseen_index_and_are_recorded(make_table):
    frame = make_table().with_columns(crash=pl.Series([f"C{i // 2}" if i < 100 else "common" for i in range(300)]))
    schema = TableSchema.fit(frame, target="late", min_level_count=5)
    crash = next(c for c in schema.categorical if c.name == "crash")
    assert crash.levels == ["common"] and crash.has_nulls  # index 0 is met in training: it learns a vector
    note = next(n for n in schema.notes if n["column"] == "crash")
    assert note["action"] == "rare levels merged" and "50 level(s) seen fewer than 5 times" in note["reason"]
    codes = schema.transform(frame)["categorical"][:, [c.name for c in schema.categorical].index("crash")]
    assert codes[:100].eq(0).all() and codes[100:].eq(1).all()
    assert TableSchema.from_json(schema.to_json()).categorical[-1].levels == ["common"]
    # a column whose every level is rare is dropped, with the reason
    frame = frame.with_columns(pl.Series("seat", [f"S{i // 3}" for i in range(300)]))
    schema = TableSchema.fit(frame, target="late", categorical=["seat"], min_level_count=5)
    assert "seat" not in schema.feature_names
    assert any(n["column"] == "seat" and "every level seen fewer than 5" in n["reason"] for n in schema.notes)


def test_a_string_column_of_mostly_rare_values_is_an_identifier(make_table):
    # a crash id shared by two or three occupants: under 90% distinct, but no value is seen often enough to learn
    frame = make_table().with_columns(crash=pl.Series([f"K{i // 3}" for i in range(300)]))
    schema = TableSchema.fit(frame, target="late")
    assert "crash" not in schema.feature_names
    note = next(n for n in schema.notes if n["column"] == "crash")
    assert "300 of 300 rows hold a value seen fewer than 5 times" in note["reason"]
    assert "--categorical crash" in note["reason"]
    assert "crash" in TableSchema.fit(frame, target="late", categorical=["crash"]).feature_names
    # levels of a few rows each among common ones stay: most rows hold a value seen often
    frame = make_table().with_columns(zone=pl.Series([f"Z{i}" if i < 60 else f"Z{i % 4}" for i in range(300)]))
    assert "zone" in TableSchema.fit(frame, target="late").feature_names


def test_integer_levels_as_numbers_makes_few_level_integers_both_kinds() -> None:
    """An integer column with few levels gets an embedding and its number; one named by --categorical
    (a nominal code) and string columns stay categorical only; many-level integers stay continuous only."""
    rng = np.random.default_rng(0)
    frame = pl.DataFrame({"hour": rng.integers(5, 23, 400), "zone": rng.integers(1, 9, 400),
                          "city": rng.choice(["a", "b", "c"], 400), "distance": rng.integers(0, 5000, 400),
                          "y": rng.normal(size=400)})
    plain = TableSchema.fit(frame, target="y", categorical=["zone"])
    both = TableSchema.fit(frame, target="y", categorical=["zone"], integer_levels_as_numbers=True,
                           scaling="robust", numeric_encoding="ple")
    assert [c.name for c in plain.categorical] == [c.name for c in both.categorical] == ["hour", "zone", "city"]
    assert [c.name for c in plain.continuous] == ["distance"]
    assert [c.name for c in both.continuous] == ["hour", "distance"]
    assert both.feature_names == ["hour", "zone", "city", "distance"]  # each column once
    tensors = both.transform(frame)
    hour = both.continuous[0]
    assert torch.allclose(tensors["continuous"][:, 0].double(),
                          torch.from_numpy(encode_continuous_block(frame["hour"].to_numpy().astype(float), hour)[:, 0]).double())
    assert both.transform(frame)["categorical"].equal(plain.transform(frame)["categorical"])


def test_rare_levels_rule_follows_the_row_count() -> None:
    """Without --min-level-count a level of a many-level column needs 0.1% of the training rows (at least
    1) for its own vector; a column of at most 32 levels keeps every level; the note names the column
    and the count."""
    assert [min_level_count_for(rows, None) for rows in (1, 263, 1000, 1001, 36_500, 250_000)] == [1, 1, 1, 2, 37, 250]
    assert min_level_count_for(36_500, 1) == 1 and min_level_count_for(10, 5) == 5  # the user's wins
    rng = np.random.default_rng(0)
    planes = np.concatenate([np.repeat([f"N{i}" for i in range(40)], 100), [f"R{i}" for i in range(1000)]])
    grades = np.concatenate([rng.integers(1, 5, planes.size - 3), [9, 9, 9]])  # 5 levels, one of them rare
    frame = pl.DataFrame({"plane": planes, "grade": grades, "x": rng.normal(size=planes.size),
                          "y": rng.normal(size=planes.size)})
    schema = TableSchema.fit(frame, target="y", min_level_count=None)
    plane, grade = schema.categorical
    assert len(plane.levels) == 40  # 5,000 rows: a level needs 5; the 1,000 seen once share index 0
    assert len(grade.levels) == 5  # few levels: the rare 9 keeps its own
    assert schema.note_lines() == ["column 'plane' rare levels merged: 1,000 level(s) seen fewer than 5 times (0.1% of"
                                   " the training rows, in a column of more than 32 levels; --min-level-count sets"
                                   " it) share the unseen index"]
    assert len(TableSchema.fit(frame, target="y").categorical[0].levels) == 1040  # the library's default: every level
    assert len(TableSchema.fit(frame, target="y", min_level_count=5).categorical[1].levels) == 4  # the user's: all columns
