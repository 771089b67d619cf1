"""The monitor's logic, without I/O: prediction logs and actuals to frames, Evidently's figures for a window,
the decay rule, and the status a window gets. `monitor.store` and `monitor.steps` do the reading and writing.

A window can hold lines of a serving experiment (`contracts.PredictionLogRecord`): the candidate's shadow
predictions and, in A/B mode, rows the candidate answered. The production model's figures use only the rows
production answered (`production_answered`); the experiment's rows (`experiment_rows`) go to
`mlops_sandbox.experiment.compare`, and each variant gets its own Evidently snapshot (`experiment_reports`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mlops_sandbox.contracts import (
    ACTUAL_KEY,
    CANDIDATE_VARIANT,
    MODE_AB,
    MODE_OFF,
    MODE_SHADOW,
    PREDICTION_LOG_REQUIRED,
    PRODUCTION_VARIANT,
    VARIANTS,
)
from mlops_sandbox.schema import Schema

if TYPE_CHECKING:
    from mlops_sandbox.config import Settings

# the optional prediction-log fields a window's frame keeps, with the value of a line that lacks them (logs
# from before experiments have none of them but `latency_ms`)
OPTIONAL_DEFAULTS: dict = {
    "latency_ms": np.nan,
    "variant": PRODUCTION_VARIANT,
    "shadow": False,
    "production_version": None,
    "production_prediction": np.nan,
}
# the prediction-log fields a window's frame keeps, besides the inputs flattened into one column each
LOGGED_COLUMNS = (*(f for f in PREDICTION_LOG_REQUIRED if f != "inputs"), *OPTIONAL_DEFAULTS)
# a line is one prediction of one model: a request row can have two lines (production's and a shadow one)
LINE_IDENTITY = ["request_id", "row", "variant", "shadow"]
# the columns `mlops_sandbox.experiment.compare` reads
EXPERIMENT_COLUMNS = (
    "request_id",
    "row",
    "variant",
    "shadow",
    "model_version",
    "prediction",
    "actual",
    "latency_ms",
    "production_prediction",
    "production_version",
)
EXPERIMENT_TAG = "experiment"  # Evidently tag of the per-variant snapshots, beside the variant's name


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
        # a field that is absent or null takes its default
        record = {f: default if line.get(f) is None else line[f] for f, default in OPTIONAL_DEFAULTS.items()}
        if record["variant"] not in VARIANTS:
            raise ValueError(f"line {number}: unknown variant {record['variant']!r}; known: {VARIANTS}")
        if not isinstance(record["shadow"], bool):
            raise ValueError(f"line {number}: shadow is {record['shadow']!r}, not true or false")
        if record["shadow"] and record["variant"] != CANDIDATE_VARIANT:
            raise ValueError(f"line {number}: a shadow line must be the {CANDIDATE_VARIANT} variant's")
        rows.append({**{f: line[f] for f in LOGGED_COLUMNS if f not in OPTIONAL_DEFAULTS}, **record, **inputs})
    frame = pd.DataFrame(rows)
    try:
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
        frame["prediction"] = frame["prediction"].astype(float)
        frame["latency_ms"] = pd.to_numeric(frame["latency_ms"]).astype(float)
        frame["production_prediction"] = pd.to_numeric(frame["production_prediction"]).astype(float)
        frame["shadow"] = frame["shadow"].astype(bool)
        for column in schema.numeric_features:
            frame[column] = frame[column].astype(float)
    except (ValueError, TypeError) as err:
        raise ValueError(f"bad values: {err}") from None
    return frame


def window_predictions(frames: list[pd.DataFrame], schema: Schema, start: datetime, end: datetime) -> pd.DataFrame:
    """The parsed log files of a window as one frame: the predictions timed in [start, end), each line once (a
    retried upload can log a request twice; a shadow line is a line of its own), in time order."""
    if not frames:
        frame = pd.DataFrame(columns=[*LOGGED_COLUMNS, *schema.feature_names])
        return frame.astype({"shadow": bool, "latency_ms": float, "production_prediction": float})
    frame = pd.concat(frames, ignore_index=True)
    frame = frame[(frame["timestamp"] >= pd.Timestamp(start)) & (frame["timestamp"] < pd.Timestamp(end))]
    frame = frame.drop_duplicates(LINE_IDENTITY).sort_values(["timestamp", "request_id", "row", "shadow"])
    return frame.reset_index(drop=True)


def _line_kinds(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Which lines are the candidate's shadow predictions, and which rows the candidate answered (A/B)."""
    variant = frame["variant"] if "variant" in frame else pd.Series(PRODUCTION_VARIANT, index=frame.index)
    shadow = frame["shadow"].fillna(False).astype(bool) if "shadow" in frame else pd.Series(False, index=frame.index)
    return shadow, (variant == CANDIDATE_VARIANT) & ~shadow


