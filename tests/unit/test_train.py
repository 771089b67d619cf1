from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from mlops_sandbox.features import preprocess
from mlops_sandbox.ingest import validate
from mlops_sandbox.schema import HOUSE_PRICES
from mlops_sandbox.simulate import batch_times, generate_batch
from mlops_sandbox.train import evaluate, fit
from mlops_sandbox.train.models import MLPConfig

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def table():
    times = batch_times(datetime(2026, 1, 1, tzinfo=UTC), timedelta(hours=1), 6)
    raw = pd.concat([generate_batch("house_prices", 11, t, 400) for t in times]).astype(str)
    raw["source_key"] = "k"
    return preprocess(validate(raw, HOUSE_PRICES).valid, HOUSE_PRICES)


def test_mlp_beats_the_linear_baseline_on_held_out_data(table):
    train, test = table[table.split == "train"], table[table.split == "test"]
    linear = evaluate(fit(train, HOUSE_PRICES, "linear").predict, test, HOUSE_PRICES)
    mlp = evaluate(fit(train, HOUSE_PRICES, "mlp", MLPConfig(epochs=60)).predict, test, HOUSE_PRICES)
    assert mlp["rmse"] < linear["rmse"]
    assert mlp["r2"] > 0.75 and linear["r2"] > 0.5


def test_training_is_reproducible(table):
    train = table[table.split == "train"]
    a = fit(train, HOUSE_PRICES, "mlp", MLPConfig(epochs=5, seed=3)).predict(train.head(20))
    b = fit(train, HOUSE_PRICES, "mlp", MLPConfig(epochs=5, seed=3)).predict(train.head(20))
    np.testing.assert_allclose(a, b)


def test_model_takes_raw_records_and_ignores_unknown_categories(table):
    model = fit(table[table.split == "train"], HOUSE_PRICES, "linear")
    rows = table.head(3).copy()
    rows.loc[rows.index[0], "furnishingstatus"] = "never-seen"
    assert np.isfinite(model.predict(rows)).all()


def test_bad_arguments_are_refused(table):
    with pytest.raises(ValueError, match="unknown model type"):
        fit(table, HOUSE_PRICES, "xgboost")
    with pytest.raises(ValueError, match="too few"):
        fit(table.head(5), HOUSE_PRICES, "linear")
    with pytest.raises(ValueError, match="missing feature"):
        fit(table[table.split == "train"], HOUSE_PRICES, "linear").predict(table.drop(columns=["area"]))


@pytest.mark.parametrize("model_type", ["linear", "mlp"])
def test_record_path_predicts_exactly_what_the_frame_path_predicts(table, model_type):
    model = fit(table[table.split == "train"], HOUSE_PRICES, model_type, MLPConfig(epochs=3))
    rows = table[table.split == "test"].head(50).copy()
    rows.loc[rows.index[0], "furnishingstatus"] = "never-seen"  # unknown category: all-zero one-hot in both
    records = rows[HOUSE_PRICES.feature_names].to_dict(orient="records")
    np.testing.assert_array_equal(model.predict_records(records), model.predict(rows))
