"""The monitor's logic, without I/O: prediction logs and actuals to frames, Evidently's figures for a window,
the decay rule, and the status a window gets. `monitor.store` and `monitor.steps` do the reading and writing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mlops_sandbox.contracts import PREDICTION_LOG_REQUIRED
from mlops_sandbox.schema import Schema

if TYPE_CHECKING:
    from mlops_sandbox.config import Settings

# the prediction-log fields a window's frame keeps, besides the inputs flattened into one column each
LOGGED_COLUMNS = tuple(f for f in PREDICTION_LOG_REQUIRED if f != "inputs")


@dataclass(frozen=True)
class DecayRule:
    """Decay when the share of drifted features reaches `max_drift_share`, or when MAE on labelled
    predictions exceeds the model's test MAE by more than `max_mae_increase` (0.25: 25 % worse).

    The two limits have no defaults here: they are settings (DECAY_MAX_DRIFT_SHARE, DECAY_MAX_MAE_INCREASE),
    and `from_settings` is the one place that reads them.
    """

    max_drift_share: float
    max_mae_increase: float
    min_rows: int = 30  # fewer predictions than this: too little to judge drift
    min_labelled: int = 20  # fewer actuals than this: too little to judge performance

    @classmethod
    def from_settings(cls, settings: Settings, **overrides) -> DecayRule:
        """The rule the stack is configured with; `overrides` that are not None replace its fields."""
        values = {
            "max_drift_share": settings.decay_max_drift_share,
            "max_mae_increase": settings.decay_max_mae_increase,
        }
        return cls(**(values | {k: v for k, v in overrides.items() if v is not None}))

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


def parse_prediction_log(body: bytes, schema: Schema) -> pd.DataFrame:
    """One log file as a frame (one row per prediction, inputs flattened). Raises ValueError with the
    reason when the file is corrupt or off-schema: the caller quarantines it."""
    try:
        lines = [json.loads(line) for line in body.decode("utf-8").splitlines() if line.strip()]
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"not JSON Lines: {err}") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not isinstance(line, dict) or any(f not in line for f in PREDICTION_LOG_REQUIRED):
            raise ValueError(f"line {number}: missing fields {[f for f in PREDICTION_LOG_REQUIRED if f not in line]}")
        inputs = line["inputs"]
        if not isinstance(inputs, dict) or set(schema.feature_names) - set(inputs):
            raise ValueError(f"line {number}: inputs do not match scenario '{schema.name}'")
        rows.append({**{f: line[f] for f in LOGGED_COLUMNS}, **inputs})
    frame = pd.DataFrame(rows)
    try:
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
        frame["prediction"] = frame["prediction"].astype(float)
        for column in schema.numeric_features:
            frame[column] = frame[column].astype(float)
    except (ValueError, TypeError) as err:
        raise ValueError(f"bad values: {err}") from None
    return frame


def window_predictions(frames: list[pd.DataFrame], schema: Schema, start: datetime, end: datetime) -> pd.DataFrame:
    """The parsed log files of a window as one frame: the predictions timed in [start, end), each once (a
    retried upload can log a request twice), in time order."""
    if not frames:
        return pd.DataFrame(columns=[*LOGGED_COLUMNS, *schema.feature_names])
    frame = pd.concat(frames, ignore_index=True)
    frame = frame[(frame["timestamp"] >= pd.Timestamp(start)) & (frame["timestamp"] < pd.Timestamp(end))]
    frame = frame.drop_duplicates(["request_id", "row"]).sort_values(["timestamp", "request_id", "row"])
    return frame.reset_index(drop=True)


def actuals_frame(bodies: Iterable[bytes]) -> pd.DataFrame:
    """Actuals files (oldest first) as `request_id`, `actual`; the last one of a request wins, bad lines are
    skipped (a bad actual is not fatal)."""
    rows = []
    for body in bodies:
        for line in body.decode().splitlines():
            try:
                item = json.loads(line)
                rows.append({"request_id": str(item["request_id"]), "actual": float(item["actual"])})
            except (ValueError, KeyError, TypeError):
                continue
    frame = pd.DataFrame(rows, columns=["request_id", "actual"])
    return frame.drop_duplicates("request_id", keep="last")


def column_drift(drift_report: dict) -> dict[str, dict]:
    """Per feature, Evidently's drift verdict, from the `dict()` of a run with `DataDriftPreset` and tests:
    `{"method", "score", "threshold", "drifted"}`.

    Evidently 0.7 picks the method per column: with a reference of more than 1,000 rows, Wasserstein
    distance (normed) for numbers and Jensen-Shannon distance for categories (and numbers with at most 5
    values); with a smaller one, statistical tests (K-S for numbers, chi-square or Z-test for categories).
    So `score` is a distance (drift when at or above `threshold`, 0.1 by default) or a p-value (drift when
    below it, 0.05 by default), as `method` says; `drifted` is Evidently's own verdict.
    """
    verdicts = {
        test["metric_config"]["metric_id"]: str(getattr(test["status"], "value", test["status"]))
        for test in drift_report.get("tests", [])
    }
    columns = {}
    for metric in drift_report["metrics"]:
        config = metric["config"]
        if not config["type"].endswith("ValueDrift"):
            continue
        verdict = verdicts.get(metric["id"])
        columns[config["column"]] = {
            "method": config.get("method"),
            "score": float(metric["value"]),
            "threshold": config.get("threshold"),
            "drifted": None if verdict is None else verdict == "FAIL",
        }
    return columns


def column_drift_of(status: dict) -> dict[str, dict]:
    """The per-feature drift of a window's status (see `column_drift`), empty when it has none. A status
    written before the methods were recorded (`column_p_values`) gives its scores with method, threshold and
    verdict unknown (None)."""
    figures = status.get("figures", status)
    if "column_drift" in figures:
        return figures["column_drift"]
    return {
        column: {"method": None, "score": score, "threshold": None, "drifted": None}
        for column, score in (figures.get("column_p_values") or {}).items()
    }


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
        result = drift.dict()
        for metric in result["metrics"]:
            if metric["config"]["type"].endswith("DriftedColumnsCount"):
                figures["drift_share"] = float(metric["value"]["share"])
                figures["drifted_columns"] = int(metric["value"]["count"])
        figures["column_drift"] = column_drift(result)
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
