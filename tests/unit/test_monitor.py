import json
from datetime import UTC, datetime, timedelta

import pytest

from mlops_sandbox.config import Settings
from mlops_sandbox.contracts import log_hour_prefixes, prediction_log_record, to_jsonl
from mlops_sandbox.features import preprocess
from mlops_sandbox.ingest import validate
from mlops_sandbox.monitor.checks import DecayRule, column_drift_of, figures_and_reports, parse_prediction_log
from mlops_sandbox.monitor.store import load_predictions, quarantine_logs, save_status
from mlops_sandbox.schema import get_schema
from mlops_sandbox.simulate import Drift, generate_batch
from mlops_sandbox.train import evaluate, fit

HOUSE_PRICES = get_schema("house_prices")

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


class WritableS3(FakeS3):
    """... and the writes (one namespace for every bucket: the keys differ)."""

    class exceptions:  # noqa: N801 - boto3's name
        NoSuchKey = KeyError

    def put_object(self, Bucket, Key, Body, ContentType=None):  # noqa: N803
        self.objects[Key] = Body

    def delete_object(self, Bucket, Key):  # noqa: N803
        self.objects.pop(Key, None)


def log_rows(frame, when, model_version="1", prefix="r"):
    """What the prediction service captures for each row of `frame`, one request per row."""
    return [
        prediction_log_record(
            request_id=f"{prefix}{i}",
            row=0,
            timestamp=when + timedelta(seconds=i),
            model_name="house-prices",
            model_version=model_version,
            inputs={c: (v.item() if hasattr(v, "item") else v) for c, v in row[HOUSE_PRICES.feature_names].items()},
            prediction=1.0,
            latency_ms=1.0,
        )
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
    reasons = DecayRule.from_settings(Settings(_env_file=None)).check(figures, baseline_mae)
    assert {r.split(":")[0] for r in reasons} == expected, (figures, reasons)
    assert figures["rows"] == 600 and figures["labelled_rows"] == 600
    assert len(snapshots) == 2  # drift, performance


def test_column_drift_names_the_method_evidently_chose_and_its_verdict(trained):
    reference, model, _ = trained
    current = window(model, (Drift("covariate", T0, 1.0),))
    # a reference of more than 1,000 rows: distances, drift at or above the threshold
    figures, _ = figures_and_reports(reference, current, HOUSE_PRICES, T0)
    drift = figures["column_drift"]
    assert set(drift) == set(HOUSE_PRICES.feature_names)
    assert drift["area"]["method"] == "Wasserstein distance (normed)" and drift["area"]["threshold"] == 0.1
    assert drift["furnishingstatus"]["method"] == "Jensen-Shannon distance"
    assert all(c["drifted"] == (c["score"] >= c["threshold"]) for c in drift.values())
    assert sum(c["drifted"] for c in drift.values()) == figures["drifted_columns"]
    # a small reference: statistical tests, drift when the p-value is below the threshold
    figures, _ = figures_and_reports(reference.head(500), current, HOUSE_PRICES, T0)
    drift = figures["column_drift"]
    assert drift["area"]["method"] == "K-S p_value" and drift["area"]["threshold"] == 0.05
    assert {c["method"] for c in drift.values()} <= {"K-S p_value", "chi-square p_value", "Z-test p_value"}
    assert all(c["drifted"] == (c["score"] < c["threshold"]) for c in drift.values())


def test_column_drift_of_reads_new_and_old_status_files():
    new = {"figures": {"column_drift": {"area": {"method": "K-S p_value", "score": 0.01, "threshold": 0.05}}}}
    assert column_drift_of(new)["area"]["method"] == "K-S p_value"
    old = {"figures": {"column_p_values": {"area": 0.3}}}  # written before the methods were recorded
    assert column_drift_of(old) == {"area": {"method": None, "score": 0.3, "threshold": None, "drifted": None}}
    assert column_drift_of({"figures": {"rows": 0}}) == {}  # no model yet: no drift figures


def test_decay_limits_come_from_settings():
    settings = Settings(_env_file=None, decay_max_drift_share=0.3, decay_max_mae_increase=0.1)
    rule = DecayRule.from_settings(settings)
    assert (rule.max_drift_share, rule.max_mae_increase) == (0.3, 0.1)
    assert DecayRule.from_settings(settings, max_drift_share=0.9, min_rows=5).max_drift_share == 0.9


def test_rule_needs_enough_rows_and_labels():
    rule = DecayRule(max_drift_share=0.5, max_mae_increase=0.25, min_rows=30, min_labelled=20)
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
    prefixes = log_hour_prefixes("house_prices", "predictions", T0 + timedelta(minutes=55), T0 + timedelta(minutes=65))
    assert [p.split("/")[-2] for p in prefixes] == ["hour=12", "hour=13"]


def test_window_results_land_where_readers_look_and_a_clean_rerun_withdraws_the_alert():
    s3 = WritableS3({"house_prices/predictions/date=2026-05-01/hour=12/bad.jsonl": b"not json"})
    bad = {"key": "house_prices/predictions/date=2026-05-01/hour=12/bad.jsonl", "reason": "not JSON Lines"}
    quarantine_logs(s3, "logs", "monitoring", "house_prices", [bad])
    assert s3.objects[f"house_prices/quarantine/{bad['key']}"] == b"not json"
    assert json.loads(s3.objects[f"house_prices/quarantine/{bad['key']}.reason.json"]) == bad

    def status(end, decay):
        return {"window_start": "x", "window_end": end, "decay": decay}

    save_status(s3, "monitoring", "house_prices", T0, status("2026-05-01T12:05:00+00:00", True))
    assert json.loads(s3.objects["house_prices/alerts/20260501T120000Z.json"])["decay"] is True
    earlier = T0 - timedelta(hours=1)
    save_status(s3, "monitoring", "house_prices", earlier, status("2026-05-01T11:05:00+00:00", False))
    assert json.loads(s3.objects["house_prices/status.json"])["window_end"] == "2026-05-01T12:05:00+00:00"
    assert "house_prices/windows/20260501T110000Z.json" in s3.objects
    save_status(s3, "monitoring", "house_prices", T0, status("2026-05-01T12:05:00+00:00", False))  # a rerun
    assert "house_prices/alerts/20260501T120000Z.json" not in s3.objects
