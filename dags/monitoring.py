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

A rerun of a window replaces its results: no duplicates.
"""

from __future__ import annotations

import json
import os

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag, task
from sandbox_containers import project_container

from mlops_sandbox.catalog import DEFAULT_SECTOR, SECTORS


@dag(
    dag_id="monitoring",
    schedule="*/5 * * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
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
    },
)
def monitoring():
    window = project_container(
        "monitor_window",
        [
            "mlops-sandbox",
            "monitor",
            "--scenario={{ params.scenario }}",
            # the window up to the run's time (cron-trigger and manual runs have no data interval)
            "--start={{ (dag_run.run_after - macros.timedelta(minutes=params.window_minutes)).isoformat() }}",
            "--end={{ dag_run.run_after.isoformat() }}",
        ],
        retries=0,
        do_xcom_push=True,  # its summary line is read below (a pod pushes XCom only when asked)
    )

    @task(retries=0)
    def flag_decay(summary: str) -> dict:
        """Fails, with the reasons, when the window shows decay: the alert you see in Airflow."""
        status = json.loads(summary)
        if status["decay"]:
            raise ValueError("DECAY: " + "; ".join(status["reasons"]))
        return status

    @task.short_circuit
    def auto_retrain_on(summary: str, mode: str) -> bool:
        """Only on decay, and only when opted in: AUTO_RETRAIN=true, or the run's param `auto_retrain=on`."""
        enabled = mode == "on" or (mode == "env" and os.environ.get("AUTO_RETRAIN", "false").lower() == "true")
        return bool(json.loads(summary)["decay"]) and enabled

    retrain = TriggerDagRunOperator(
        task_id="retrain",
        trigger_dag_id="training_pipeline",
        conf={"scenario": "{{ params.scenario }}"},
        wait_for_completion=True,
        poke_interval=10,
        failed_states=["failed"],
    )
    challenge = project_container(
        "challenge",
        [
            "mlops-sandbox",
            "challenge",
            "--scenario={{ params.scenario }}",
            # fresh labelled data: the requests of the window that decayed
            "--start={{ (dag_run.run_after - macros.timedelta(minutes=params.window_minutes)).isoformat() }}",
            "--end={{ dag_run.run_after.isoformat() }}",
        ],
        retries=0,
    )
    flag_decay(window.output)
    auto_retrain_on(window.output, "{{ params.auto_retrain }}") >> retrain >> challenge


monitoring()
