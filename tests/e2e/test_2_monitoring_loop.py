"""Closing the loop on the running stack (seed steps 10, 11, 20): capture without loss, monitoring windows,
quarantine, and the decay verdict. Runs after test_1_training_loop, which leaves a production model."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import requests

from mlops_sandbox.loop import wait_until_serving
from mlops_sandbox.schema import get_schema
from mlops_sandbox.serve.schema import EXAMPLES
from mlops_sandbox.storage import s3_client
from mlops_sandbox.tracking import use_tracking_server

pytestmark = pytest.mark.e2e
SCENARIO = "house_prices"


def _captured(settings, prefix: str, bucket: str | None = None) -> list[str]:
    """The service's request ids of the requests whose X-Request-ID (`client_request_id`) starts with `prefix`, in
    the prediction-logs bucket (or `bucket`), one entry per logged row."""
    bucket = bucket or settings.prediction_logs_bucket
    client = s3_client(settings)
    now = datetime.now(UTC)
    ids = []
    days = sorted({f"{now + timedelta(hours=h):%Y-%m-%d}" for h in (-1, 0, 1)})  # a run may straddle midnight
    for day in days:
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=f"{SCENARIO}/predictions/date={day}/"):
            for obj in page.get("Contents", []):
                body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                for line in body.decode(errors="replace").splitlines():
                    try:
                        record = json.loads(line)
                        sent_as, request_id = record.get("client_request_id") or "", record["request_id"]
                    except (ValueError, KeyError, TypeError, AttributeError):
                        continue  # the quarantine test plants a corrupt file here
                    if sent_as.startswith(prefix):
                        ids.append(request_id)
    return ids


@pytest.fixture(scope="module")
def serving(settings) -> str:
    """The production version, once the service serves it."""
    deadline = time.monotonic() + 120
    while not requests.get(f"{settings.predictor_url}/health", timeout=10).json()["model_loaded"]:
        assert time.monotonic() < deadline, "no production model is served"
        time.sleep(2)
    return requests.get(f"{settings.predictor_url}/model", timeout=30).json()["version"]


class Load:
    """`clients` threads posting one record each, back to back, each request with its own X-Request-ID; keeps the
    ids answered 200. Connection errors (the service is down) and other statuses are not answers: it goes on."""

    def __init__(self, url: str, prefix: str, clients: int = 4) -> None:
        self.url, self.prefix = f"{url}/predict", prefix
        self.answered: list[str] = []
        self.statuses: dict[int, int] = {}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send, args=(n,)) for n in range(clients)]

    def _send(self, client: int) -> None:
        session = requests.Session()
        for i in range(1_000_000):  # bounded; stops on `_stop` long before
            if self._stop.is_set():
                return
            request_id = f"{self.prefix}{client}-{i}"
            try:
                resp = session.post(self.url, json=EXAMPLES[SCENARIO], headers={"X-Request-ID": request_id}, timeout=30)
            except requests.RequestException:
                time.sleep(0.1)
                continue
            self.statuses[resp.status_code] = self.statuses.get(resp.status_code, 0) + 1
            if resp.status_code == 200:
                self.answered.append(resp.json()["request_id"])

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


def _all_captured(
    settings, prefix: str, answered: list[str], timeout: float = 120, bucket: str | None = None
) -> list[str]:
    """The ids of `prefix` in the bucket, once it holds every answered one (or `timeout` passed)."""
    deadline = time.monotonic() + timeout
    while True:  # spooled segments go up on the shipper's next retry
        logged = _captured(settings, prefix, bucket)
        if set(answered) <= set(logged) or time.monotonic() > deadline:
            return logged
        time.sleep(3)


def test_no_prediction_is_lost_while_minio_is_down(settings, compose, serving):
    prefix = f"noloss-{uuid.uuid4().hex[:8]}-"
    with Load(settings.predictor_url, prefix, clients=1) as load:
        time.sleep(4)
        compose("stop", "minio")
        time.sleep(10)  # sustained load while S3 is gone: captured predictions wait in the spool
        during_outage = len(load.answered)
        compose("start", "minio")
        time.sleep(4)
    assert during_outage > 50 and len(load.answered) > during_outage
    logged = _all_captured(settings, prefix, load.answered)
    assert sorted(logged) == sorted(load.answered)  # every answered request once: none lost, none doubled


def test_no_answered_prediction_is_lost_when_the_predictor_is_killed_then_stopped(settings, compose, serving):
    """SIGKILL mid-load (no shutdown code runs), then SIGTERM mid-load: every request answered 200 is in the
    bucket, once. A request killed before its answer may be there too: it was captured, never answered."""
    version = requests.get(f"{settings.predictor_url}/model", timeout=30).json()["version"]
    prefix = f"kill-{uuid.uuid4().hex[:8]}-"
    with Load(settings.predictor_url, prefix) as load:
        time.sleep(6)
        before_kill = len(load.answered)
        compose("kill", "-s", "SIGKILL", "predictor")
        compose("up", "-d", "--no-deps", "--wait", "predictor")
        wait_until_serving(settings, version, reload=False)
        time.sleep(6)
        before_stop = len(load.answered)
        compose("stop", "predictor")  # SIGTERM, then the shutdown: close the segment, ship it
        compose("up", "-d", "--no-deps", "--wait", "predictor")
        wait_until_serving(settings, version, reload=False)
        time.sleep(4)
    assert 0 < before_kill < before_stop < len(load.answered), (before_kill, before_stop, len(load.answered))
    logged = _all_captured(settings, prefix, load.answered)
    assert not set(load.answered) - set(logged), f"{len(set(load.answered) - set(logged))} answered, not captured"
    assert len(logged) == len(set(logged)), "a captured request was uploaded twice"
    metrics = requests.get(f"{settings.predictor_url}/metrics", timeout=30).text
    assert "predictor_capture_lost_rows_total 0.0" in metrics


def test_a_killed_workers_captures_are_shipped_by_its_sibling_while_the_service_runs(settings, compose, serving):
    """One worker process gets SIGKILL mid-load (an OOM kill): the service goes on, gunicorn replaces the worker,
    and every answered request, including those of the dead worker's open segment, reaches the bucket."""
    prefix = f"oom-{uuid.uuid4().hex[:8]}-"
    victim = requests.get(f"{settings.predictor_url}/health", timeout=10).json()["worker"]
    with Load(settings.predictor_url, prefix, clients=2) as load:
        time.sleep(4)
        compose("exec", "-T", "predictor", "python", "-c", f"import os, signal; os.kill({victim}, signal.SIGKILL)")
        time.sleep(6)
    assert len(load.answered) > 100  # (its replacement answers 503 until it has loaded the model)
    logged = _all_captured(settings, prefix, load.answered)
    assert not set(load.answered) - set(logged), f"{len(set(load.answered) - set(logged))} answered, not captured"
    assert len(logged) == len(set(logged)), "a captured request was uploaded twice"
    wait_until_serving(settings, serving, reload=False)  # a new worker took the dead one's place
    workers = {requests.get(f"{settings.predictor_url}/health", timeout=10).json()["worker"] for _ in range(20)}
    assert victim not in workers


