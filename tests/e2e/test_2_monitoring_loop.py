"""Closing the loop on the running stack (seed steps 10, 11, 20): capture without loss, monitoring windows,
quarantine, and the decay verdict. Runs after test_1_training_loop, which leaves a production model."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import requests

from mlops_sandbox.schema import get_schema
from mlops_sandbox.serve.schema import EXAMPLES
from mlops_sandbox.storage import s3_client

pytestmark = pytest.mark.e2e
SCENARIO = "house_prices"


def _captured(settings, prefix: str) -> list[str]:
    """Request ids starting with `prefix` in the prediction-logs bucket, one entry per logged row."""
    client = s3_client(settings)
    now = datetime.now(UTC)
    ids = []
    days = sorted({f"{now + timedelta(hours=h):%Y-%m-%d}" for h in (-1, 0, 1)})  # a run may straddle midnight
    for day in days:
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(
            Bucket=settings.prediction_logs_bucket, Prefix=f"{SCENARIO}/predictions/date={day}/"
        ):
            for obj in page.get("Contents", []):
                body = client.get_object(Bucket=settings.prediction_logs_bucket, Key=obj["Key"])["Body"].read()
                for line in body.decode(errors="replace").splitlines():
                    try:
                        request_id = json.loads(line)["request_id"]
                    except (ValueError, KeyError, TypeError):
                        continue  # the quarantine test plants a corrupt file here
                    if request_id.startswith(prefix):
                        ids.append(request_id)
    return ids


@pytest.fixture(scope="module")
def serving(settings):
    deadline = time.monotonic() + 120
    while not requests.get(f"{settings.predictor_url}/health", timeout=10).json()["model_loaded"]:
        assert time.monotonic() < deadline, "no production model is served"
        time.sleep(2)


def test_no_prediction_is_lost_while_minio_is_down(settings, compose, serving):
    prefix = f"noloss-{uuid.uuid4().hex[:8]}-"
    answered: list[str] = []
    stop = threading.Event()

    def load() -> None:
        session = requests.Session()
        for i in range(20_000):  # bounded; stops on `stop` long before
            if stop.is_set():
                return
            resp = session.post(
                f"{settings.predictor_url}/predict",
                json=EXAMPLES[SCENARIO],
                headers={"X-Request-ID": f"{prefix}{i}"},
                timeout=30,
            )
            if resp.status_code == 200:
                answered.append(resp.json()["request_id"])

    sender = threading.Thread(target=load)
    sender.start()
    try:
        time.sleep(4)
        compose("stop", "minio")
        time.sleep(10)  # sustained load while S3 is gone: the predictor spools to disk
        during_outage = len(answered)
        compose("start", "minio")
        time.sleep(4)
    finally:
        stop.set()
        sender.join(60)
    assert during_outage > 50 and len(answered) > during_outage
    deadline = time.monotonic() + 120
    while True:  # spooled batches go up on the writer's next retry
        logged = _captured(settings, prefix)
        if len(logged) >= len(answered) or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert sorted(logged) == sorted(answered)  # every answered request once: none lost, none doubled


def test_monitoring_window_with_actuals_and_quarantine(settings, compose, serving):
    start = datetime.now(UTC) - timedelta(seconds=1)
    traffic = compose(
        "run", "--rm", "cli", "traffic", "--rate", "10", "--duration", "8", "--actuals-delay", "2", "--seed", "77"
    )
    sent = json.loads(traffic.stdout.strip().splitlines()[-1])
    assert sent["answered"] == sent["sent"] == 80 and sent["actuals_published"] == 80
    corrupt = f"{SCENARIO}/predictions/date={start:%Y-%m-%d}/hour={start:%H}/corrupt-{uuid.uuid4().hex[:6]}.jsonl"
    s3 = s3_client(settings)
    s3.put_object(Bucket=settings.prediction_logs_bucket, Key=corrupt, Body=b"{not json")
    end = datetime.now(UTC) + timedelta(seconds=1)

    def monitor() -> dict:
        out = compose("run", "--rm", "cli", "monitor", "--start", start.isoformat(), "--end", end.isoformat())
        return json.loads(out.stdout.strip().splitlines()[-1])

    first = monitor()
    assert first["rows"] >= 80 and first["labelled_rows"] >= 80 and first["quarantined_files"] >= 1
    assert first["drift_share"] is not None and first["mae"] > 0
    assert monitor() == first  # a rerun of the window: same figures

    status_key = f"{SCENARIO}/windows/{start:%Y%m%dT%H%M%SZ}.json"
    status = json.loads(s3.get_object(Bucket=settings.monitoring_bucket, Key=status_key)["Body"].read())
    assert status["figures"]["rows"] == first["rows"] and not status["decay"]
    assert corrupt in {q["key"] for q in status["quarantined_files"]}
    reason = json.loads(
        s3.get_object(Bucket=settings.monitoring_bucket, Key=f"{SCENARIO}/quarantine/{corrupt}.reason.json")[
            "Body"
        ].read()
    )
    assert "not JSON Lines" in reason["reason"]

    # the window's snapshots are in the Evidently project, once
    projects = requests.get(f"{settings.evidently_url}/api/projects", timeout=30).json()
    project = next(p for p in projects if p["name"] == f"{SCENARIO} monitoring")
    snapshots = requests.get(f"{settings.evidently_url}/api/projects/{project['id']}/snapshots", timeout=30).json()
    ids = {str(s["id"]) for s in snapshots}
    assert set(status["evidently_snapshots"]) <= ids and len(status["evidently_snapshots"]) == 2


def test_monitoring_dag_flags_decay_on_drifted_traffic(settings, compose, airflow, serving):
    airflow.wait_for_dag("monitoring")
    compose(
        "run",
        "--rm",
        "cli",
        "traffic",
        "--rate",
        "10",
        "--duration",
        "10",
        "--actuals-delay",
        "1",
        "--seed",
        "78",
        "--drift",
        "covariate,2020-01-01T00:00Z,1.5",
    )
    run_id = airflow.trigger("monitoring", {"scenario": SCENARIO, "window_minutes": 1})
    assert airflow.wait("monitoring", run_id, timeout=300) == "failed"  # red in Airflow
    status = json.loads(
        s3_client(settings).get_object(Bucket=settings.monitoring_bucket, Key=f"{SCENARIO}/status.json")["Body"].read()
    )
    assert status["decay"] is True
    assert any(r.startswith("drift:") for r in status["reasons"]), status["reasons"]
    drift = status["figures"]["column_drift"][get_schema(SCENARIO).feature_names[0]]
    assert drift["method"] and drift["threshold"] is not None and isinstance(drift["drifted"], bool)
