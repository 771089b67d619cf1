"""Monitoring (seed steps 11 and 20): captured predictions and late ground truth, checked with Evidently.

A run covers one time window. It reads the prediction logs whose timestamps fall in the window and the
actuals known so far for them, quarantines log files it cannot read, runs data drift against the
production model's training data (fetched through DVC) and regression performance where actuals exist,
applies the decay rule, and writes the figures. Reruns of a window overwrite its results: no duplicates.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from mlops_sandbox.schema import Schema
from mlops_sandbox.serve.capture import log_prefix
from mlops_sandbox.storage import list_keys

PREDICTION_FIELDS = ("request_id", "row", "timestamp", "model_name", "model_version", "inputs", "prediction")


@dataclass(frozen=True)
class DecayRule:
    """Decay when the share of drifted features reaches `max_drift_share`, or when MAE on labelled
    predictions exceeds the model's test MAE by more than `max_mae_increase` (0.25: 25 % worse)."""

    max_drift_share: float = 0.5
    max_mae_increase: float = 0.25
    min_rows: int = 30  # fewer predictions than this: too little to judge drift
    min_labelled: int = 20  # fewer actuals than this: too little to judge performance

    def check(self, figures: dict, baseline_mae: float | None) -> list[str]:
        """The reasons the figures show decay; empty when they do not."""
        reasons = []
        share = figures.get("drift_share")
        if share is not None and figures.get("rows", 0) >= self.min_rows and share >= self.max_drift_share:
            reasons.append(f"drift: {share:.0%} of features drifted (limit {self.max_drift_share:.0%})")
        mae = figures.get("mae")
        if (
            mae is not None
            and baseline_mae
            and figures.get("labelled_rows", 0) >= self.min_labelled
            and mae > baseline_mae * (1 + self.max_mae_increase)
        ):
            reasons.append(
                f"performance: MAE {mae:,.4g} is {mae / baseline_mae - 1:+.0%} against the model's test MAE "
                f"{baseline_mae:,.4g} (limit {self.max_mae_increase:+.0%})"
            )
        return reasons


@dataclass
class WindowData:
    predictions: pd.DataFrame
    quarantined: list[dict] = field(default_factory=list)  # {"key", "reason"}


def hour_prefixes(scenario: str, kind: str, start: datetime, end: datetime) -> list[str]:
    """The date/hour partitions that can hold records of [start, end)."""
    hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    prefixes = []
    while hour < end:
        prefixes.append(f"{log_prefix(scenario, kind)}date={hour:%Y-%m-%d}/hour={hour:%H}/")
        hour += timedelta(hours=1)
    return prefixes


def _keys(client, bucket: str, prefixes: list[str]) -> list[str]:
    return sorted(key for prefix in prefixes for key in list_keys(client, bucket, prefix))


def parse_prediction_log(body: bytes, schema: Schema) -> pd.DataFrame:
    """One log file as a frame (one row per prediction, inputs flattened). Raises ValueError with the
    reason when the file is corrupt or off-schema: the caller quarantines it."""
    try:
        lines = [json.loads(line) for line in body.decode("utf-8").splitlines() if line.strip()]
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"not JSON Lines: {err}") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not isinstance(line, dict) or any(f not in line for f in PREDICTION_FIELDS):
            raise ValueError(f"line {number}: missing fields {[f for f in PREDICTION_FIELDS if f not in line]}")
        inputs = line["inputs"]
        if not isinstance(inputs, dict) or set(schema.feature_names) - set(inputs):
            raise ValueError(f"line {number}: inputs do not match scenario '{schema.name}'")
        rows.append({**{f: line[f] for f in PREDICTION_FIELDS if f != "inputs"}, **inputs})
    frame = pd.DataFrame(rows)
    try:
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
        frame["prediction"] = frame["prediction"].astype(float)
        for column in schema.numeric_features:
            frame[column] = frame[column].astype(float)
    except (ValueError, TypeError) as err:
        raise ValueError(f"bad values: {err}") from None
    return frame


def load_predictions(client, bucket: str, schema: Schema, start: datetime, end: datetime) -> WindowData:
    """Every captured prediction with a timestamp in [start, end), once each; unreadable files quarantined."""
    frames, quarantined = [], []
    for key in _keys(client, bucket, hour_prefixes(schema.name, "predictions", start, end)):
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        try:
            frames.append(parse_prediction_log(body, schema))
        except ValueError as err:
            quarantined.append({"key": key, "reason": str(err)})
    if not frames:
        return WindowData(
            pd.DataFrame(columns=[*PREDICTION_FIELDS[:-2], "prediction", *schema.feature_names]), quarantined
        )
    frame = pd.concat(frames, ignore_index=True)
    frame = frame[(frame["timestamp"] >= pd.Timestamp(start)) & (frame["timestamp"] < pd.Timestamp(end))]
    frame = frame.drop_duplicates(["request_id", "row"]).sort_values(["timestamp", "request_id", "row"])
    return WindowData(frame.reset_index(drop=True), quarantined)


