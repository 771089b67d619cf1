"""Monitoring (seed steps 11 and 20): every 5 minutes, the captured predictions of the window, checked.

One project container per run (`mlops-sandbox monitor`), on the run's data interval:
- pulls the prediction logs of the window and the ground truth known so far, by request id; corrupt or
  off-schema log files are quarantined (`s3://monitoring/<scenario>/quarantine/`) and never crash it;
- runs Evidently 0.7: data drift against the production model's training data (fetched through DVC), and
  MAE/RMSE where actuals exist;
- stores the snapshots in the Evidently UI project `<scenario> monitoring` (drift share, MAE and volume over
  time), and the verdict in `s3://monitoring/<scenario>/status.json`, `windows/` and `alerts/`;
- **fails with a DECAY message when the decay rule fires**, so the run shows red here. Retraining stays a
  person's decision (seed step 21): trigger `training_pipeline`.

A rerun of a window replaces its results: no duplicates.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag
from sandbox_containers import project_container


@dag(
    dag_id="monitoring",
    schedule="*/5 * * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["monitoring"],
    params={
        "scenario": Param("house_prices", enum=["house_prices", "delivery_delay"]),
        "window_minutes": Param(5, type="integer", minimum=1, maximum=1440, description="window length"),
    },
)
def monitoring():
    project_container(
        "monitor_window",
        [
            "mlops-sandbox",
            "monitor",
            "--scenario={{ params.scenario }}",
            # the window up to the run's time (cron-trigger and manual runs have no data interval)
            "--start={{ (dag_run.run_after - macros.timedelta(minutes=params.window_minutes)).isoformat() }}",
            "--end={{ dag_run.run_after.isoformat() }}",
            "--fail-on-decay",
        ],
        retries=0,
    )


monitoring()
