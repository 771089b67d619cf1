"""The monitor's S3 I/O: captured predictions and actuals in, a window's status, alert, experiment comparison
and quarantined files out. Key layouts come from `mlops_sandbox.contracts`; what is done with the data, from
`monitor.checks`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pandas as pd

from mlops_sandbox.contracts import (
    ACTUAL_KEY,
    ACTUALS,
    PREDICTIONS,
    alert_key,
    experiment_key,
    log_hour_prefixes,
    quarantine_reason_key,
    quarantined_log_key,
    status_key,
    window_key,
)
from mlops_sandbox.monitor.checks import actuals_frame, parse_prediction_log, window_predictions
from mlops_sandbox.schema import Schema
from mlops_sandbox.storage import get_json, list_keys, list_objects, put_json

log = logging.getLogger(__name__)


@dataclass
class WindowData:
    predictions: pd.DataFrame
    quarantined: list[dict] = field(default_factory=list)  # {"key", "reason"}


def _keys(client, bucket: str, prefixes: list[str]) -> list[str]:
    return sorted(key for prefix in prefixes for key in list_keys(client, bucket, prefix))


def _read(client, bucket: str, key: str) -> bytes:
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def load_predictions(client, bucket: str, schema: Schema, start: datetime, end: datetime) -> WindowData:
    """Every captured prediction with a timestamp in [start, end), once each; unreadable files quarantined."""
    frames, quarantined = [], []
    for key in _keys(client, bucket, log_hour_prefixes(schema.name, PREDICTIONS, start, end)):
        try:
            frames.append(parse_prediction_log(_read(client, bucket, key), schema))
        except ValueError as err:
            quarantined.append({"key": key, "reason": str(err)})
    return WindowData(window_predictions(frames, schema, start, end), quarantined)


def load_actuals(client, bucket: str, scenario: str, since: datetime, until: datetime) -> pd.DataFrame:
    """Ground truth published in [since, until), by request id (last one wins)."""
    keys = _keys(client, bucket, log_hour_prefixes(scenario, ACTUALS, since, until))
    return actuals_frame(_read(client, bucket, key) for key in keys)


def load_late_actuals(client, bucket: str, scenario: str, since: datetime, stored_after: datetime) -> pd.DataFrame:
    """Ground truth published since `since` in files stored after `stored_after` (by the store's clock): the
    lines of each, with the file's `stored` time, as `actuals_frame` reads them (the last of a row wins)."""
    frames = []
    for prefix in log_hour_prefixes(scenario, ACTUALS, since, datetime.now(UTC) + timedelta(hours=1)):
        for item in list_objects(client, bucket, prefix):
            if item["LastModified"] > stored_after:
                frame = actuals_frame([_read(client, bucket, item["Key"])])
                frames.append(frame.assign(stored=pd.Timestamp(item["LastModified"])))
    if not frames:
        return pd.DataFrame(columns=[*ACTUAL_KEY, "actual", "stored"])
    return pd.concat(frames, ignore_index=True).sort_values("stored").drop_duplicates(ACTUAL_KEY, keep="last")


def quarantine_logs(client, logs_bucket: str, bucket: str, scenario: str, quarantined: list[dict]) -> None:
    """Copy each unreadable prediction log from `logs_bucket` to the quarantine, with its reason beside it."""
    for item in quarantined:
        client.put_object(
            Bucket=bucket, Key=quarantined_log_key(scenario, item["key"]), Body=_read(client, logs_bucket, item["key"])
        )
        put_json(client, bucket, quarantine_reason_key(scenario, item["key"]), item)
        log.warning("quarantined %s: %s", item["key"], item["reason"])


def previous_status(client, bucket: str, scenario: str, start: datetime) -> dict:
    """The status an earlier run of the window starting at `start` left, or {}."""
    return get_json(client, bucket, window_key(scenario, start), missing_ok=True) or {}


def save_status(client, bucket: str, scenario: str, start: datetime, status: dict) -> None:
    """The window's status; also the scenario's latest unless a later window is already there; and its alert
    when it decayed (a rerun that finds no decay withdraws the alert)."""
    put_json(client, bucket, window_key(scenario, start), status)
    latest = get_json(client, bucket, status_key(scenario), missing_ok=True)
    if latest is None or latest["window_end"] <= status["window_end"]:
        put_json(client, bucket, status_key(scenario), status)
    if status["decay"]:
        put_json(client, bucket, alert_key(scenario, start), status)
    else:
        client.delete_object(Bucket=bucket, Key=alert_key(scenario, start))


def save_experiment(client, bucket: str, scenario: str, candidate_version: str, when: datetime, value: dict) -> str:
    """A serving experiment's comparison (`checks.experiment_object`) as computed up to `when`, the end of the
    window that computed it: a rerun of that window replaces it, and the newest comparison sorts last. Returns
    its key."""
    key = experiment_key(scenario, candidate_version, when)
    put_json(client, bucket, key, value)
    return key
