"""Training pipeline (seed steps 12-19): raw batches in MinIO to a registered model version in MLflow.

Runs daily, and on a manual trigger with params. Every task is a container of the project image started on
the compose network, or a pod on Kubernetes (seed step 13); Airflow's interpreter never imports an ML library.

1. **ingest**: read the scenario's raw CSV batches from the raw-data bucket (seed step 14);
2. **validate**: check them against the declared schema; bad rows are quarantined with the rule each
   broke (`s3://pipeline/<scenario>/runs/<run>/quarantine/`);
3. **preprocess**: the typed feature table with a fixed train/test split (seed step 15);
4. **version_features**: `dvc add` + `dvc push` to the DVC remote in MinIO (seed step 16);
5. **train**: fetch the features back through DVC (seed step 17), train the chosen model, evaluate on the
   held-out test set, log params, metrics, the `.pth`, the model and its lineage to MLflow (seed step 18);
6. **register**: a new version in the model registry, with its lineage as tags (seed step 19).

The new version has no alias: a person writes its model card and promotes it
(`mlops-sandbox model promote VERSION --to staging ...`).

No step hangs: each has a timeout (`STEP_TIMEOUT_MINUTES`, `TRAIN_TIMEOUT_MINUTES` for train), and its S3, DVC
and MLflow calls time out well within it. A failed step is retried with exponential backoff (a MinIO that was
away for a minute costs a retry, not the run). Steps are idempotent per run: a retried `train` deletes the run
its failed try left, and a retried `register` finds the version it registered before.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import CronTriggerTimetable, Param, dag
from sandbox_containers import (
    RETRIES,
    STEP_TIMEOUT_MINUTES,
    TRAIN_TIMEOUT_MINUTES,
    project_container,
    timeout,
)

from mlops_sandbox.catalog import DEFAULT_MODEL_TYPE, DEFAULT_SECTOR, MODEL_TYPES, SECTORS

RUN = ["--scenario={{ params.scenario }}", "--run-id={{ run_id }}"]


def step(task_id: str, *extra: str, **kwargs):
    """`mlops-sandbox pipeline <step> --scenario ... --run-id ...` in a project container."""
    command = ["mlops-sandbox", "pipeline", task_id.replace("_", "-"), *RUN, *extra]
    return project_container(task_id, command, **kwargs)


@dag(
    dag_id="training_pipeline",
    # Daily at midnight UTC. No start date and run_immediately=0: unpausing the DAG (which triggering it from
    # the UI or the API does) starts no scheduled run at once, only the run you asked for.
    schedule=CronTriggerTimetable("0 0 * * *", timezone="UTC", run_immediately=timedelta(0)),
    catchup=False,
    max_active_runs=1,
    # Every step overwrites its own outputs under the run's prefix, so a retry is safe (see `register`).
    default_args={**RETRIES, "execution_timeout": timeout("STEP_TIMEOUT_MINUTES", STEP_TIMEOUT_MINUTES)},
    doc_md=__doc__,
    tags=["training"],
    params={
        "scenario": Param(DEFAULT_SECTOR, enum=sorted(SECTORS), description="simulated sector"),
        "model_type": Param(
            DEFAULT_MODEL_TYPE, enum=sorted(MODEL_TYPES), description="model type (`mlops-sandbox catalog` lists them)"
        ),
        "last_batches": Param(24, type="integer", minimum=1, description="train on the newest N raw batches"),
        "epochs": Param(
            80,
            type="integer",
            minimum=1,
            maximum=2000,
            description="epochs, for the model types trained in epochs (mlp)",
        ),
    },
)
def training_pipeline():
    (
        step("ingest", "--last-batches={{ params.last_batches }}")
        >> step("validate")
        >> step("preprocess")
        >> step("version_features")
        >> step(
            "train",
            "--model-type={{ params.model_type }}",
            "--epochs={{ params.epochs }}",
            execution_timeout=timeout("TRAIN_TIMEOUT_MINUTES", TRAIN_TIMEOUT_MINUTES),
            retries=1,  # a retry fits the model again (the earlier attempt's run is deleted); once covers a hiccup
        )
        # idempotent: a retry finds the version registered from the same MLflow run (pipeline.register)
        >> step("register")
    )


training_pipeline()
