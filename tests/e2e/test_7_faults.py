"""Faults during training (issue 13), caused on the running stack.

- A hung MinIO: MinIO is paused (`docker compose pause`: it still accepts connections, and answers nothing) as
  `version_features` starts, for longer than the step's S3 client waits. The step fails with a timeout that
  names the endpoint and Airflow retries it, or MinIO comes back while the step is still retrying on its own:
  either way the run succeeds once MinIO is back, and nothing waits forever. MinIO is unpaused whatever
  happens, so the tests after this one find it working.
- Postgres restarted while `train` runs: Airflow's database and MLflow's backend store go away for seconds.
  The run still succeeds with no one stepping in, and MLflow serves the version it registered.
- The scheduler killed while `train` runs: the retry removes the container the dead try left, and the run
  succeeds; no step container of the run is left.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from datetime import UTC, datetime

import pytest
import requests

from mlops_sandbox.serve.schema import EXAMPLES
from mlops_sandbox.storage import get_json, put_json, s3_client
from mlops_sandbox.tracking import use_tracking_server
from mlops_sandbox.versioning import DataVersion

pytestmark = pytest.mark.e2e

SCENARIO = "house_prices"
START = "2031-12-01T00:00:00Z"  # a simulated clock no other test uses (the newest batches of the scenario)
DAG = "training_pipeline"


def _task_instances(airflow, run_id: str) -> dict[str, dict]:
    tis = airflow.call("GET", f"/dags/{DAG}/dagRuns/{run_id}/taskInstances")["task_instances"]
    return {ti["task_id"]: ti for ti in tis}


def _when(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


def _until_preprocessed(airflow, run_id: str, timeout: float = 300) -> None:
    """Until `preprocess` has succeeded: `version_features` is about to start its container."""
    deadline = time.monotonic() + timeout
    while (states := airflow.task_states(DAG, run_id)).get("preprocess") != "success":
        assert "failed" not in states.values() and "upstream_failed" not in states.values(), states
        assert time.monotonic() < deadline, f"preprocess did not succeed in {timeout:.0f} s: {states}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def landed(compose, airflow) -> list[str]:
    out = compose("run", "--rm", "cli", "simulate", "--batches", "6", "--rows", "300", "--start", START, "--seed", "17")
    keys = json.loads(out.stdout.strip().splitlines()[-1])["batches"]
    assert len(keys) == 6
    airflow.wait_for_dag(DAG)
    return keys


def test_training_outlives_a_paused_minio_and_succeeds_once_it_is_back(settings, compose, airflow, landed):
    # Longer than a step's S3 request may wait in all (S3_MAX_ATTEMPTS tries of S3_READ_TIMEOUT each, the
    # stack's defaults), so a timeout has to hit during the pause; short enough for a retry 30-60 s later.
    pause = settings.s3_read_timeout * settings.s3_max_attempts + 15

    run_id = airflow.trigger(DAG, {"scenario": SCENARIO, "model_type": "linear", "last_batches": 6})
    _until_preprocessed(airflow, run_id)
    compose("pause", "minio")
    try:
        time.sleep(pause)
    finally:
        compose("unpause", "minio")
    back = datetime.now(UTC)

    state = airflow.wait(DAG, run_id, timeout=600)
    tis = _task_instances(airflow, run_id)
    assert state == "success", {task: (ti["state"], ti["try_number"]) for task, ti in tis.items()}

    # The step that the pause caught (version_features; train if the pause came late) began before MinIO was
    # back (its last try began after, when it was retried) and ended after: it waited the outage out within its
    # bounds, or failed and was retried.
    def caught(ti: dict) -> bool:
        return _when(ti["end_date"]) >= back and (_when(ti["start_date"]) < back or ti["try_number"] > 1)

    steps = [tis[t] for t in ("version_features", "train") if caught(tis[t])]
    assert steps, {t: (ti["start_date"], ti["end_date"], ti["try_number"]) for t, ti in tis.items()}
    step = steps[0]
    if step["try_number"] > 1:  # it failed, clearly, and Airflow retried it
        first = airflow.call(
            "GET", f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/{step['task_id']}/logs/1", params={"full_content": True}
        )
        log = json.dumps(first)
        assert "minio:9000" in log and "timeout" in log.lower(), log[-3000:]

    # the version it registered has its features in the DVC remote, from the batches landed above
    version = json.loads(airflow.xcom(DAG, run_id, "register"))["version"]
    mv = use_tracking_server(settings).get_model_version(settings.model_name_for(SCENARIO), version)
    assert mv.tags["raw_batch_keys"].split(",") == landed
    data = DataVersion.from_tags(mv.tags)
    s3 = s3_client(settings)
    assert s3.head_object(Bucket=settings.dvc_bucket, Key=data.object_key)["ContentLength"] == data.size

    # and MinIO works again: a write and a read
    key = f"{SCENARIO}/e2e-faults/{uuid.uuid4().hex}.json"
    put_json(s3, settings.pipeline_bucket, key, {"run_id": run_id})
    try:
        assert get_json(s3, settings.pipeline_bucket, key) == {"run_id": run_id}
    finally:
        s3.delete_object(Bucket=settings.pipeline_bucket, Key=key)


def test_training_outlives_a_postgres_restart_while_it_trains(settings, compose, airflow, landed):
    health = requests.get(f"{settings.predictor_url}/health", timeout=30).json()
    assert health["model_loaded"], "needs the production model the earlier tests leave"
    run_id = airflow.trigger(DAG, {"scenario": SCENARIO, "model_type": "linear", "last_batches": 6})
    deadline = time.monotonic() + 600
    while (states := airflow.task_states(DAG, run_id)).get("train") != "running":
        assert "failed" not in states.values() and "upstream_failed" not in states.values(), states
        assert time.monotonic() < deadline, f"train did not start in 600 s: {states}"
        time.sleep(0.5)
    answers: list[int | str] = []
    done = threading.Event()

    def predict() -> None:  # the service keeps the version it has while the registry's database is away
        with requests.Session() as session:
            while not done.is_set():
                try:
                    resp = session.post(f"{settings.predictor_url}/predict", json=EXAMPLES[SCENARIO], timeout=30)
                    answers.append(resp.status_code)
                except requests.RequestException as err:  # no answer at all counts against it too
                    answers.append(repr(err))
                time.sleep(0.2)

    sender = threading.Thread(target=predict, daemon=True)
    sender.start()
    try:
        compose("restart", "postgres")  # a fast shutdown: every connection of Airflow and MLflow is cut
        state = airflow.wait(DAG, run_id, timeout=900)  # waits out the API server's 5xx while Postgres is down
    finally:
        done.set()
        sender.join(60)
    assert not sender.is_alive()
    assert len(answers) > 20 and set(answers) == {200}, answers
    tis = _task_instances(airflow, run_id)
    assert state == "success", {task: (ti["state"], ti["try_number"]) for task, ti in tis.items()}
    version = json.loads(airflow.xcom(DAG, run_id, "register"))["version"]
    tracking = use_tracking_server(settings)
    mv = tracking.get_model_version(settings.model_name_for(SCENARIO), version)
    assert mv.tags["raw_batch_keys"].split(",") == landed and mv.tags["pipeline_run_id"] == run_id
    # one MLflow run for the pipeline run, even if `train` was retried
    runs = tracking.search_runs(
        [tracking.get_run(mv.run_id).info.experiment_id], filter_string=f"tags.pipeline_run_id = '{run_id}'"
    )
    assert [r.info.run_id for r in runs] == [mv.run_id]


def _step_containers(run_id: str, task: str) -> list[dict]:
    """The containers of `task` in this pipeline run on the test stack, running or not, found as `StepContainer`
    finds an earlier try's: by its stack and step labels."""
    step = f"{DAG}/{task}/{run_id}/-1"
    labels = {"io.mlops-sandbox.stack": os.environ.get("STACK_NETWORK", "mlops-sandbox"), "io.mlops-sandbox.step": step}
    filters = [arg for key, value in labels.items() for arg in ("--filter", f"label={key}={value}")]
    out = subprocess.run(
        ["docker", "ps", "-a", *filters, "--format", "{{json .}}"], capture_output=True, text=True, check=True
    ).stdout
    return [json.loads(line) for line in out.splitlines()]


