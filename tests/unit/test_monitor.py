import json
import math
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from s3_stand_in import FakeS3, WritableS3

from mlops_sandbox.config import Settings
from mlops_sandbox.contracts import (
    actual_record,
    log_hour_prefixes,
    log_key,
    prediction_log_record,
    prediction_log_records,
    to_jsonl,
)
from mlops_sandbox.features import preprocess
from mlops_sandbox.ingest import validate
from mlops_sandbox.monitor.checks import (
    DecayRule,
    actuals_frame,
    column_drift_of,
    figures_and_reports,
    parse_prediction_log,
    production_answered,
    window_predictions,
)
from mlops_sandbox.monitor.store import load_predictions, quarantine_logs, save_status
from mlops_sandbox.schema import get_schema
from mlops_sandbox.simulate import Drift, generate_batch
from mlops_sandbox.train import evaluate, fit

HOUSE_PRICES = get_schema("house_prices")

pytestmark = pytest.mark.unit
T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)


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


# --- serving experiments: shadow and A/B lines ---------------------------------------------------------------
def experiment_lines(frame, model, when, prefix="e", candidate=None, answered_by_candidate=()):
    """Production's lines for each row of `frame` (one request per row) and, for a shadow experiment, the
    candidate's shadow line of each (its prediction `candidate(frame)`); in A/B, the rows numbered in
    `answered_by_candidate` are the candidate's answer instead. Returns (lines, actuals)."""
    production = model.predict(frame)
    shadowed = candidate(frame) if candidate is not None else None
    lines, actuals = [], []
    for i, record in enumerate(log_rows(frame, when, prefix=prefix)):
        ab = i in answered_by_candidate
        line = {**record, "prediction": float(production[i]), "variant": "production"}
        if ab:
            line |= {"variant": "candidate", "model_version": "2", "prediction": float(frame["price"].iloc[i])}
        lines.append(line)
        if shadowed is not None and not ab:
            lines.append(
                {
                    **record,
                    "model_version": "2",
                    "variant": "candidate",
                    "shadow": True,
                    "prediction": float(shadowed[i]),
                    "production_version": "1",
                    "production_prediction": float(production[i]),
                }
            )
        actuals.append(actual_record(record["request_id"], float(frame["price"].iloc[i]), when + timedelta(minutes=1)))
    return lines, actuals


def test_parse_keeps_the_experiment_fields_and_reads_logs_from_before_them(trained):
    _, model, _ = trained
    frame = generate_batch("house_prices", 4, T0, 2)
    (old, *_), _ = experiment_lines(frame, model, T0)
    old = {k: v for k, v in old.items() if k not in ("variant", "latency_ms")}  # written before experiments
    lines, _ = experiment_lines(frame, model, T0, candidate=lambda f: f["price"] * 1.01)
    parsed = parse_prediction_log(to_jsonl([old]), HOUSE_PRICES)
    assert parsed.loc[0, "variant"] == "production" and not parsed.loc[0, "shadow"]
    assert parsed.loc[0, "production_version"] is None and math.isnan(parsed.loc[0, "production_prediction"])
    assert math.isnan(parsed.loc[0, "latency_ms"])
    parsed = parse_prediction_log(to_jsonl(lines), HOUSE_PRICES)
    assert list(parsed["variant"]) == ["production", "candidate"] * 2 and list(parsed["shadow"]) == [False, True] * 2
    shadow = parsed.iloc[1]
    assert (shadow["model_version"], shadow["production_version"]) == ("2", "1")
    assert shadow["production_prediction"] == parsed.iloc[0]["prediction"] and shadow["latency_ms"] == 1.0
    with pytest.raises(ValueError, match="unknown variant"):
        parse_prediction_log(to_jsonl([{**lines[0], "variant": "challenger"}]), HOUSE_PRICES)
    with pytest.raises(ValueError, match="shadow line"):
        parse_prediction_log(to_jsonl([{**lines[0], "shadow": True}]), HOUSE_PRICES)


