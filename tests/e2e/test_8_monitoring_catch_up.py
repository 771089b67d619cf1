"""Monitoring misses no captured row: an S3 outage longer than a window, on the running stack.

While MinIO is paused the prediction service keeps answering (each answer is on its spool disk first), and
ships the lines once MinIO is back: late, in windows whose time has passed. The monitoring DAG in catch-up mode
(what its schedule runs) checks every window from the last checked one up to now less the allowed lateness,
so every one of those rows is counted in exactly one window's figures. Their actuals, published only after
those windows were checked, get each window checked again by the next run: every row is then labelled.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests

from mlops_sandbox import loop
from mlops_sandbox.contracts import actual_record, checkpoint_key, window_key
from mlops_sandbox.serve.schema import EXAMPLES
from mlops_sandbox.storage import get_json, s3_client
from mlops_sandbox.traffic import publish_actuals

pytestmark = pytest.mark.e2e
SCENARIO = "house_prices"
WINDOW_MINUTES = 1
LATENESS_SECONDS = 15


def _checked_up_to(settings) -> str:
    return get_json(s3_client(settings), settings.monitoring_bucket, checkpoint_key(SCENARIO))["watermark"]


def _catch_up(airflow) -> dict:
    conf = {
        "scenario": SCENARIO,
        "window_minutes": WINDOW_MINUTES,
        "catch_up": "on",
        "allowed_lateness_seconds": LATENESS_SECONDS,
    }
    run_id = airflow.trigger("monitoring", conf)
    airflow.wait("monitoring", run_id, timeout=600)  # `failed` too when a window decayed: not the point here
    states = airflow.task_states("monitoring", run_id)
    assert states["monitor_window"] == "success", states
    return json.loads(airflow.xcom("monitoring", run_id, "monitor_window"))


def _chain(settings, start: str, end: str) -> list[dict]:
    """The window statuses from `start` to `end`, each starting where the one before ended (a scheduled run
    in between adds its windows to the same chain)."""
    client, windows = s3_client(settings), []
    while start != end:
        status = get_json(client, settings.monitoring_bucket, window_key(SCENARIO, datetime.fromisoformat(start)))
        assert status is not None, f"no checked window starts at {start}: a gap in the chain"
        windows.append(status)
        start = status["window_end"]
    return windows


def test_rows_shipped_after_an_outage_longer_than_a_window_are_all_monitored(settings, compose, airflow):
    health = requests.get(f"{settings.predictor_url}/health", timeout=30).json()
    assert health["model_loaded"], "needs the production model the earlier tests leave"
    time.sleep(LATENESS_SECONDS + 5)  # what earlier tests sent falls before the first watermark, not after it
    _catch_up(airflow)  # monitoring is up to date: the checkpoint is now less the lateness
    checked = _checked_up_to(settings)

    answered: list[str] = []
    predicted: dict[str, float] = {}
    refused: list[str] = []
    stop = threading.Event()

    def send() -> None:
        session = requests.Session()
        for i in range(100_000):  # bounded; stops on `stop` long before
            if stop.is_set():
                return
            resp = session.post(
                f"{settings.predictor_url}/predict", json=EXAMPLES[SCENARIO], headers={"X-Request-ID": f"late-{i}"}
            )
            if resp.status_code == 200:
                answered.append(resp.json()["request_id"])
                predicted[answered[-1]] = resp.json()["predictions"][0]
            else:
                refused.append(f"{resp.status_code} {resp.text[:200]}")
            time.sleep(0.2)

    first_sent = datetime.now(UTC)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        time.sleep(10)
        compose("pause", "minio")
        try:
            time.sleep(WINDOW_MINUTES * 60 + 20)  # longer than a window
        finally:
            compose("unpause", "minio")
        time.sleep(10)
    finally:
        stop.set()
        sender.join(60)
    last_answered = datetime.now(UTC)
    assert refused == []  # the outage costs no caller an answer
    assert len(answered) > 300
    assert not loop.wait_until_captured(settings, SCENARIO, set(answered), timeout=180)
    time.sleep(LATENESS_SECONDS + 5)  # the last answers are now older than the allowed lateness

    after = _catch_up(airflow)

    windows = _chain(settings, checked, _checked_up_to(settings))
    assert after["windows"] and after["window_end"] == windows[-1]["window_end"]
    # the checked windows span the whole traffic, the outage included, not only the last window
    assert datetime.fromisoformat(windows[0]["window_start"]) <= first_sent
    assert datetime.fromisoformat(windows[-1]["window_end"]) >= last_answered - timedelta(seconds=1)
    assert all(w["figures"]["model_versions_seen"] for w in windows if w["figures"]["rows"])
    assert sum(w["figures"]["rows"] for w in windows) == len(answered)  # each row once, none missed

    # the ground truth of those rows comes now, after their windows were checked: the next run checks each again
    assert sum(w["figures"]["labelled_rows"] for w in windows) == 0
    actuals = [actual_record(request_id, predicted[request_id]) for request_id in answered]
    published = datetime.now(UTC)
    publish_actuals(s3_client(settings), settings.prediction_logs_bucket, SCENARIO, actuals)

    def checked_again() -> list[dict]:
        return [
            w
            for w in _chain(settings, checked, after["window_end"])
            if w["figures"]["rows"] and datetime.fromisoformat(w["actuals_read_at"]) > published
        ]

    with_rows = [w for w in windows if w["figures"]["rows"]]
    for _ in range(3):  # a run checks at most 12 windows again (earlier tests' may be due as well)
        _catch_up(airflow)  # (or a scheduled run that came first: both use the same checkpoint)
        if len(checked_again()) == len(with_rows):
            break
    assert len(checked_again()) == len(with_rows)  # each window with rows was checked again
    windows = _chain(settings, checked, after["window_end"])
    with_rows = [w for w in windows if w["figures"]["rows"]]
    assert sum(w["figures"]["labelled_rows"] for w in windows) == len(answered)
    assert all(w["figures"]["mae"] == pytest.approx(0, abs=1e-6) for w in with_rows)  # each actual was its answer