def _free_port_url(name: str) -> str:
    port = subprocess.run(["docker", "port", name, "8000"], capture_output=True, text=True, check=True)
    return "http://" + port.stdout.strip().splitlines()[0].replace("0.0.0.0", "127.0.0.1")


def _wait_until_up(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            requests.get(f"{url}/health", timeout=5).raise_for_status()
            return
        except requests.RequestException:
            assert time.monotonic() < deadline, f"{url} did not come up"
            time.sleep(1)


def test_a_full_spool_disk_is_503_and_nothing_answered_is_lost(settings, serving, docker_compose_project_name):
    """A second predictor whose spool is a 256 KiB tmpfs, capturing to a bucket that does not exist yet: uploads
    fail, the disk fills, /predict says 503 and why. Once the bucket exists, every answered request is in it,
    and /predict answers again."""
    name, volume = f"{docker_compose_project_name}-fullspool-predictor", f"{docker_compose_project_name}-fullspool"
    bucket = f"fullspool-{uuid.uuid4().hex[:8]}"
    prefix = f"full-{uuid.uuid4().hex[:8]}-"
    s3 = s3_client(settings)
    subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
    subprocess.run(["docker", "volume", "rm", "-f", volume], capture_output=True, check=False)
    try:
        # a small disk of its own: a tmpfs volume, whose files live as long as a container uses it
        subprocess.run(
            ["docker", "volume", "create", "--driver", "local", "--opt", "type=tmpfs", "--opt", "device=tmpfs",
             "--opt", "o=size=256k,uid=1000,gid=1000", volume],
            check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run(
            ["docker", "compose", "-p", docker_compose_project_name, "run", "-d", "--no-deps", "--name", name,
             "-p", "127.0.0.1::8000", "-v", f"{volume}:/data/spool",
             "-e", f"PREDICTION_LOGS_BUCKET={bucket}", "-e", "CAPTURE_FLUSH_SECONDS=1", "predictor"],
            check=True, capture_output=True,
        )  # fmt: skip
        url = _free_port_url(name)
        _wait_until_up(url)
        wait_until_serving(settings.model_copy(update={"predictor_url_override": url}), serving, reload=False)

        answered, refused = [], None
        session = requests.Session()
        for i in range(5000):
            resp = session.post(f"{url}/predict", json=EXAMPLES[SCENARIO], headers={"X-Request-ID": f"{prefix}{i}"})
            if resp.status_code != 200:
                refused = resp
                break
            answered.append(resp.json()["request_id"])
        assert refused is not None and refused.status_code == 503, "the spool disk never filled"
        assert "No space left on device" in refused.json()["detail"], refused.text
        assert requests.get(f"{url}/health", timeout=10).status_code == 200 and len(answered) > 100
        assert 'predictor_capture_refused_requests_total{reason="disk_full"} 1.0' in session.get(f"{url}/metrics").text

        s3.create_bucket(Bucket=bucket)  # S3 takes the uploads now: the spool drains
        logged = _all_captured(settings, prefix, answered, bucket=bucket)
        assert sorted(logged) == sorted(answered)
        assert session.post(f"{url}/predict", json=EXAMPLES[SCENARIO], timeout=30).status_code == 200
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
        subprocess.run(["docker", "volume", "rm", "-f", volume], capture_output=True, check=False)
        with contextlib.suppress(s3.exceptions.NoSuchBucket):  # the test may have failed before creating it
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                for obj in page.get("Contents", []):
                    s3.delete_object(Bucket=bucket, Key=obj["Key"])
            s3.delete_bucket(Bucket=bucket)


def test_monitoring_window_with_actuals_and_quarantine(settings, compose, serving):
    start = datetime.now(UTC) - timedelta(seconds=1)
    # the hours just after test_1's training batches, on a fixed simulated clock: the same 80 rows every run
    # (the default clock, now, would give other houses each run, and the no-decay verdict would be luck)
    traffic = compose(
        "run", "--rm", "cli", "traffic", "--rate", "10", "--duration", "8", "--actuals-delay", "2", "--seed", "77",
        "--start", "2031-03-01T06:00:00Z",
    )  # fmt: skip
    sent = json.loads(traffic.stdout.strip().splitlines()[-1])
    assert sent["answered"] == sent["sent"] == 80 and sent["actuals_published"] == 80
    corrupt = f"{SCENARIO}/predictions/date={start:%Y-%m-%d}/hour={start:%H}/corrupt-{uuid.uuid4().hex[:6]}.jsonl"
    s3 = s3_client(settings)
    s3.put_object(Bucket=settings.prediction_logs_bucket, Key=corrupt, Body=b"{not json")
    end = datetime.now(UTC) + timedelta(seconds=1)

    def monitor() -> dict:
        out = compose("run", "--rm", "cli", "monitor", "--start", start.isoformat(), "--end", end.isoformat())
        return json.loads(out.stdout.strip().splitlines()[-1])

    status_key = f"{SCENARIO}/windows/{start:%Y%m%dT%H%M%SZ}.json"
    first = monitor()
    assert first["rows"] >= 80 and first["labelled_rows"] >= 80 and first["quarantined_files"] >= 1
    assert first["drift_share"] is not None and first["mae"] > 0
    replaced = json.loads(s3.get_object(Bucket=settings.monitoring_bucket, Key=status_key)["Body"].read())
    assert monitor() == first  # a rerun of the window: same figures

    status = json.loads(s3.get_object(Bucket=settings.monitoring_bucket, Key=status_key)["Body"].read())
    assert status["figures"]["rows"] == first["rows"] and not status["decay"]
    assert corrupt in {q["key"] for q in status["quarantined_files"]}
    reason = json.loads(
        s3.get_object(Bucket=settings.monitoring_bucket, Key=f"{SCENARIO}/quarantine/{corrupt}.reason.json")[
            "Body"
        ].read()
    )
    assert "not JSON Lines" in reason["reason"]

    # the window's snapshots are in the Evidently project, once: the rerun's in place of the first run's
    projects = requests.get(f"{settings.evidently_url}/api/projects", timeout=30).json()
    project = next(p for p in projects if p["name"] == f"{SCENARIO} monitoring")
    snapshots = requests.get(f"{settings.evidently_url}/api/projects/{project['id']}/snapshots", timeout=30).json()
    ids = {str(s["id"]) for s in snapshots}
    assert set(status["evidently_snapshots"]) <= ids and len(status["evidently_snapshots"]) == 2
    assert not set(replaced["evidently_snapshots"]) & ids  # the first run's were deleted: one point per window


def test_a_hung_evidently_fails_a_monitoring_run_within_its_bound_and_the_next_run_works(settings, compose, serving):
    """Evidently's own client sends with no timeout: a paused UI server would hold a monitoring run until its
    task's timeout (30 min). Bounded, the run fails on its own, naming the server, and the next one works."""
    start = datetime.now(UTC) - timedelta(seconds=1)
    compose("run", "--rm", "cli", "traffic", "--rate", "10", "--duration", "3", "--actuals-delay", "1", "--seed", "78")
    end = datetime.now(UTC) + timedelta(seconds=1)
    bounds = ("-e", "EVIDENTLY_TIMEOUT_SECONDS=3", "-e", "EVIDENTLY_ATTEMPTS=2")
    monitor = ("run", "--rm", *bounds, "cli", "monitor", "--start", start.isoformat(), "--end", end.isoformat())

    compose("pause", "evidently")
    try:
        hung = compose(*monitor, check=False, timeout=300)
    finally:
        compose("unpause", "evidently")
    assert hung.returncode != 0
    assert "timed out" in hung.stderr and "evidently" in hung.stderr, hung.stderr[-3000:]

    window = json.loads(compose(*monitor, timeout=300).stdout.strip().splitlines()[-1])
    assert window["rows"] >= 30 and window["labelled_rows"] >= 30


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


def test_when_the_production_alias_is_removed_the_service_stops_serving_and_says_why(settings, serving):
    client = use_tracking_server(settings)
    try:
        client.delete_registered_model_alias(settings.model_name, "production")
        requests.post(
            f"{settings.predictor_url}/reload",
            headers={"Authorization": f"Bearer {settings.predictor_reload_token}"},
            timeout=60,
        )
        deadline = time.monotonic() + 30  # the other worker sees the reload signal within a second
        while True:
            health = requests.get(f"{settings.predictor_url}/health", timeout=10).json()
            refused = requests.post(f"{settings.predictor_url}/predict", json=EXAMPLES[SCENARIO], timeout=30)
            if (not health["model_loaded"] and refused.status_code == 503) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert health["model_loaded"] is False and "has the alias 'production'" in health["detail"], health
        assert refused.status_code == 503 and f"stopped serving version {serving}" in refused.text, refused.text
    finally:
        client.set_registered_model_alias(settings.model_name, "production", serving)
        wait_until_serving(settings, serving)
