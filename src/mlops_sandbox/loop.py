"""Drive the running loop from outside, as a person at the dashboards would: run the training DAG, promote,
wait until the prediction service serves a version, run the monitoring DAG.

`make demo`, the workshop's `skip-to` and the notebooks call these; each step is the library or DAG the
stack runs anyway, started through Airflow's REST API and the prediction service's HTTP API.
"""

from __future__ import annotations

import json
import time

import requests

from mlops_sandbox import registry
from mlops_sandbox.airflow_api import AirflowAPI
from mlops_sandbox.config import Settings
from mlops_sandbox.contracts import PRODUCTION, STAGING


def run_training(
    airflow: AirflowAPI, scenario: str, model_type: str = "mlp", last_batches: int | None = None, timeout: float = 900
) -> str:
    """Trigger `training_pipeline`, wait for it, and return the version it registered.

    Raises:
        RuntimeError: the run failed; the message names each task's state.
    """
    conf: dict = {"scenario": scenario, "model_type": model_type}
    if last_batches:
        conf["last_batches"] = last_batches
    airflow.wait_for_dag("training_pipeline")
    run_id = airflow.trigger("training_pipeline", conf)
    if airflow.wait("training_pipeline", run_id, timeout=timeout) != "success":
        raise RuntimeError(f"training_pipeline {run_id} failed: {airflow.task_states('training_pipeline', run_id)}")
    return json.loads(airflow.xcom("training_pipeline", run_id, "register"))["version"]


def run_monitoring(airflow: AirflowAPI, scenario: str, window_minutes: int, timeout: float = 300) -> dict:
    """Trigger the `monitoring` DAG on the last `window_minutes` and wait. Returns the run's state
    (`failed` when `flag_decay` flagged decay) with the window's summary (decay, reasons, figures)."""
    airflow.wait_for_dag("monitoring")
    run_id = airflow.trigger("monitoring", {"scenario": scenario, "window_minutes": window_minutes})
    state = airflow.wait("monitoring", run_id, timeout=timeout)
    return {"state": state, "run_id": run_id, **json.loads(airflow.xcom("monitoring", run_id, "monitor_window"))}


def promote_to_production(settings: Settings, version: str, actor: str, reason: str, model_card: str) -> None:
    """Model card, then staging, then production: the human steps of seed steps 4-7, in one call."""
    registry.set_model_card(version, model_card, actor, settings=settings)
    registry.promote(version, STAGING, actor, reason, settings=settings)
    registry.promote(version, PRODUCTION, actor, reason, settings=settings)


def wait_until_serving(settings: Settings, version: str, timeout: float = 120, reload: bool = True) -> None:
    """Until every worker process of the prediction service answers with `version`.

    Each worker loads the model on its own, and a request reaches whichever worker accepts it, so this
    asks `/health` (which names its worker and how many there are) until it has heard every worker answer
    with `version`. With `reload` (and a reload token set) it first asks the service to look the alias up
    now; otherwise it waits for the workers' next poll of the registry (MODEL_POLL_SECONDS).

    Raises:
        TimeoutError: `version` is still not served by every worker after `timeout` seconds.
    """
    _until_every_worker(
        settings, lambda h: h["model_version"], str(version), f"serve version {version}", timeout, reload
    )


def wait_until_experiment(
    settings: Settings, mode: str, running: bool = True, timeout: float = 120, reload: bool = True
) -> dict:
    """Until every worker runs the experiment the registry declares (`mlops-sandbox model experiment`): in
    `mode`, with its candidate loaded (`running`) or not (a broken candidate, or mode off). Returns the
    experiment as `/health` shows it. Raises TimeoutError, like `wait_until_serving`."""

    def state(health: dict) -> tuple:
        return health["experiment"]["mode"], health["experiment"]["running"]

    health = _until_every_worker(settings, state, (mode, running), f"run a {mode} experiment", timeout, reload)
    return health["experiment"]


def _until_every_worker(settings: Settings, look, expected, what: str, timeout: float, reload: bool) -> dict:
    """Ask `/health` until every worker's answer gives `look(answer) == expected`; returns the last answer. A
    service that is still starting (connection refused or reset) is asked again until `timeout`."""
    deadline = time.monotonic() + timeout
    reloaded = not (reload and settings.predictor_reload_token)
    latest: dict[int, object] = {}  # worker pid -> what it answered last
    health: dict = {"workers": "?"}
    while True:
        try:
            if not reloaded:
                requests.post(
                    f"{settings.predictor_url}/reload",
                    headers={"Authorization": f"Bearer {settings.predictor_reload_token}"},
                    timeout=60,
                )
                reloaded = True
            health = requests.get(f"{settings.predictor_url}/health", timeout=10).json()
        except requests.ConnectionError:
            health = {"workers": "?"}  # not listening yet
        else:
            latest[health["worker"]] = look(health)
            if len(latest) > health["workers"]:  # a worker was replaced: forget the ones heard before
                latest = {health["worker"]: look(health)}
            if len(latest) >= health["workers"] and all(seen == expected for seen in latest.values()):
                return health
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"the prediction service did not {what} on all {health['workers']} workers in {timeout:.0f} s "
                f"(last answers by worker: {latest})"
            )
        time.sleep(0.2)


def wait_until_captured(
    settings: Settings, scenario: str, request_ids: set[str], timeout: float = 120, shadowed: bool = False
) -> set[str]:
    """Wait until every request in `request_ids` is in the scenario's prediction logs (with `shadowed`, also
    the candidate's shadow line of each); returns the ids still missing after `timeout` (empty: all there).

    The service ships its spool every CAPTURE_FLUSH_SECONDS: run monitoring after this, not before.
    """
    from mlops_sandbox.contracts import log_prefix
    from mlops_sandbox.storage import s3_client

    client, deadline = s3_client(settings), time.monotonic() + timeout
    bucket = settings.prediction_logs_bucket
    while True:
        seen: set[str] = set()
        shadows: set[str] = set()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=log_prefix(scenario)):
            for obj in page.get("Contents", []):
                for line in client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().splitlines():
                    try:
                        record = json.loads(line)
                        (shadows if record.get("shadow") else seen).add(record["request_id"])
                    except (ValueError, KeyError, TypeError, AttributeError):
                        continue  # a corrupt file (monitoring quarantines it): not a line of these requests
        missing = request_ids - (seen & shadows if shadowed else seen)
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(2)
