"""How the DAGs run ML steps: as containers of the project image on the compose network (seed step 13).

Airflow's own interpreter never imports the ML libraries. Each step is a `mlops-sandbox ...` command run by
DockerOperator through the scheduler's Docker socket; on a cluster the same step maps to a
KubernetesPodOperator.
"""

from __future__ import annotations

import os

from airflow.providers.docker.operators.docker import DockerOperator

# Settings the project containers need, forwarded from the scheduler's environment (compose sets them).
PUBLIC_ENV_KEYS = (
    "S3_ENDPOINT_URL",
    "S3_REGION",
    "S3_ADDRESSING_STYLE",
    "RAW_DATA_BUCKET",
    "DVC_BUCKET",
    "MLFLOW_ARTIFACTS_BUCKET",
    "PREDICTION_LOGS_BUCKET",
    "MONITORING_BUCKET",
    "PIPELINE_BUCKET",
    "MLFLOW_TRACKING_URI",
    "SCENARIO",
    "MODEL_NAME",
    "EVIDENTLY_URL",
    "PREDICTOR_URL",
    "DECAY_MAX_DRIFT_SHARE",
    "DECAY_MAX_MAE_INCREASE",
    "PROMOTION_MIN_R2",
    "PROMOTION_MAX_MAPE",
    "PROMOTION_TOLERANCE",
)
# Passed as private_environment: never rendered in the Airflow UI.
SECRET_ENV_KEYS = ("S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY")

DEFAULT_PROJECT_IMAGE = "mlops-sandbox/project:0.1.0"
DEFAULT_NETWORK = "mlops-sandbox"


def _env(keys: tuple[str, ...]) -> dict[str, str]:
    return {key: os.environ[key] for key in keys if key in os.environ}


def project_container(task_id: str, command: list[str], **kwargs) -> DockerOperator:
    """A task that runs `command` in a fresh project-image container attached to the stack's network."""
    return DockerOperator(
        task_id=task_id,
        image=os.environ.get("PROJECT_IMAGE", DEFAULT_PROJECT_IMAGE),
        command=command,
        network_mode=os.environ.get("STACK_NETWORK", DEFAULT_NETWORK),
        environment=_env(PUBLIC_ENV_KEYS),
        private_environment=_env(SECRET_ENV_KEYS),
        auto_remove="success",
        mount_tmp_dir=False,
        **kwargs,
    )