def test_a_request_row_keeps_its_production_and_shadow_lines_and_production_figures_only_its_own(trained):
    reference, model, _ = trained
    frame = generate_batch("house_prices", 5, T0, 60)
    shadowed, _ = experiment_lines(frame, model, T0, candidate=lambda f: f["price"])
    ab, _ = experiment_lines(frame, model, T0, prefix="ab", answered_by_candidate=range(0, 60, 3))
    parsed = [parse_prediction_log(to_jsonl(lines), HOUSE_PRICES) for lines in (shadowed, shadowed[:10], ab)]
    window = window_predictions(parsed, HOUSE_PRICES, T0, T0 + timedelta(minutes=5))  # a retried upload: once
    assert len(window) == 60 * 2 + 60
    production, excluded = production_answered(window.assign(actual=window["request_id"].map(lambda _: 1.0)))
    assert (excluded["total"], excluded["shadow"], excluded["candidate_answered"]) == (80, 60, 20)
    assert len(production) == 100 and set(production["variant"]) == {"production"} and not production["shadow"].any()
    assert set(production["model_version"]) == {"1"}
    labelled = production.drop(columns="actual").merge(
        pd.DataFrame(
            {
                "request_id": [f"e{i}" for i in range(60)] + [f"ab{i}" for i in range(60)],
                "actual": list(frame["price"]) * 2,
            }
        ),
        on="request_id",
    )
    figures, _ = figures_and_reports(reference, labelled, HOUSE_PRICES, T0)
    errors = model.predict(labelled) - labelled["actual"].to_numpy()
    assert figures["rows"] == figures["labelled_rows"] == 100
    assert figures["mae"] == pytest.approx(abs(errors).mean())  # production's own, not the candidate's


@pytest.fixture
def stand(trained, monkeypatch, tmp_path):
    """run_window against fakes: S3 in a dict, the production model and its training rows, the registry's
    serving experiment (`stand.experiment`), and a local Evidently workspace."""
    from evidently.ui.workspace import Workspace

    from mlops_sandbox import registry
    from mlops_sandbox.monitor import steps

    reference, model, baseline_mae = trained

    class Stand:
        s3 = WritableS3({})
        workspace = Workspace(str(tmp_path / "evidently"))
        experiment = {"mode": "off", "candidate_version": None, "production_version": "1", "set_at": None}
        settings = Settings(_env_file=None, experiment_min_labelled=50)
        production = "1"  # the version the registry's production alias names now
        judged: list = []  # the versions run_window asked for by number
        # the windows' clock; the rows logged in them are generated at the fixed T0, so that their figures (and
        # a decay verdict) do not change with the hour the test runs
        start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)

        def put(self, kind, when, records, name="a"):
            self.s3.put_object(Bucket=kind, Key=log_key("house_prices", kind, when, name), Body=to_jsonl(records))

    stand = Stand()
    real_project = steps.evidently_project
    monkeypatch.setattr(steps, "s3_client", lambda settings: stand.s3)

    def production_model(settings, scenario, version=None):
        if version is not None:
            stand.judged.append(version)
        version = version or stand.production
        return {"name": "house-prices", "version": version, "tags": {}, "test_mae": baseline_mae * int(version)}

    monkeypatch.setattr(steps, "production_model", production_model)
    monkeypatch.setattr(steps, "reference_data", lambda settings, tags: reference)
    monkeypatch.setattr(registry, "get_experiment", lambda name=None, settings=None, client=None: stand.experiment)
    monkeypatch.setattr(
        steps, "evidently_project", lambda settings, scenario: real_project(settings, scenario, stand.workspace)
    )
    return stand


