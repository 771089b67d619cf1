"""Drops simulated industry data into the raw-data bucket, on demand (seed step 22).

Trigger it with params to land `batches` batches of `rows` records, one simulated `every` apart from
`start` (default: the current hour; `next`: the hour after the newest batch already in the bucket).
`drift` injects a scenario, as `KIND,START,STRENGTH`, for example `concept,2026-01-02T00:00Z,1.0` (KIND:
covariate, concept or quality). The same seed and clock always give the same rows. The same thing from a
shell: `docker compose run --rm cli simulate --batches 3`.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag
from sandbox_containers import STEP_TIMEOUT_MINUTES, project_container, timeout

from mlops_sandbox.catalog import DEFAULT_SECTOR, SECTORS


@dag(
    dag_id="simulate_batch",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    # Not retried: with `start` empty (this hour) or `next`, a later try may land its batches at another time.
    default_args={"retries": 0, "execution_timeout": timeout("STEP_TIMEOUT_MINUTES", STEP_TIMEOUT_MINUTES)},
    doc_md=__doc__,
    tags=["data"],
    params={
        "scenario": Param(DEFAULT_SECTOR, enum=sorted(SECTORS)),
        "rows": Param(500, type="integer", minimum=1, maximum=100_000),
        "batches": Param(1, type="integer", minimum=1, maximum=500),
        "every": Param("1h", type="string", pattern=r"^[0-9]+[smhd]$"),
        "seed": Param(42, type="integer"),
        "start": Param(
            "", type="string", description="ISO 8601 time of the first batch; empty: this hour; next: after the newest"
        ),
        "drift": Param("", type="string", description="KIND,START,STRENGTH or empty"),
    },
)
def simulate_batch():
    project_container(
        "simulate",
        [
            "mlops-sandbox",
            "simulate",
            "--scenario={{ params.scenario }}",
            "--rows={{ params.rows }}",
            "--batches={{ params.batches }}",
            "--every={{ params.every }}",
            "--seed={{ params.seed }}",
            "--start={{ params.start }}",
            "--drift={{ params.drift }}",
        ],
    )


simulate_batch()
