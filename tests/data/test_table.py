"""TableSchema: fitted on the training split, then the one road from raw columns to model tensors."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from torchkeep import DataError, TableSchema


def kinds(schema: TableSchema) -> dict[str, str]:
    """{column: "categorical:<kind>" | "continuous"} for compact assertions."""
    found = {c.name: f"categorical:{c.kind}" for c in schema.categorical}
    found.update({c.name: "continuous" for c in schema.continuous})
    return found


# -- column typing ------------------------------------------------------------------------------


def test_columns_are_typed_from_their_dtype(make_table):
    schema = TableSchema.fit(make_table(), target="late")

    assert kinds(schema) == {
        "carrier": "categorical:string",
        "gate": "categorical:string",
        "weekend": "categorical:boolean",
        "hour": "categorical:integer",  # 18 distinct values
        "distance": "continuous",  # thousands of distinct integers
        "dep_delay": "continuous",
        "temperature": "continuous",
    }
    assert "late" not in schema.feature_names


def test_polars_categorical_and_enum_columns_are_categorical():
    frame = pl.DataFrame(
        {
            "colour": pl.Series(["red", "blue", "red", "green"], dtype=pl.Categorical),
            "size": pl.Series(["S", "M", "L", "M"], dtype=pl.Enum(["S", "M", "L"])),
            "y": [1.0, 2.0, 3.0, 4.0],
        }
    )
    assert kinds(TableSchema.fit(frame, target="y")) == {"colour": "categorical:string", "size": "categorical:string"}


def test_integers_are_categorical_up_to_max_integer_levels():
    frame = pl.DataFrame({"rooms": [1, 2, 3, 4, 5, None] * 10, "y": np.arange(60.0)})

    # five real values (the null is not a level)
    assert kinds(TableSchema.fit(frame, target="y", max_integer_levels=5)) == {"rooms": "categorical:integer"}
    assert kinds(TableSchema.fit(frame, target="y", max_integer_levels=4)) == {"rooms": "continuous"}


def test_user_overrides_categorical_continuous_and_drop(make_table):
    schema = TableSchema.fit(
        make_table(), target="late", categorical=["distance", "dep_delay"], continuous=["hour", "weekend"],
        drop=["gate", "temperature"],
    )

    assert kinds(schema) == {
        "carrier": "categorical:string",
        "weekend": "continuous",
        "hour": "continuous",
        "distance": "categorical:integer",
        "dep_delay": "categorical:string",  # a float named categorical: its exact values are the levels
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"categorical": ["nope"]}, "--categorical names unknown column(s) 'nope'"),
        ({"drop": ["nope"]}, "--drop names unknown column(s) 'nope'"),
        ({"categorical": ["hour"], "continuous": ["hour"]}, "'hour' are named both categorical and continuous"),
        ({"continuous": ["carrier"]}, "column 'carrier' has type String; --continuous needs numbers"),
    ],
)
def test_overrides_that_make_no_sense_are_data_errors(make_table, overrides, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TableSchema.fit(make_table(), target="late", **overrides)


# -- vocabularies -------------------------------------------------------------------------------


def test_vocabulary_orders_levels_by_training_frequency_from_index_1():
    frame = pl.DataFrame({"city": ["Oslo", "Rome", "Rome", "Lima", "Rome", "Lima"], "y": [0, 1, 0, 1, 0, 1]})
    schema = TableSchema.fit(frame, target="y")

    assert schema.categorical[0].levels == ["Rome", "Lima", "Oslo"]
    assert schema.cardinalities == [4]  # 3 levels + index 0
    codes = schema.transform(frame)["categorical"][:, 0]
    assert codes.tolist() == [3, 1, 1, 2, 1, 2]


def test_index_0_is_null_and_unseen_and_never_a_real_value():
    # "" and "None" are real values in a frame (only CSV reading turns "" into null)
    train = pl.DataFrame({"code": ["a", "b", None, "", "None", "a"], "y": [0, 1, 0, 1, 0, 1]})
    schema = TableSchema.fit(train, target="y")
    codes = schema.transform(train)["categorical"][:, 0].tolist()

    assert None not in schema.categorical[0].levels
    assert schema.categorical[0].has_nulls
    assert codes[2] == 0  # null
    assert 0 not in codes[:2] + codes[3:]  # every real value, "" and "None" included, has its own index
    assert len(set(codes[:2] + codes[3:])) == 4

    later = pl.DataFrame({"code": ["z", None, "a", "A"]})  # unseen, null, known, unseen (case matters)
    assert schema.transform(later, with_target=False)["categorical"][:, 0].tolist() == [0, 0, codes[0], 0]


def test_boolean_and_integer_vocabularies_map_null_and_unseen_to_0(make_table):
    schema = TableSchema.fit(make_table(), target="late")
    later = pl.DataFrame(
        {
            "carrier": ["AA", "ZZ"],
            "gate": [None, "Q"],
            "weekend": pl.Series([True, None], dtype=pl.Boolean),
            "hour": [12, 99],  # 99 never seen
            "distance": [500, 600],
            "dep_delay": [0.0, 1.0],
            "temperature": [10.0, 11.0],
        }
    )
    codes = schema.transform(later, with_target=False)["categorical"]

    assert codes.dtype == torch.int64
    assert (codes[0, [0, 2, 3]] > 0).all()  # AA, True, 12 are known
    assert codes[0, 1] == 0  # null gate
    assert codes[1].tolist() == [0, 0, 0, 0]  # ZZ, Q, null, 99


# -- continuous columns -------------------------------------------------------------------------


def test_missing_indicator_only_for_columns_with_nulls_in_training(make_table):
    train = make_table()
    schema = TableSchema.fit(train, target="late")
    by_name = {c.name: c for c in schema.continuous}

    assert by_name["temperature"].missing_indicator  # ~10% nulls in training
    assert not by_name["dep_delay"].missing_indicator
    assert not by_name["distance"].missing_indicator
    assert schema.n_continuous_inputs == 4  # distance, dep_delay, temperature + its indicator

    continuous = schema.transform(train)["continuous"]
    assert continuous.shape == (train.height, 4)
    temperature = by_name["temperature"]
    is_null = train.get_column("temperature").is_null().to_numpy()
    # columns: distance, dep_delay, temperature, temperature's indicator
    assert continuous[:, 3].numpy().tolist() == is_null.astype(np.float32).tolist()
    filled = (temperature.median - temperature.mean) / temperature.std
    assert np.allclose(continuous[is_null, 2].numpy(), filled)
    assert temperature.median == pytest.approx(train.get_column("temperature").median())


def test_nulls_only_at_predict_time_are_filled_with_the_median_and_keep_the_input_shape(make_table):
    train = make_table()
    schema = TableSchema.fit(train, target="late")
    dep_delay = next(c for c in schema.continuous if c.name == "dep_delay")
    later = make_table(rows=20, seed=1).with_columns(
        dep_delay=pl.lit(None, dtype=pl.Float64), distance=pl.lit(None, dtype=pl.Int64)
    )

    continuous = schema.transform(later, with_target=False)["continuous"]

    assert continuous.shape == (20, schema.n_continuous_inputs) == (20, 4)
    assert torch.isfinite(continuous).all()
    assert np.allclose(continuous[:, 1].numpy(), (dep_delay.median - dep_delay.mean) / dep_delay.std)


def test_standardized_with_training_statistics(make_table):
    train = make_table()
    schema = TableSchema.fit(train, target="late")

    standardized = schema.transform(train)["continuous"][:, :3].double()  # without the 0/1 indicator
    assert standardized.mean(dim=0).tolist() == pytest.approx([0, 0, 0], abs=1e-6)
    assert standardized.std(dim=0, unbiased=False).tolist() == pytest.approx([1, 1, 1], abs=1e-5)

    # later data is scaled with the training statistics, not its own
    shifted = train.with_columns(pl.col("dep_delay") + 100)
    dep_delay = next(c for c in schema.continuous if c.name == "dep_delay")
    moved = schema.transform(shifted)["continuous"][:, 1].double()
    assert moved.mean().item() == pytest.approx(100 / dep_delay.std, rel=1e-5)


def test_validation_split_never_changes_the_fitted_statistics(make_table):
    table = make_table()
    train, valid = table[:200], table[200:]
    schema = TableSchema.fit(train, target="late")
    before = schema.to_json()

    schema.transform(valid)

    assert schema.to_json() == before
    dep_delay = next(c for c in schema.continuous if c.name == "dep_delay")
    assert dep_delay.mean == pytest.approx(train.get_column("dep_delay").mean())


# -- persistence --------------------------------------------------------------------------------


def test_json_round_trip_gives_identical_tensors(make_table, tmp_path):
    schema = TableSchema.fit(make_table(), target="late")
    path = tmp_path / "schema.json"
    path.write_text(schema.to_json())

    loaded = TableSchema.from_json(path.read_text())

    later = make_table(rows=50, seed=7).with_columns(
        carrier=pl.when(pl.int_range(pl.len()) % 3 == 0).then(pl.lit("ZZ")).otherwise(pl.col("carrier")),
        dep_delay=pl.when(pl.int_range(pl.len()) % 4 == 0).then(None).otherwise(pl.col("dep_delay")),
    )
    expected, found = schema.transform(later), loaded.transform(later)
    assert expected.keys() == found.keys() == {"categorical", "continuous", "target"}
    for key in expected:
        assert expected[key].dtype == found[key].dtype
        assert torch.equal(expected[key], found[key]), key
    assert loaded.to_json() == schema.to_json()


# -- targets and tasks --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "task"),
    [
        ([True, False] * 30, "binary"),
        ([0, 1] * 30, "binary"),
        (["no", "yes"] * 30, "binary"),
        (["cat", "dog", "bird"] * 20, "multiclass"),
        ([1, 2, 3, 4, 5] * 12, "multiclass"),  # few integer labels
        (list(range(60)), "regression"),  # many integers
        (list(np.linspace(0.0, 1.0, 60)), "regression"),
    ],
)
def test_task_is_inferred_from_the_target(target, task):
    frame = pl.DataFrame({"x": np.arange(60.0), "y": target})
    assert TableSchema.fit(frame, target="y").target.task == task


def test_task_can_be_forced():
    frame = pl.DataFrame({"x": np.arange(60.0), "stars": [1, 2, 3, 4, 5] * 12, "price": [1.0, 2.0, 3.0] * 20})

    stars = TableSchema.fit(frame.drop("price"), target="stars", task="regression").target
    assert stars.task == "regression"
    price = TableSchema.fit(frame.drop("stars"), target="price", task="multiclass").target
    assert (price.task, price.labels) == ("multiclass", [1, 2, 3])

    with pytest.raises(DataError, match="--task binary needs exactly 2 labels in 'stars', found 5"):
        TableSchema.fit(frame.drop("price"), target="stars", task="binary")
    with pytest.raises(DataError, match="--task regression needs a numeric target"):
        TableSchema.fit(frame.with_columns(pl.col("stars").cast(pl.String)), target="stars", task="regression")


def test_binary_target_is_encoded_as_0_and_1_in_label_order(make_table):
    table = make_table()
    schema = TableSchema.fit(table, target="late")

    assert (schema.target.task, schema.target.labels) == ("binary", [False, True])
    target = schema.transform(table)["target"]
    assert target.dtype == torch.float32
    assert target.tolist() == table.get_column("late").cast(pl.Float32).to_list()

    decoded = schema.decode(torch.tensor([[-3.0], [0.5]]))
    assert decoded.columns == ["prediction", "probability_False", "probability_True"]
    assert decoded.get_column("prediction").to_list() == [False, True]
    assert decoded.get_column("probability_True").to_list() == pytest.approx(torch.sigmoid(torch.tensor([-3.0, 0.5])).tolist())


def test_multiclass_labels_are_sorted_and_decoded_with_probabilities():
    frame = pl.DataFrame({"x": np.arange(9.0), "animal": ["dog", "cat", "bird"] * 3})
    schema = TableSchema.fit(frame, target="animal")

    assert (schema.target.task, schema.target.labels) == ("multiclass", ["bird", "cat", "dog"])
    target = schema.transform(frame)["target"]
    assert target.dtype == torch.int64
    assert target[:3].tolist() == [2, 1, 0]

    decoded = schema.decode(torch.tensor([[0.0, 4.0, 1.0], [5.0, 0.0, 0.0]]))
    assert decoded.columns == ["prediction", "probability_bird", "probability_cat", "probability_dog"]
    assert decoded.get_column("prediction").to_list() == ["cat", "bird"]
    probabilities = decoded.drop("prediction").to_numpy()
    assert np.allclose(probabilities.sum(axis=1), 1.0)


def test_unseen_target_label_at_evaluation_is_a_data_error():
    schema = TableSchema.fit(pl.DataFrame({"x": np.arange(6.0), "animal": ["dog", "cat"] * 3}), target="animal")

    with pytest.raises(DataError, match="target column 'animal' has label\\(s\\) 'fish' not seen in training"):
        schema.transform(pl.DataFrame({"x": [1.0], "animal": ["fish"]}), source="eval.csv")


def test_regression_target_is_standardized_and_decoded_in_original_units():
    rng = np.random.default_rng(0)
    price = rng.normal(250_000, 40_000, 200)
    frame = pl.DataFrame({"rooms": rng.integers(1, 6, 200), "price": price})
    schema = TableSchema.fit(frame, target="price")

    target = schema.transform(frame)["target"].double()
    assert schema.target.task == "regression"
    assert target.mean().item() == pytest.approx(0, abs=1e-6)
    assert target.std(unbiased=False).item() == pytest.approx(1, abs=1e-5)

    decoded = schema.decode(target.float().reshape(-1, 1))
    assert decoded.columns == ["prediction"]
    assert np.allclose(decoded.get_column("prediction").to_numpy(), price, rtol=1e-6)


def test_regression_target_can_stay_in_original_units():
    frame = pl.DataFrame({"x": np.arange(50.0), "y": np.arange(50.0) * 3})
    schema = TableSchema.fit(frame, target="y", standardize_target=False)

    assert (schema.target.mean, schema.target.std) == (0.0, 1.0)
    assert torch.equal(schema.transform(frame)["target"], torch.arange(50.0) * 3)
    assert schema.decode(torch.tensor([[42.0]])).get_column("prediction").to_list() == [42.0]


# -- what transform refuses -----------------------------------------------------------------------


def test_transform_names_missing_columns_and_the_source(make_table):
    schema = TableSchema.fit(make_table(), target="late")

    with pytest.raises(DataError, match="new.csv: missing column\\(s\\) 'distance' that the model was trained on"):
        schema.transform(make_table().drop("distance"), source="new.csv")


def test_transform_needs_the_target_only_when_asked(make_table):
    schema = TableSchema.fit(make_table(), target="late")
    features = make_table().drop("late")

    assert set(schema.transform(features, with_target=False)) == {"categorical", "continuous"}
    with pytest.raises(DataError, match="target column 'late' not found"):
        schema.transform(features)


def test_a_column_named_count_is_an_ordinary_categorical():
    frame = pl.DataFrame({"count": ["few", "many", "many", "few", "some"], "y": [0, 1, 1, 0, 1]})

    schema = TableSchema.fit(frame, target="y")

    assert schema.categorical[0].name == "count"
    assert sorted(schema.categorical[0].levels) == ["few", "many", "some"]