def test_a_shadow_experiment_window_compares_the_candidate_with_production(trained, stand):
    from mlops_sandbox.monitor.steps import run_window

    _, model, _ = trained
    start, end = stand.start, stand.start + timedelta(minutes=5)
    stand.experiment |= {"mode": "shadow", "candidate_version": "2", "set_at": (start - timedelta(hours=1)).isoformat()}
    better = lambda f: f["price"] * 1.02  # noqa: E731 - the candidate errs by 2 %: far better than the linear model
    earlier, earlier_actuals = experiment_lines(
        generate_batch("house_prices", 6, T0, 80), model, start - timedelta(minutes=30), "old", better
    )
    now, now_actuals = experiment_lines(generate_batch("house_prices", 7, T0, 120), model, start, "new", better)
    stand.put("predictions", start - timedelta(minutes=30), earlier)
    stand.put("actuals", start - timedelta(minutes=29), earlier_actuals)
    stand.put("predictions", start, now)
    stand.put("actuals", start + timedelta(minutes=1), now_actuals)

    status = run_window(stand.settings, "house_prices", start, end)

    assert status["figures"]["rows"] == status["figures"]["labelled_rows"] == 120  # production's lines only
    assert status["figures"]["model_versions_seen"] == ["1"]
    assert status["excluded_rows"] | {"reason": None} == {
        "total": 120,
        "shadow": 120,
        "candidate_answered": 0,
        "reason": None,
    }
    key = f"house_prices/experiments/v2/{end:%Y%m%dT%H%M%SZ}.json"
    assert status["experiment"]["key"] == key and status["experiment"]["verdict"] == "better"
    assert status["experiment"]["mode"] == "shadow" and "better" in status["experiment"]["summary"]
    written = json.loads(stand.s3.objects[key])
    assert (written["candidate_version"], written["production_version"], written["mode"]) == ("2", "1", "shadow")
    assert written["comparison"]["labelled"] == 200 and written["window"]["comparison"]["labelled"] == 120
    assert written["since"] == (start - timedelta(hours=1)).isoformat() and written["until"] == end.isoformat()
    assert written["verdict"] == written["window"]["verdict"] == "better"
    assert written["variants"]["candidate"]["versions"] == ["2"] and written["variants"]["production"]["rows"] == 200

    # Evidently: production's two snapshots and one per variant, and the dashboard plots the variants
    project = stand.workspace.search_project("house_prices monitoring")[0]
    runs = {i: stand.workspace.get_run(project.id, i) for i in status["evidently_snapshots"]}
    tags = sorted(tuple(run.tags) for run in runs.values())
    assert tags == [("drift",), ("experiment", "candidate"), ("experiment", "production"), ("performance",)]
    candidate_run = next(run for run in runs.values() if "candidate" in run.tags)
    assert candidate_run.metadata == {"variant": "candidate", "version": "2", "mode": "shadow"}
    panels = {p.title: p for p in stand.workspace.get_dashboard(project.id).panels}
    assert [s.tags for s in panels["MAE by variant"].values] == [
        ["experiment", "production"],
        ["experiment", "candidate"],
    ]
    assert panels["MAE on predictions with actuals"].values[0].tags == ["performance"]

    again = run_window(stand.settings, "house_prices", start, end)  # a rerun replaces, adds nothing
    assert len(stand.workspace.list_runs(project.id)) == 4 and again["experiment"]["key"] == key
    assert [k for k in stand.s3.objects if "/experiments/" in k] == [key]


def test_candidate_lines_without_a_running_experiment_are_compared_as_ab(trained, stand):
    from mlops_sandbox.monitor.steps import run_window

    _, model, _ = trained
    start, end = stand.start, stand.start + timedelta(minutes=5)
    lines, actuals = experiment_lines(
        generate_batch("house_prices", 8, T0, 90), model, start, "ab", answered_by_candidate=range(0, 90, 3)
    )
    stand.put("predictions", start, lines)
    stand.put("actuals", start + timedelta(minutes=1), actuals)

    status = run_window(stand.settings, "house_prices", start, end)

    assert status["figures"]["rows"] == 60 and status["excluded_rows"]["candidate_answered"] == 30
    experiment = status["experiment"]
    assert (experiment["mode"], experiment["candidate_version"]) == ("ab", "2")
    assert experiment["verdict"] == "not_enough_data"  # 30 candidate rows, 50 needed
    written = json.loads(stand.s3.objects[experiment["key"]])
    assert written["variants"]["candidate"]["labelled"] == 30 and written["variants"]["production"]["labelled"] == 60
    assert written["since"] == start.isoformat()  # from the candidate's first line


def test_no_experiment_and_no_candidate_lines_writes_no_comparison(trained, stand):
    from mlops_sandbox.monitor.steps import run_window

    _, model, _ = trained
    lines, _ = experiment_lines(generate_batch("house_prices", 9, T0, 40), model, stand.start)
    stand.put("predictions", stand.start, lines)
    status = run_window(stand.settings, "house_prices", stand.start, stand.start + timedelta(minutes=5))
    assert "experiment" not in status and status["excluded_rows"]["total"] == 0 and status["figures"]["rows"] == 40
    assert not [k for k in stand.s3.objects if "/experiments/" in k]


def test_a_project_made_before_experiments_gets_the_variant_panel_once(tmp_path):
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import line_plot_panel
    from evidently.ui.workspace import Workspace

    from mlops_sandbox.monitor.steps import evidently_project

    workspace = Workspace(str(tmp_path))
    old = workspace.create_project("house_prices monitoring")
    old.dashboard.add_panel(
        line_plot_panel(
            title="MAE on predictions with actuals",
            values=[PanelMetric(legend="MAE", metric="MAE", metric_labels={"value_type": "mean"})],
        )
    )
    settings = Settings(_env_file=None)
    for _ in range(2):
        _, project = evidently_project(settings, "house_prices", workspace)
        assert project.id == old.id
    panels = workspace.get_dashboard(old.id).panels
    assert [p.title for p in panels] == ["MAE on predictions with actuals", "MAE by variant"]
    assert panels[0].values[0].tags == ["performance"]


