"""Monitoring (seed steps 11, 20 and 21): every 5 minutes, the captured predictions of the window, checked.

`monitor_window` runs one project container (`mlops-sandbox monitor`) on the window up to the run's time:
- pulls the prediction logs of the window and the ground truth known so far, by request id; corrupt or
  off-schema log files are quarantined (`s3://monitoring/<scenario>/quarantine/`) and never crash it;
- runs Evidently 0.7: data drift against the production model's training data (fetched through DVC), and
  MAE/RMSE where actuals exist;
- stores the snapshots in the Evidently UI project `<scenario> monitoring` (drift share, MAE and volume over
  time), and the verdict in `s3://monitoring/<scenario>/status.json`, `windows/` and `alerts/`.

`flag_decay` **fails with the decay reasons when the rule fires**, so the run shows red here. Retraining is a
person's decision by default (trigger `training_pipeline`). With `AUTO_RETRAIN=true` in `.env`, decay also
triggers `training_pipeline` and then `challenge`: the new version is promoted only if it beats production
on fresh labelled requests, and the decision with its figures goes to `s3://monitoring/<scenario>/decisions/`.

Scheduled runs catch up every window since the last checked one, up to now less the allowed lateness, and
check again the earlier windows that actuals arrived for since (within `MONITORING_RECHECK_HOURS`): a decay
such a window shows for the first time fails `flag_decay` too, marked "(late actuals)".

A rerun of a window replaces its results: no duplicates. Nothing here is retried: the next window comes in
5 minutes. Every task has a timeout, and `wait_for_retraining` gives up on the training run after
`RETRAIN_WAIT_MINUTES` (the training run goes on), so one run never holds up the next windows for longer.
"""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag, task
from sandbox_containers import RETRAIN_WAIT_MINUTES, STEP_TIMEOUT_MINUTES, project_container, timeout

from mlops_sandbox.catalog import DEFAULT_SECTOR, SECTORS


@dag(
    dag_id="monitoring",
    schedule="*/5 * * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    # no retries: the next window is 5 minutes away, and a second try of `retrain` would start a second training
    default_args={"retries": 0, "execution_timeout": timeout("STEP_TIMEOUT_MINUTES", STEP_TIMEOUT_MINUTES)},
    doc_md=__doc__,
    tags=["monitoring"],
    params={
        "scenario": Param(DEFAULT_SECTOR, enum=sorted(SECTORS)),
        "window_minutes": Param(5, type="integer", minimum=1, maximum=1440, description="window length"),
        "auto_retrain": Param(
            "env",
            enum=["env", "on", "off"],
            description="retrain on decay: as AUTO_RETRAIN says, or on/off for this run",
        ),
        "catch_up": Param(
            "scheduled",
            enum=["scheduled", "on", "off"],
            description="check every window since the last checked one, up to now less the allowed lateness "
            "(scheduled runs), or only the last window_minutes up to now (runs you trigger); on/off for this run",
        ),
        "allowed_lateness_seconds": Param(
            None,
            type=["null", "integer"],
            minimum=0,
            description="catch-up: how old rows must be to be checked (empty: MONITORING_ALLOWED_LATENESS_SECONDS)",
        ),
    },
)
def monitoring():
    window = project_container(
        "monitor_window",
        [
            "mlops-sandbox",
            "monitor",
            "--scenario={{ params.scenario }}",
            # scheduled runs catch up from the last checked window (mlops_sandbox.monitor.steps.catch_up); a run
            # someone triggers checks the window up to its time (those runs have no data interval)
            "{% if params.catch_up == 'on' or (params.catch_up == 'scheduled' and dag_run.run_type == 'scheduled') %}"
            "--catch-up"
            "{% else %}"
            "--start={{ (dag_run.run_after - macros.timedelta(minutes=params.window_minutes)).isoformat() }}"
            "{% endif %}",
            "--end={{ dag_run.run_after.isoformat() }}",
            "--window-minutes={{ params.window_minutes }}",
            "--lateness-seconds="
            "{{ '' if params.allowed_lateness_seconds is none else params.allowed_lateness_seconds }}",
        ],
        do_xcom_push=True,  # its summary line is read below (a pod pushes XCom only when asked)
    )

    @task(execution_timeout=timedelta(minutes=1))
    def flag_decay(summary: str) -> dict:
        """Fails, with the reasons, when the window shows decay: the alert you see in Airflow."""
        status = json.loads(summary)
        if status["decay"]:
            raise ValueError("DECAY: " + "; ".join(status["reasons"]))
        return status

    @task.short_circuit(execution_timeout=timedelta(minutes=1))
    def auto_retrain_on(summary: str, mode: str) -> bool:
        """Only on decay, and only when opted in: AUTO_RETRAIN=true, or the run's param `auto_retrain=on`."""
        enabled = mode == "on" or (mode == "env" and os.environ.get("AUTO_RETRAIN", "false").lower() == "true")
        return bool(json.loads(summary)["decay"]) and enabled

    # Starts the training run and returns. Its own wait_for_completion has no deadline (Airflow 3.3 polls
    # after execute() returns, out of execution_timeout's reach): the wait is the next task, with one.
    retrain = TriggerDagRunOperator(
        task_id="retrain",
        trigger_dag_id="training_pipeline",
        conf={"scenario": "{{ params.scenario }}"},
        execution_timeout=timedelta(minutes=5),
    )
    retrain_wait = timeout("RETRAIN_WAIT_MINUTES", RETRAIN_WAIT_MINUTES)

    @task(execution_timeout=retrain_wait + timedelta(minutes=5))
    def wait_for_retraining(wait_seconds: float = retrain_wait.total_seconds(), poll_seconds: float = 10, ti=None):
        """Until the training run that `retrain` started succeeds. Fails when that run fails, or when it is still
        going after RETRAIN_WAIT_MINUTES: the run goes on, and its version can be challenged later."""
        from airflow.sdk.exceptions import AirflowFailException

        run_id = ti.xcom_pull(task_ids="retrain", key="trigger_run_id")

        def state() -> str:
            value = ti.get_dagrun_state(dag_id="training_pipeline", run_id=run_id)
            return getattr(value, "value", value)  # a DagRunState, said as its plain name

        deadline = time.monotonic() + wait_seconds
        while (now := state()) not in ("success", "failed"):
            if time.monotonic() >= deadline:
                raise AirflowFailException(
                    f"gave up waiting for training_pipeline run {run_id}: still {now} after {wait_seconds / 60:g} min "
                    "(RETRAIN_WAIT_MINUTES). It goes on; once it succeeds, run `mlops-sandbox challenge` on its "
                    "version, or wait for the next decay"
                )
            time.sleep(poll_seconds)
        if now == "failed":
            raise AirflowFailException(f"training_pipeline run {run_id} failed: nothing new to challenge with")
        return run_id

    challenge = project_container(
        "challenge",
        [
            "mlops-sandbox",
            "challenge",
            "--scenario={{ params.scenario }}",
            # fresh labelled data: the requests since the start of the newest window that decayed (this run's,
            # or the newest of those it caught up)
            "--since-alert",
        ],
    )
    flag_decay(window.output)
    auto_retrain_on(window.output, "{{ params.auto_retrain }}") >> retrain >> wait_for_retraining() >> challenge


monitoring()