def load_actuals(client, bucket: str, scenario: str, since: datetime, until: datetime) -> pd.DataFrame:
    """Ground truth published in [since, until), by request id (last one wins)."""
    rows = []
    for key in _keys(client, bucket, hour_prefixes(scenario, "actuals", since, until)):
        for line in client.get_object(Bucket=bucket, Key=key)["Body"].read().decode().splitlines():
            try:
                item = json.loads(line)
                rows.append({"request_id": str(item["request_id"]), "actual": float(item["actual"])})
            except (ValueError, KeyError, TypeError):
                continue  # a bad actual is skipped, not fatal
    frame = pd.DataFrame(rows, columns=["request_id", "actual"])
    return frame.drop_duplicates("request_id", keep="last")


def figures_and_reports(
    reference: pd.DataFrame, current: pd.DataFrame, schema: Schema, timestamp: datetime | None = None
):
    """Evidently 0.7: data drift of the features against the reference, and regression performance on the
    rows that have an actual. Returns (figures, [snapshots]); snapshots are stamped with `timestamp`."""
    stamp = timestamp.astimezone(UTC).replace(tzinfo=None) if timestamp else None  # Evidently keeps naive UTC
    from evidently import DataDefinition, Dataset, Regression, Report
    from evidently.metrics import MAE, RMSE, RowCount
    from evidently.presets import DataDriftPreset

    features = schema.feature_names
    definition = DataDefinition(
        numerical_columns=schema.numeric_features, categorical_columns=schema.categorical_features
    )
    figures: dict = {"rows": int(len(current)), "labelled_rows": 0, "drift_share": None, "mae": None, "rmse": None}
    snapshots = []
    if len(current):
        drift = Report([DataDriftPreset(columns=features), RowCount()], include_tests=True).run(
            current_data=Dataset.from_pandas(current[features], data_definition=definition),
            reference_data=Dataset.from_pandas(reference[features], data_definition=definition),
            timestamp=stamp,
            tags=["drift"],
        )
        for metric in drift.dict()["metrics"]:
            if metric["config"]["type"].endswith("DriftedColumnsCount"):
                figures["drift_share"] = float(metric["value"]["share"])
                figures["drifted_columns"] = int(metric["value"]["count"])
            elif metric["config"]["type"].endswith("ValueDrift"):
                figures.setdefault("column_p_values", {})[metric["config"]["column"]] = float(metric["value"])
        snapshots.append(drift)
    labelled = current.dropna(subset=["actual"]) if "actual" in current else current.iloc[0:0]
    if len(labelled):
        perf_definition = DataDefinition(
            numerical_columns=["actual", "prediction"],
            regression=[Regression(target="actual", prediction="prediction")],
        )
        performance = Report([MAE(), RMSE(), RowCount()]).run(
            current_data=Dataset.from_pandas(labelled[["actual", "prediction"]], data_definition=perf_definition),
            timestamp=stamp,
            tags=["performance"],
        )
        errors = labelled["prediction"].to_numpy() - labelled["actual"].to_numpy()
        figures |= {
            "labelled_rows": int(len(labelled)),
            "mae": float(np.mean(np.abs(errors))),
            "rmse": float(np.sqrt(np.mean(errors**2))),
        }
        snapshots.append(performance)
    return figures, snapshots


def decay_report(current: pd.DataFrame, reasons: list[str], timestamp: datetime):
    """A snapshot that marks a decayed window in the Evidently project: tag `decay`, reasons as metadata."""
    from evidently import Report
    from evidently.metrics import RowCount

    return Report([RowCount()]).run(
        current_data=current[["prediction"]],
        timestamp=timestamp.astimezone(UTC).replace(tzinfo=None),
        tags=["decay"],
        # a string: Evidently 0.7.23's UI fails to list a project's snapshots (HTTP 500) when one of them
        # carries a list as a metadata value
        metadata={"reasons": "; ".join(reasons)},
        name="decay alert",
    )


def status_object(
    scenario: str,
    start: datetime,
    end: datetime,
    figures: dict,
    reasons: list[str],
    model: dict,
    quarantined: list[dict],
    rule: DecayRule,
) -> dict:
    return {
        "scenario": scenario,
        "window_start": start.isoformat(),
        "window_end": end.isoformat(),
        "checked_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "decay": bool(reasons),
        "reasons": reasons,
        "figures": figures,
        "model": model,
        "quarantined_files": quarantined,
        "rule": asdict(rule),
    }