def test_each_row_of_a_batch_request_is_labelled_by_its_own_actual(trained, stand):
    """A batch request is one request id with many rows: each row's actual names its row, and the window's
    MAE is computed row by row (an actual without `row` labels row 0 only, not every row of the batch)."""
    from mlops_sandbox.monitor.steps import run_window

    _, model, _ = trained
    start, end = stand.start, stand.start + timedelta(minutes=5)
    frame = generate_batch("house_prices", 8, T0, 40)
    inputs = [row["inputs"] for row in log_rows(frame, start)]
    predicted = [float(p) for p in model.predict(frame)]
    batch = prediction_log_records("batch-1", "house-prices", "1", inputs, predicted, 3.0, start + timedelta(seconds=5))
    truth = [float(p) for p in frame["price"]]
    stand.put("predictions", start, batch)
    later = start + timedelta(minutes=1)
    stand.put("actuals", later, [actual_record("batch-1", truth[i], later, row=i) for i in range(40)])

    status = run_window(stand.settings, "house_prices", start, end)

    assert status["figures"]["rows"] == status["figures"]["labelled_rows"] == 40
    expected = sum(abs(p - t) for p, t in zip(predicted, truth, strict=True)) / 40
    assert status["figures"]["mae"] == pytest.approx(expected)


def test_actuals_are_keyed_by_request_and_row_and_bad_rows_are_skipped():
    lines = [
        {"request_id": "r", "row": 0, "actual": 1.0, "observed_at": "x"},
        {"request_id": "r", "row": 1, "actual": 2.0, "observed_at": "x"},
        {"request_id": "s", "actual": 3.0, "observed_at": "x"},  # no row: row 0
        {"request_id": "r", "row": 1, "actual": 2.5, "observed_at": "x"},  # the later one wins
        {"request_id": "r", "row": -1, "actual": 9.0, "observed_at": "x"},
        {"request_id": "r", "row": "2", "actual": 9.0, "observed_at": "x"},
        {"request_id": "r", "row": True, "actual": 9.0, "observed_at": "x"},
    ]
    frame = actuals_frame([to_jsonl(lines)])
    assert sorted(frame.itertuples(index=False, name=None)) == [("r", 0, 1.0), ("r", 1, 2.5), ("s", 0, 3.0)]


def test_a_window_is_judged_against_the_version_that_served_it_not_todays(trained, stand):
    """A rerun of an old window, after production moved on to v2: v1 answered it, so v1's test MAE is the
    baseline (v2's, twice as large here, would hide v1's decay)."""
    from mlops_sandbox.monitor.steps import run_window

    _, model, baseline_mae = trained
    start, end = stand.start, stand.start + timedelta(minutes=5)
    lines, actuals = experiment_lines(generate_batch("house_prices", 9, T0, 60), model, start, "old")
    stand.put("predictions", start, lines)
    stand.put("actuals", start + timedelta(minutes=1), actuals)
    stand.production = "2"

    status = run_window(stand.settings, "house_prices", start, end)

    assert stand.judged == ["1"] and status["model"]["version"] == "1"
    assert status["figures"]["baseline_mae"] == pytest.approx(baseline_mae)
    assert status["figures"]["model_versions_seen"] == ["1"]


def test_a_rerun_that_fails_midway_leaves_the_earlier_snapshots_of_the_window(trained, stand, monkeypatch):
    from mlops_sandbox.monitor.steps import run_window

    _, model, _ = trained
    start, end = stand.start, stand.start + timedelta(minutes=5)
    lines, actuals = experiment_lines(generate_batch("house_prices", 10, T0, 60), model, start, "w")
    stand.put("predictions", start, lines)
    stand.put("actuals", start + timedelta(minutes=1), actuals)
    first = run_window(stand.settings, "house_prices", start, end)
    (project,) = stand.workspace.list_projects()

    def snapshot_ids():
        return {str(s) for s in stand.workspace.list_runs(project.id)}

    assert snapshot_ids() == set(first["evidently_snapshots"]) and len(snapshot_ids()) >= 2
    add_run, added = stand.workspace.add_run, []

    def fails_on_the_second(*args, **kwargs):
        if added:
            raise OSError("disk full")
        added.append(add_run(*args, **kwargs))
        return added[-1]

    monkeypatch.setattr(stand.workspace, "add_run", fails_on_the_second)
    with pytest.raises(OSError, match="disk full"):
        run_window(stand.settings, "house_prices", start, end)
    assert snapshot_ids() == set(first["evidently_snapshots"])  # the earlier run's, and none half-added