def test_training_outlives_a_killed_scheduler_and_leaves_no_step_container(settings, compose, airflow, landed):
    """The scheduler gets SIGKILL while `train`'s container runs: the task's process dies with it and cannot
    stop that container. Started again, Airflow fails the try whose heartbeat stopped and retries it; the
    retry first removes what the dead try left, and the run succeeds with one MLflow run. No container of the
    run is left afterwards, running or stopped."""
    run_id = airflow.trigger(DAG, {"scenario": SCENARIO, "model_type": "linear", "last_batches": 6})
    deadline = time.monotonic() + 600
    while not [c for c in _step_containers(run_id, "train") if c["State"] == "running"]:
        states = airflow.task_states(DAG, run_id)
        assert "failed" not in states.values() and "upstream_failed" not in states.values(), states
        assert time.monotonic() < deadline, f"train's container did not start in 600 s: {states}"
        time.sleep(0.5)
    compose("kill", "airflow-scheduler")  # SIGKILL: nothing in the scheduler gets to stop the step
    (left,) = _step_containers(run_id, "train")  # the killed try's container
    inspected = subprocess.run(["docker", "inspect", left["ID"]], capture_output=True, text=True, check=True)
    host = json.loads(inspected.stdout)[0]["HostConfig"]  # locked down like the compose services
    assert host["CapDrop"] == ["ALL"] and "no-new-privileges:true" in host["SecurityOpt"], host
    compose("start", "airflow-scheduler")
    state = airflow.wait(DAG, run_id, timeout=900)
    tis = _task_instances(airflow, run_id)
    assert state == "success", {task: (ti["state"], ti["try_number"]) for task, ti in tis.items()}
    assert tis["train"]["try_number"] == 2
    retry = airflow.call(
        "GET", f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/train/logs/2", params={"full_content": True}
    )
    assert "left behind: the scheduler stopped while it ran" in json.dumps(retry)
    assert [task for task in tis if _step_containers(run_id, task)] == []
    version = json.loads(airflow.xcom(DAG, run_id, "register"))["version"]
    tracking = use_tracking_server(settings)
    mv = tracking.get_model_version(settings.model_name_for(SCENARIO), version)
    runs = tracking.search_runs(
        [tracking.get_run(mv.run_id).info.experiment_id], filter_string=f"tags.pipeline_run_id = '{run_id}'"
    )
    assert [r.info.run_id for r in runs] == [mv.run_id]
