import json
from datetime import UTC, datetime, timedelta

import pytest

from mlops_sandbox.features import preprocess
from mlops_sandbox.ingest import validate
from mlops_sandbox.monitor import DecayRule, figures_and_reports, hour_prefixes, load_predictions, parse_prediction_log
from mlops_sandbox.schema import HOUSE_PRICES
from mlops_sandbox.serve.capture import to_jsonl
from mlops_sandbox.simulate import Drift, generate_batch
from mlops_sandbox.train import evaluate, fit

pytestmark = pytest.mark.unit
T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)


class FakeS3:
    """The three calls the monitor makes, over a dict of objects."""

    def __init__(self, objects: dict[str, bytes]):
        self.objects = objects

    def get_paginator(self, _):
        return self

    def paginate(self, Bucket, Prefix):  # noqa: N803 - boto3's names
        yield {"Contents": [{"Key": k} for k in sorted(self.objects) if k.startswith(Prefix)]}

    def get_object(self, Bucket, Key):  # noqa: N803
        import io

        return {"Body": io.BytesIO(self.objects[Key])}


def log_rows(frame, when, model_version="1", prefix="r"):
    return [
        {
            "request_id": f"{prefix}{i}",
            "row": 0,
            "timestamp": (when + timedelta(seconds=i)).isoformat(),
            "model_name": "house-prices",
            "model_version": model_version,
            "inputs": {c: (v.item() if hasattr(v, "item") else v) for c, v in row[HOUSE_PRICES.feature_names].items()},
            "prediction": 1.0,
            "latency_ms": 1.0,
        }
        for i, (_, row) in enumerate(frame.iterrows())
    ]


@pytest.fixture(scope="module")
def trained():
    raw = generate_batch("house_prices", 1, T0 - timedelta(days=1), 3000).astype(str)
    raw["source_key"] = "k"
    table = preprocess(validate(raw, HOUSE_PRICES).valid, HOUSE_PRICES)
    train = table[table.split == "train"]
    model = fit(train, HOUSE_PRICES, "linear")
    baseline_mae = evaluate(model.predict, table[table.split == "test"], HOUSE_PRICES)["mae"]
    return train, model, baseline_mae


def window(model, drifts=(), seed=2):
    current = generate_batch("house_prices", seed, T0, 600, drifts)
    current["prediction"] = model.predict(current)
    current["actual"] = current["price"]
    return current


@pytest.mark.parametrize(
    ("drifts", "expected"),
    [
        ((), set()),
        ((Drift("covariate", T0, 1.0),), {"drift", "performance"}),  # bigger houses: the linear model errs too
        ((Drift("concept", T0, 1.0),), {"performance"}),  # same features, new prices: no feature drift
    ],
    ids=["baseline", "covariate", "concept"],
)
def test_decay_rule_fires_on_drift_scenarios_and_stays_quiet_on_the_baseline(trained, drifts, expected):
    reference, model, baseline_mae = trained
    figures, snapshots = figures_and_reports(reference, window(model, drifts), HOUSE_PRICES, T0)
    reasons = DecayRule().check(figures, baseline_mae)
    assert {r.split(":")[0] for r in reasons} == expected, (figures, reasons)
    assert figures["rows"] == 600 and figures["labelled_rows"] == 600
    assert len(snapshots) == 2  # drift, performance


def test_rule_needs_enough_rows_and_labels():
    rule = DecayRule(min_rows=30, min_labelled=20)
    assert rule.check({"rows": 10, "drift_share": 1.0, "labelled_rows": 5, "mae": 100.0}, 1.0) == []
    assert len(rule.check({"rows": 30, "drift_share": 0.5, "labelled_rows": 20, "mae": 1.3}, 1.0)) == 2


def test_window_is_read_once_per_prediction_and_bad_files_are_quarantined():
    frame = generate_batch("house_prices", 3, T0, 4)
    good = log_rows(frame, T0 + timedelta(minutes=1))
    objects = {
        "house_prices/predictions/date=2026-05-01/hour=12/a.jsonl": to_jsonl(good),
        "house_prices/predictions/date=2026-05-01/hour=12/dup.jsonl": to_jsonl(good[:2]),  # a retried upload
        "house_prices/predictions/date=2026-05-01/hour=12/late.jsonl": to_jsonl(
            log_rows(frame, T0 + timedelta(minutes=20), prefix="late")
        ),  # outside the window
        "house_prices/predictions/date=2026-05-01/hour=12/corrupt.jsonl": b"\x00\xffnot json",
        "house_prices/predictions/date=2026-05-01/hour=12/off-schema.jsonl": to_jsonl(
            [{**good[0], "inputs": {"colour": "red"}}]
        ),
    }
    data = load_predictions(FakeS3(objects), "logs", HOUSE_PRICES, T0, T0 + timedelta(minutes=5))
    assert sorted(data.predictions["request_id"]) == ["r0", "r1", "r2", "r3"]
    reasons = {q["key"].rsplit("/", 1)[-1]: q["reason"] for q in data.quarantined}
    assert set(reasons) == {"corrupt.jsonl", "off-schema.jsonl"}
    assert "not JSON Lines" in reasons["corrupt.jsonl"] and "do not match" in reasons["off-schema.jsonl"]


def test_parse_refuses_lines_without_the_capture_fields():
    with pytest.raises(ValueError, match="missing fields"):
        parse_prediction_log(json.dumps({"request_id": "x"}).encode(), HOUSE_PRICES)


def test_hour_partitions_cover_the_window():
    prefixes = hour_prefixes("house_prices", "predictions", T0 + timedelta(minutes=55), T0 + timedelta(minutes=65))
    assert [p.split("/")[-2] for p in prefixes] == ["hour=12", "hour=13"]