def test_scheduled_runs_check_every_window_since_the_last_one_up_to_the_watermark(trained, stand):
    """Ticks that never ran (the stack was down for 20 minutes) are caught up, window by window, so every
    captured row is counted in one window's figures; rows newer than the allowed lateness wait for the next
    run; and a gap longer than the catch-up limit is reported, not silently skipped."""
    from mlops_sandbox.monitor.steps import catch_up

    _, model, _ = trained
    t0 = stand.start
    first = catch_up(stand.settings, "house_prices", t0, window_minutes=5, lateness_seconds=60)
    assert len(first["windows"]) == 1 and first["window_end"] == (t0 - timedelta(seconds=60)).isoformat()

    frame = generate_batch("house_prices", 11, T0, 25 * 60)
    lines = log_rows(frame, t0 - timedelta(seconds=60))  # one a second, from the first run's watermark on
    stand.put("predictions", t0, lines)
    later = catch_up(stand.settings, "house_prices", t0 + timedelta(minutes=21), window_minutes=5, lateness_seconds=60)

    starts = [w["window_start"] for w in later["windows"]]
    ends = [w["window_end"] for w in later["windows"]]
    assert starts[0] == first["window_end"] and starts[1:] == ends[:-1]  # contiguous, from where it stopped
    assert ends[-1] == (t0 + timedelta(minutes=20)).isoformat() and len(later["windows"]) == 5
    assert later["rows"] == 21 * 60  # each row up to the watermark, once
    assert later["not_monitored"] is None

    rest = catch_up(stand.settings, "house_prices", t0 + timedelta(minutes=25), window_minutes=5, lateness_seconds=60)
    assert rest["window_start"] == ends[-1] and rest["rows"] == 4 * 60  # the rows that were too new last time

    settings = stand.settings.model_copy(update={"monitoring_max_catch_up_windows": 2})
    gap = catch_up(settings, "house_prices", t0 + timedelta(hours=3), window_minutes=5, lateness_seconds=60)
    assert len(gap["windows"]) == 2 and gap["not_monitored"]["from"] == rest["window_end"]
    assert "MONITORING_MAX_CATCH_UP_WINDOWS=2" in gap["not_monitored"]["why"]


def test_a_catch_up_that_failed_midway_reports_its_decay_next_time_and_a_rerun_checks_its_windows_again(
    trained, stand, monkeypatch
):
    from mlops_sandbox.monitor import steps

    t0 = stand.start
    stand.put("predictions", t0, log_rows(generate_batch("house_prices", 12, T0, 26 * 60), t0 - timedelta(minutes=1)))
    every_window_decays = DecayRule(max_drift_share=0.0, max_mae_increase=0.25)  # any drift share >= 0
    steps.catch_up(stand.settings, "house_prices", t0, 5, 0, every_window_decays)
    real_run_window, calls = steps.run_window, []

    def fails_on_the_third(*args):
        calls.append(args[2])
        if len(calls) == 3:
            raise OSError("MinIO went away")
        return real_run_window(*args)

    monkeypatch.setattr(steps, "run_window", fails_on_the_third)
    with pytest.raises(OSError):
        steps.catch_up(stand.settings, "house_prices", t0 + timedelta(minutes=20), 5, 0, every_window_decays)
    monkeypatch.setattr(steps, "run_window", real_run_window)

    later = steps.catch_up(stand.settings, "house_prices", t0 + timedelta(minutes=25), 5, 0, every_window_decays)
    starts = [w["window_start"] for w in later["windows"]]
    assert starts[:2] == [c.isoformat() for c in calls[:2]]  # the failed run's two checked windows are in it
    assert len(starts) == 5 and later["window_end"] == (t0 + timedelta(minutes=25)).isoformat()
    assert later["decay"] and sum(w["decay"] for w in later["windows"]) == 5

    again = steps.catch_up(stand.settings, "house_prices", t0 + timedelta(minutes=25), 5, 0, every_window_decays)
    assert [w["window_start"] for w in again["windows"]] == starts and again["decay"]  # a cleared run: the same