def production_answered(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """The rows production answered, the ones its figures (drift, MAE, the decay rule) are about; and what was
    left out, and why: the candidate's shadow predictions (production answered those rows too: its own line is
    kept) and the rows the candidate answered in an A/B experiment."""
    shadow, candidate = _line_kinds(frame)
    excluded = {
        "total": int(shadow.sum() + candidate.sum()),
        "shadow": int(shadow.sum()),
        "candidate_answered": int(candidate.sum()),
        "reason": "production's figures cover only the rows production answered; the candidate's shadow lines "
        "and the rows it answered in an A/B experiment are compared in `experiment`",
    }
    return frame[~shadow & ~candidate].reset_index(drop=True), excluded


def served_version(answered: pd.DataFrame) -> str | None:
    """The production version that answered most of these rows (`production_answered`'s), None for none."""
    if not len(answered):
        return None
    counts = answered["model_version"].dropna().astype(str).value_counts()
    return str(counts.index[0]) if len(counts) else None


def has_candidate_lines(frame: pd.DataFrame) -> bool:
    """Whether the frame holds a line the candidate predicted (shadow or answered)."""
    return bool(len(frame)) and "variant" in frame and bool((frame["variant"] == CANDIDATE_VARIANT).any())


def experiment_mode(registered_mode: str | None, frame: pd.DataFrame) -> str:
    """The comparison's design: the registry's serving mode while an experiment is on; else what the lines say
    (shadow lines: shadow; candidate-answered rows only: A/B)."""
    if registered_mode in (MODE_SHADOW, MODE_AB):
        return registered_mode
    shadow, _ = _line_kinds(frame)
    return MODE_SHADOW if shadow.any() else MODE_AB


def candidate_version_of(frame: pd.DataFrame, registered: str | None = None) -> str | None:
    """The candidate version to compare: the registry's (`staging`) while an experiment is on, else that of the
    newest candidate line in the frame; None when there is neither."""
    if registered is not None:
        return str(registered)
    if not has_candidate_lines(frame):
        return None
    lines = frame[frame["variant"] == CANDIDATE_VARIANT].sort_values("timestamp")
    return str(lines["model_version"].iloc[-1])


def experiment_rows(frame: pd.DataFrame, candidate_version: str, production_version: str | None = None) -> pd.DataFrame:
    """The lines an experiment comparison reads (`EXPERIMENT_COLUMNS`, `actual` NaN when unlabelled): the rows
    production answered (only those of `production_version`, when given: the version the candidate is compared
    with), and the lines of candidate `candidate_version` (shadow or answered)."""
    shadow, candidate = _line_kinds(frame)
    versions = frame["model_version"].astype(str)
    of_candidate = (shadow | candidate) & (versions == str(candidate_version))
    of_production = ~shadow & ~candidate
    if production_version is not None:
        of_production &= versions == str(production_version)
        if "production_version" in frame:  # a shadow line pairs with the answer of one production version
            of_candidate &= ~shadow | (frame["production_version"].astype(str) == str(production_version))
    rows = frame[of_production | of_candidate].reindex(columns=EXPERIMENT_COLUMNS)
    return rows.astype({"shadow": bool}).reset_index(drop=True)


def experiment_object(
    cumulative: dict,
    window: dict,
    scenario: str,
    candidate_version: str,
    production_version: str | None,
    since: datetime,
    until: datetime,
) -> dict:
    """What the monitor writes to `contracts.experiment_key`: the comparison since the experiment was set
    (`since`, at most 7 days back, to `until`) with the window's own comparison under `window`."""
    return {
        **cumulative,
        "window": window,
        "scenario": scenario,
        "candidate_version": str(candidate_version),
        "production_version": None if production_version is None else str(production_version),
        "since": since.astimezone(UTC).isoformat(),
        "until": until.astimezone(UTC).isoformat(),
        "computed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def experiment_reports(rows: pd.DataFrame, mode: str, timestamp: datetime) -> list:
    """Evidently 0.7: per variant, the regression metrics of its labelled lines among `rows` (see
    `experiment_rows`), tagged `experiment` and the variant's name, its versions and the mode as metadata, so
    the project's "MAE by variant" panel plots both over time. A variant without labelled lines gets none."""
    if mode == MODE_OFF:
        raise ValueError("no experiment runs in mode 'off'")
    stamp = timestamp.astimezone(UTC).replace(tzinfo=None)
    snapshots = []
    for variant in VARIANTS:
        lines = rows[rows["variant"] == variant].dropna(subset=["actual", "prediction"])
        if not len(lines):
            continue
        versions = ",".join(sorted({str(v) for v in lines["model_version"].dropna()}))
        metadata = {"variant": variant, "version": versions, "mode": mode}  # strings only: see decay_report
        snapshots.append(
            _performance_report(lines, stamp, [EXPERIMENT_TAG, variant], metadata, f"experiment: {variant}")
        )
    return snapshots


def _performance_report(labelled: pd.DataFrame, stamp, tags: list[str], metadata: dict | None = None, name=None):
    """MAE, RMSE and the row count of labelled predictions: the report run_window's MAE panel plots."""
    from evidently import DataDefinition, Dataset, Regression, Report
    from evidently.metrics import MAE, RMSE, RowCount

    definition = DataDefinition(
        numerical_columns=["actual", "prediction"],
        regression=[Regression(target="actual", prediction="prediction")],
    )
    data = labelled[["actual", "prediction"]].astype(float)
    return Report([MAE(), RMSE(), RowCount()]).run(
        current_data=Dataset.from_pandas(data, data_definition=definition),
        timestamp=stamp,
        tags=tags,
        metadata=metadata or {},
        name=name,
    )


def actuals_frame(bodies: Iterable[bytes]) -> pd.DataFrame:
    """Actuals files (oldest first) as `request_id`, `row`, `actual`: one per predicted row (a line without
    `row` labels row 0). The last one of a row wins; bad lines are skipped (a bad actual is not fatal)."""
    rows = []
    for body in bodies:
        for line in body.decode().splitlines():
            try:
                item = json.loads(line)
                row = item.get("row", 0)
                if isinstance(row, bool) or not isinstance(row, int) or row < 0:
                    continue
                rows.append({"request_id": str(item["request_id"]), "row": row, "actual": float(item["actual"])})
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
    frame = pd.DataFrame(rows, columns=[*ACTUAL_KEY, "actual"]).astype({"row": "int64"})
    return frame.drop_duplicates(ACTUAL_KEY, keep="last")


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
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import RowCount
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
        performance = _performance_report(labelled, stamp, ["performance"])
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
    excluded: dict | None = None,
    experiment: dict | None = None,
) -> dict:
    """A window's status: production's figures and decay verdict; the lines left out of them (`excluded_rows`,
    see `production_answered`) and, when the window belongs to a serving experiment, its short verdict."""
    status = {
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
    if excluded is not None:
        status["excluded_rows"] = excluded
    if experiment is not None:
        status["experiment"] = experiment
    return status
