"""Checks the stack from the inside, the way every pipeline step runs.

Starts one container of the project image (through the scheduler's Docker socket, on the compose network;
on Kubernetes, a pod in the scheduler's namespace) and runs `mlops-sandbox check-stack` in it: every MinIO
bucket exists and the MLflow REST API answers. Trigger it after `docker compose up` (or a deploy) to see that
the DAGs can start their ML steps.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag
from sandbox_containers import project_container


@dag(
    dag_id="stack_selfcheck",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    # A check says how the stack is now: no retries that would wait for it to recover.
    default_args={"retries": 0, "execution_timeout": timedelta(minutes=5)},
    doc_md=__doc__,
    tags=["platform"],
)
def stack_selfcheck():
    project_container(task_id="check_stack", command=["mlops-sandbox", "check-stack"])


stack_selfcheck()