def test_actuals_stored_after_their_window_was_checked_get_it_checked_again_by_the_next_run(trained, stand):
    """Ground truth that comes later than the allowed lateness: the windows it labels were checked without it.
    The next scheduled run checks those windows again (and only those), so their rows are labelled and their
    MAE is known; a window past MONITORING_RECHECK_HOURS is not checked again."""
    from mlops_sandbox.contracts import checkpoint_key, window_key
    from mlops_sandbox.monitor import steps

    _, model, _ = trained
    t0 = stand.start  # three hours ago
    steps.catch_up(stand.settings, "house_prices", t0, 5, 60)
    frame = generate_batch("house_prices", 13, T0, 20 * 60)
    lines = log_rows(frame, t0 - timedelta(seconds=60))
    for line, prediction in zip(lines, model.predict(frame), strict=True):
        line["prediction"] = float(prediction)
    stand.put("predictions", t0, lines)
    checked = steps.catch_up(stand.settings, "house_prices", t0 + timedelta(minutes=15), 5, 60)
    assert [w["labelled_rows"] for w in checked["windows"]] == [0, 0, 0]  # no actual yet: no MAE
    assert checked["rechecked"] == []
    second = checked["windows"][1]
    in_second = [
        (line, truth)
        for line, truth in zip(lines, frame["price"], strict=True)
        if second["window_start"] <= line["timestamp"].replace("Z", "+00:00") < second["window_end"]
    ]
    assert len(in_second) == 300
    published = t0 + timedelta(minutes=30)
    stand.put("actuals", published, [actual_record(line["request_id"], float(t), published) for line, t in in_second])

    later = steps.catch_up(stand.settings, "house_prices", t0 + timedelta(minutes=20), 5, 60)

    assert [w["window_start"] for w in later["rechecked"]] == [second["window_start"]]
    assert later["rechecked"][0]["labelled_rows"] == 300 and later["rechecked"][0]["mae"] > 0
    assert later["rows"] == 5 * 60  # the new window's rows: a window checked again is not counted twice
    status = json.loads(stand.s3.objects[window_key("house_prices", datetime.fromisoformat(second["window_start"]))])
    assert status["figures"]["labelled_rows"] == 300
    checkpoint = json.loads(stand.s3.objects[checkpoint_key("house_prices")])
    still = [w["window_start"] for w in checkpoint["unlabelled"]]
    assert second["window_start"] not in still and len(still) == 3  # the two others and the new one

    again = steps.catch_up(stand.settings, "house_prices", t0 + timedelta(minutes=25), 5, 60)
    assert again["rechecked"] == []  # nothing new came: nothing is checked twice for the same actuals

    stand.put("actuals", published, [actual_record(f"r{i}", 1.0, published) for i in range(len(lines))], "b")
    settings = stand.settings.model_copy(update={"monitoring_recheck_hours": 2})
    past = steps.catch_up(settings, "house_prices", t0 + timedelta(minutes=30), 5, 60)
    assert past["rechecked"] == []  # those windows ended about three hours ago
    assert json.loads(stand.s3.objects[checkpoint_key("house_prices")])["unlabelled"] == []


def test_a_window_checked_again_for_late_actuals_reports_its_decay(trained, stand):
    from mlops_sandbox.monitor import steps

    t0 = stand.start
    every_window_decays = DecayRule(max_drift_share=0.0, max_mae_increase=0.25)
    steps.catch_up(stand.settings, "house_prices", t0, 5, 0)
    frame = generate_batch("house_prices", 14, T0, 5 * 60)
    lines = log_rows(frame, t0)
    stand.put("predictions", t0, lines)
    first = steps.catch_up(stand.settings, "house_prices", t0 + timedelta(minutes=5), 5, 0)
    assert not first["decay"] and first["windows"][0]["labelled_rows"] == 0
    published = t0 + timedelta(minutes=40)
    stand.put("actuals", published, [actual_record(line["request_id"], 1e7, published) for line in lines])

    later = steps.catch_up(stand.settings, "house_prices", t0 + timedelta(minutes=10), 5, 0, every_window_decays)

    assert later["decay"] and [w["window_start"] for w in later["rechecked"]] == [first["window_start"]]
    assert any(r.startswith(f"{first['window_start']} (late actuals): ") for r in later["reasons"])


def test_a_late_decay_of_a_version_no_longer_in_production_is_shown_but_not_the_run_s(trained, stand):
    """Auto-retrain retrains today's production: the decay a re-check finds in a window that v1 answered,
    after v2 took over, is in `rechecked`, not in the run's verdict."""
    from mlops_sandbox.monitor import steps

    t0 = stand.start
    every_window_decays = DecayRule(max_drift_share=0.0, max_mae_increase=0.25)
    steps.catch_up(stand.settings, "house_prices", t0, 5, 0)
    lines = log_rows(generate_batch("house_prices", 19, T0, 5 * 60), t0)
    stand.put("predictions", t0, lines)
    first = steps.catch_up(stand.settings, "house_prices", t0 + timedelta(minutes=5), 5, 0)
    published = t0 + timedelta(minutes=40)
    stand.put("actuals", published, [actual_record(line["request_id"], 1e7, published) for line in lines])
    stand.production = "2"

    later = steps.catch_up(stand.settings, "house_prices", t0 + timedelta(minutes=10), 5, 0, every_window_decays)

    (again,) = later["rechecked"]
    assert again["window_start"] == first["window_start"] and again["decay"] and again["model_version"] == "1"
    assert not any("(late actuals)" in r for r in later["reasons"])


