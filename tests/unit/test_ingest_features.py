from datetime import UTC, datetime

import pandas as pd
import pytest

from mlops_sandbox.features import engineer, preprocess, split_of
from mlops_sandbox.ingest import validate
from mlops_sandbox.schema import get_schema
from mlops_sandbox.simulate import Drift, generate_batch

HOUSE_PRICES = get_schema("house_prices")

pytestmark = pytest.mark.unit
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _as_read_from_csv(frame: pd.DataFrame) -> pd.DataFrame:
    raw = frame.astype(object).where(frame.notna(), None).astype(str).replace("None", None)
    raw["source_key"] = "house_prices/date=2026-01-01/batch.csv"
    return raw


def test_clean_batch_validates_completely_with_signature_dtypes():
    result = validate(_as_read_from_csv(generate_batch("house_prices", 1, T0, 300)), HOUSE_PRICES)
    assert len(result.valid) == 300 and result.quarantined.empty
    assert result.valid["area"].dtype == "float64" and result.valid["bedrooms"].dtype == "int64"


def test_every_bad_row_is_quarantined_with_rule_column_and_value():
    raw = _as_read_from_csv(generate_batch("house_prices", 1, T0, 10))
    raw.loc[0, "area"] = None
    raw.loc[1, "area"] = "lots"
    raw.loc[2, "bedrooms"] = "2.5"
    raw.loc[3, "area"] = "-40"
    raw.loc[4, "furnishingstatus"] = "palatial"
    raw.loc[5, "record_id"] = raw.loc[6, "record_id"]
    result = validate(raw, HOUSE_PRICES)
    found = {(r.rule, r.column, r.value) for r in result.quarantined.itertuples()}
    assert found == {
        ("missing_value", "area", ""),
        ("not_a_number", "area", "lots"),
        ("not_an_integer", "bedrooms", "2.5"),
        ("below_minimum", "area", "-40"),
        ("unknown_category", "furnishingstatus", "palatial"),
        ("duplicate_id", "record_id", raw.loc[6, "record_id"]),
    }
    assert len(result.valid) + result.report()["quarantined_rows"] == len(raw)  # nothing dropped silently
    assert set(result.quarantined["source_key"]) == {"house_prices/date=2026-01-01/batch.csv"}


def test_quality_drift_is_caught_by_validation():
    raw = _as_read_from_csv(generate_batch("house_prices", 2, T0, 2000, [Drift("quality", T0, 1.0)]))
    result = validate(raw, HOUSE_PRICES)
    rules = {v["rule"] for v in result.report()["violations"]}
    assert {"missing_value", "unknown_category"} <= rules and rules & {"below_minimum", "above_maximum"}


def test_missing_column_quarantines_every_row():
    raw = _as_read_from_csv(generate_batch("house_prices", 1, T0, 5)).drop(columns=["parking"])
    result = validate(raw, HOUSE_PRICES)
    assert result.valid.empty and set(result.quarantined["rule"]) == {"missing_column"}


def test_split_is_fixed_by_record_id_and_near_the_share():
    table = preprocess(
        validate(_as_read_from_csv(generate_batch("house_prices", 3, T0, 4000)), HOUSE_PRICES).valid, HOUSE_PRICES
    )
    assert 0.17 < (table["split"] == "test").mean() < 0.23
    assert all(split_of(r) == s for r, s in zip(table["record_id"][:50], table["split"][:50], strict=True))
    assert list(table.columns)[-1] == "split"


def test_engineered_features_are_derived_not_stored():
    frame = generate_batch("house_prices", 3, T0, 5)
    out = engineer(frame, "house_prices")
    assert (out["area_per_bedroom"] == frame["area"] / frame["bedrooms"]).all()
    assert "area_per_bedroom" not in frame.columns