def _three_unlabelled_windows(stand, model, seed):
    """Three checked windows of house sales with no actual yet (5 min each, from `stand.start`): their lines
    (predicted by `model`), true prices and summaries."""
    from mlops_sandbox.monitor import steps

    t0 = stand.start
    steps.catch_up(stand.settings, "house_prices", t0, 5, 0)
    frame = generate_batch("house_prices", seed, T0, 15 * 60)
    lines = log_rows(frame, t0)
    for line, prediction in zip(lines, model.predict(frame), strict=True):
        line["prediction"] = float(prediction)
    stand.put("predictions", t0, lines)
    checked = steps.catch_up(stand.settings, "house_prices", t0 + timedelta(minutes=15), 5, 0)
    assert [w["labelled_rows"] for w in checked["windows"]] == [0, 0, 0]
    return lines, list(frame["price"]), checked["windows"]


def _label(stand, lines, truth, window, name, scale=1.0):
    published = stand.start + timedelta(minutes=40)
    labels = [
        actual_record(line["request_id"], float(t) * scale, published)
        for line, t in zip(lines, truth, strict=True)
        if window["window_start"] <= line["timestamp"].replace("Z", "+00:00") < window["window_end"]
    ]
    stand.put("actuals", published, labels, name)


def test_late_actuals_are_checked_a_few_windows_a_run_and_a_failed_check_is_tried_again(trained, stand, monkeypatch):
    """A day of actuals at once must not make one run check every window: at most RECHECKS_PER_RUN a run,
    the rest stay due (the next run checks them without the files being stored again). A window whose check
    fails does not fail the run: it and the ones after it are checked by the next runs."""
    from mlops_sandbox.monitor import steps

    _, model, _ = trained
    lines, truth, windows = _three_unlabelled_windows(stand, model, 15)
    for i, window in enumerate(windows):
        _label(stand, lines, truth, window, f"w{i}")
    monkeypatch.setattr(steps, "RECHECKS_PER_RUN", 2)
    real_run_window = steps.run_window

    def fails_on_the_first_window(settings, scenario, start, end, rule=None):
        if start.isoformat() == windows[0]["window_start"]:
            raise OSError("Evidently went away")
        return real_run_window(settings, scenario, start, end, rule)

    monkeypatch.setattr(steps, "run_window", fails_on_the_first_window)
    t = stand.start + timedelta(minutes=20)
    first = steps.catch_up(stand.settings, "house_prices", t, 5, 0)
    assert [f["window_start"] for f in first["recheck_failed"]] == [windows[0]["window_start"]]
    assert "Evidently went away" in first["recheck_failed"][0]["error"]
    assert first["rechecked"] == []  # the next ones would most likely fail the same way: left for the next run
    assert len(first["windows"]) == 1  # this run's own window was checked

    monkeypatch.setattr(steps, "run_window", real_run_window)
    second = steps.catch_up(stand.settings, "house_prices", t + timedelta(minutes=5), 5, 0)
    third = steps.catch_up(stand.settings, "house_prices", t + timedelta(minutes=10), 5, 0)
    assert [w["window_start"] for w in second["rechecked"]] == [w["window_start"] for w in windows[:2]]
    assert [w["window_start"] for w in third["rechecked"]] == [windows[2]["window_start"]]
    assert all(w["labelled_rows"] == w["rows"] == 300 for w in second["rechecked"] + third["rechecked"])


def test_actuals_a_check_already_counted_do_not_get_the_window_checked_again(trained, stand):
    """Actuals stored before a run checks a window are in that check: neither that run nor the next checks the
    window again for them; the window stays listed (half its rows still have no actual) until more come."""
    from mlops_sandbox.contracts import checkpoint_key
    from mlops_sandbox.monitor import steps

    t0 = stand.start
    steps.catch_up(stand.settings, "house_prices", t0, 5, 0)
    frame = generate_batch("house_prices", 16, T0, 5 * 60)
    lines = log_rows(frame, t0)
    stand.put("predictions", t0, lines)
    half = [actual_record(line["request_id"], float(p), t0) for line, p in zip(lines, frame["price"], strict=True)]
    stand.put("actuals", t0 + timedelta(minutes=1), half[:150])
    key = log_key("house_prices", "actuals", t0 + timedelta(minutes=1), "a")
    stand.s3.stored[key] = datetime.now(UTC) - timedelta(minutes=1)  # stored a minute before the check

    checked = steps.catch_up(stand.settings, "house_prices", t0 + timedelta(minutes=5), 5, 0)
    later = steps.catch_up(stand.settings, "house_prices", t0 + timedelta(minutes=10), 5, 0)

    assert checked["windows"][0]["labelled_rows"] == 150 and checked["rechecked"] == later["rechecked"] == []
    (entry,) = json.loads(stand.s3.objects[checkpoint_key("house_prices")])["unlabelled"]
    assert entry["window_start"] == checked["windows"][0]["window_start"] and not entry.get("due")


def test_actuals_stored_while_a_run_went_on_are_seen_by_the_next_run(trained, stand, monkeypatch):
    """The run that checks a window lists late actuals when it ends: those stored between the window's check
    and that listing belong to no check yet, and the next run must see them."""
    from mlops_sandbox.contracts import checkpoint_key
    from mlops_sandbox.monitor import steps

    monkeypatch.setattr(steps, "LATE_MARGIN", timedelta(0))  # times to the millisecond: a clock shared with S3
    t0 = stand.start
    steps.catch_up(stand.settings, "house_prices", t0, 5, 0)
    frame = generate_batch("house_prices", 18, T0, 10 * 60)
    lines = log_rows(frame, t0)
    stand.put("predictions", t0, lines[:300])
    steps.catch_up(stand.settings, "house_prices", t0 + timedelta(minutes=5), 5, 0)  # first window: waiting
    stand.put("predictions", t0 + timedelta(minutes=5), lines[300:], "b")
    second = steps.catch_up(stand.settings, "house_prices", t0 + timedelta(minutes=10), 5, 0)["windows"][0]
    read_at = next(
        datetime.fromisoformat(w["actuals_read_at"])
        for w in json.loads(stand.s3.objects[checkpoint_key("house_prices")])["unlabelled"]
        if w["window_start"] == second["window_start"]
    )
    published = t0 + timedelta(minutes=11)
    truth = [
        actual_record(line["request_id"], float(p), published) for line, p in zip(lines, frame["price"], strict=True)
    ]
    stand.put("actuals", published, truth[300:], "late")
    # right after the window's check, before the run listed late actuals for its earlier windows
    stand.s3.stored[log_key("house_prices", "actuals", published, "late")] = read_at + timedelta(milliseconds=1)

    later = steps.catch_up(stand.settings, "house_prices", t0 + timedelta(minutes=15), 5, 0)

    assert [w["window_start"] for w in later["rechecked"]] == [second["window_start"]]
    assert later["rechecked"][0]["labelled_rows"] == 300


def test_a_window_that_had_decayed_is_not_reported_again_when_late_actuals_come(trained, stand):
    """Decay already reported (and maybe retrained on) is not reported a second time by the check its late
    actuals cause: the run's verdict stays clean, and the re-check says the window had decayed before."""
    from mlops_sandbox.monitor import steps

    _, model, _ = trained
    every_window_decays = DecayRule(max_drift_share=0.0, max_mae_increase=0.25)
    t0 = stand.start
    steps.catch_up(stand.settings, "house_prices", t0, 5, 0)
    frame = generate_batch("house_prices", 17, T0, 5 * 60)
    lines = log_rows(frame, t0)
    stand.put("predictions", t0, lines)
    checked = steps.catch_up(stand.settings, "house_prices", t0 + timedelta(minutes=5), 5, 0, every_window_decays)
    assert checked["decay"]
    _label(stand, lines, list(frame["price"]), checked["windows"][0], "late")

    later = steps.catch_up(stand.settings, "house_prices", t0 + timedelta(minutes=6), 5, 0, every_window_decays)

    (again,) = later["rechecked"]
    assert again["decay"] and again["decayed_before"] and again["labelled_rows"] == 300
    assert not later["decay"] and later["reasons"] == []


def test_late_actuals_that_cannot_be_listed_do_not_fail_the_run_and_are_listed_by_the_next(trained, stand, monkeypatch):
    from mlops_sandbox.monitor import steps

    _, model, _ = trained
    lines, truth, windows = _three_unlabelled_windows(stand, model, 20)
    _label(stand, lines, truth, windows[0], "late")
    real_load = steps.load_late_actuals

    def s3_away(*args, **kwargs):
        raise OSError("MinIO went away")

    monkeypatch.setattr(steps, "load_late_actuals", s3_away)
    t = stand.start + timedelta(minutes=20)
    first = steps.catch_up(stand.settings, "house_prices", t, 5, 0)
    assert len(first["windows"]) == 1 and first["rechecked"] == []  # its own window stands
    assert "late actuals not listed: MinIO went away" in first["recheck_failed"][0]["error"]

    monkeypatch.setattr(steps, "load_late_actuals", real_load)
    second = steps.catch_up(stand.settings, "house_prices", t + timedelta(minutes=5), 5, 0)
    assert [w["window_start"] for w in second["rechecked"]] == [windows[0]["window_start"]]
