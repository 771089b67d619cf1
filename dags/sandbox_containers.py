"""How the DAGs run ML steps: each step is a `mlops-sandbox ...` command in a fresh container of the project
image (seed step 13). Airflow's own interpreter never imports the ML libraries.

`PIPELINE_RUNNER` in the scheduler's environment chooses how the container runs:
- `docker` (the default; compose): a DockerOperator through the scheduler's Docker socket, on the stack's
  network. The S3 keys go in as private environment, never rendered in the Airflow UI. The container drops
  every capability and cannot gain privileges, and a try first removes what an earlier try left running.
- `kubernetes` (deploy/): a KubernetesPodOperator, one pod per step in the scheduler's namespace, with the same
  image, command and public environment. The S3 keys are not in the task at all: the pod reads them from the
  Kubernetes Secret `PIPELINE_SECRET_NAME`. The pod runs as the image's non-root user on a read-only root
  filesystem, with empty scratch folders where the steps write; a failed pod is kept for a look.
"""

from __future__ import annotations

import functools
import os
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator

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
    "EXPERIMENT_MIN_LABELLED",
    "MONITORING_ALLOWED_LATENESS_SECONDS",
    "MONITORING_MAX_CATCH_UP_WINDOWS",
    "MONITORING_RECHECK_HOURS",
    "MLFLOW_DISABLE_TELEMETRY",
    # timeouts and retries of the steps' S3, DVC and MLflow calls (forwarded only when set)
    "S3_CONNECT_TIMEOUT",
    "S3_READ_TIMEOUT",
    "S3_MAX_ATTEMPTS",
    "DVC_TIMEOUT_SECONDS",
    "DVC_ATTEMPTS",
    "EVIDENTLY_TIMEOUT_SECONDS",
    "EVIDENTLY_ATTEMPTS",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
)
# The S3 keys, by the key that holds each in the Kubernetes Secret (the MinIO root user, as in .env).
SECRET_ENV_SOURCE_KEYS = {"S3_ACCESS_KEY_ID": "MINIO_ROOT_USER", "S3_SECRET_ACCESS_KEY": "MINIO_ROOT_PASSWORD"}
SECRET_ENV_KEYS = tuple(SECRET_ENV_SOURCE_KEYS)

DEFAULT_PROJECT_IMAGE = "mlops-sandbox/project:0.1.0"
DEFAULT_NETWORK = "mlops-sandbox"
DEFAULT_RUNNER = "docker"

DEFAULT_NAMESPACE = "mlops-sandbox"
SERVICE_ACCOUNT_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
DEFAULT_SECRET_NAME = "mlops-sandbox-secrets"
DEFAULT_SERVICE_ACCOUNT = "mlops-pipeline-step"
# One step pod. The cluster budget in the docs counts one step pod at a time at these limits.
STEP_POD_RESOURCES = {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "3Gi"}}
SANDBOX_UID = 1000  # the image's `sandbox` user (services/project/Dockerfile)
# Where the steps write, as empty folders over the read-only root filesystem: /tmp for tempfile (the DVC
# repositories of versioning.py, pipeline.py's and MLflow's temporary files, the monitor's reference cache),
# $HOME (the working directory; caches of DVC, matplotlib and torch), /var/tmp for DVC's site cache.
SCRATCH_DIRS = {"tmp": "/tmp", "home": "/home/sandbox", "var-tmp": "/var/tmp"}
STEP_POD_LABELS = {"app.kubernetes.io/part-of": "mlops-sandbox", "app.kubernetes.io/component": "pipeline-step"}


# How long a task may run before Airflow stops it (its container or pod too: the operators' on_kill), from the
# scheduler's and DAG processor's environment, in minutes. Every ML step's own S3, DVC and MLflow calls time out
# well within these (storage.py, versioning.py, tracking.py): these catch whatever else hangs.
STEP_TIMEOUT_MINUTES = 30  # each step, unless it says otherwise
TRAIN_TIMEOUT_MINUTES = 120  # training_pipeline's `train`: fetch, fit, evaluate, log
RETRAIN_WAIT_MINUTES = 60  # how long a monitoring run waits for the training run it started

# A failed step that is safe to run again (it overwrites its own outputs) is retried after 30 s, then after
# 1 min, 2 min, ... (Airflow spreads each over up to twice that, per task), never more than 10 min apart.
RETRIES = {
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": 2.0,  # the multiplier (Airflow 3); True would mean 1, a constant delay
    "max_retry_delay": timedelta(minutes=10),
}


def timeout(key: str, default: float) -> timedelta:
    """A task timeout: the environment's `key` (in minutes) if set, else `default` minutes."""
    value = os.environ.get(key) or default
    try:
        minutes = float(value)
    except ValueError:
        minutes = 0.0
    if minutes <= 0:
        raise ValueError(f"{key}={value!r}: expected a number of minutes above 0")
    return timedelta(minutes=minutes)


def _env(keys: tuple[str, ...]) -> dict[str, str]:
    return {key: os.environ[key] for key in keys if key in os.environ}


def _project_image() -> str:
    return os.environ.get("PROJECT_IMAGE", DEFAULT_PROJECT_IMAGE)


# The labels on each step container: its stack (the compose network: two stacks on one Docker engine, such as
# yours and the test stack, have the same scheduled run ids), its task (`dag_id/task_id/run_id/map_index`),
# and its try's number.
STACK_LABEL = "io.mlops-sandbox.stack"
STEP_LABEL = "io.mlops-sandbox.step"
STEP_TRY_LABEL = "io.mlops-sandbox.step.try"
LOCKED_DOWN = {"cap_drop": ["ALL"], "security_opt": ["no-new-privileges:true"]}


class LockedDownClient:
    """A Docker API client whose containers drop every Linux capability and cannot gain privileges (compose's
    `cap_drop: [ALL]` and `no-new-privileges`), which DockerOperator has no setting for. The rest is the
    client's own."""

    def __init__(self, client) -> None:
        self._client = client

    def __getattr__(self, name: str):
        return getattr(self._client, name)

    def create_host_config(self, **kwargs):
        return self._client.create_host_config(**{**kwargs, **LOCKED_DOWN})


@functools.cache
def step_container_class() -> type:
    """DockerOperator for the ML steps (imported only where the docker runner is used): locked down
    (`LockedDownClient`), each container labelled with its task and try, and before a try starts its container,
    it removes any that an earlier try of the same task left behind: one still running after the scheduler
    was killed mid-step (its task process died without stopping it), or one that was never removed."""
    from airflow.providers.docker.operators.docker import DockerOperator

    class StepContainer(DockerOperator):
        @property
        def cli(self):
            return LockedDownClient(self.hook.api_client)

        def execute(self, context):
            ti = context["ti"]
            step = f"{ti.dag_id}/{ti.task_id}/{ti.run_id}/{getattr(ti, 'map_index', -1)}"
            ours = {STACK_LABEL: str(self.network_mode), STEP_LABEL: step}
            self.labels = {**(self.labels or {}), **ours, STEP_TRY_LABEL: str(ti.try_number)}
            filters = {"label": [f"{key}={value}" for key, value in ours.items()]}
            for left in self.cli.containers(all=True, filters=filters):
                labels = left.get("Labels") or {}
                self.log.warning(
                    "removing container %s (%s) of try %s of this task, left behind: the scheduler stopped while "
                    "it ran",
                    left["Id"][:12],
                    left.get("State", "?"),
                    labels.get(STEP_TRY_LABEL, "?"),
                )
                self.cli.remove_container(left["Id"], force=True)
            return super().execute(context)

    return StepContainer


def _docker_container(task_id: str, command: list[str], **kwargs) -> BaseOperator:
    return step_container_class()(
        task_id=task_id,
        image=_project_image(),
        command=command,
        network_mode=os.environ.get("STACK_NETWORK", DEFAULT_NETWORK),
        environment=_env(PUBLIC_ENV_KEYS),
        private_environment=_env(SECRET_ENV_KEYS),
        # removed however it ends: its output is already in the task's log, and failed containers would pile up
        auto_remove="force",
        mount_tmp_dir=False,
        **kwargs,
    )


def pipeline_namespace() -> str:
    """The scheduler's own namespace: `KUBERNETES_NAMESPACE`, else the one of its service account's token."""
    if namespace := os.environ.get("KUBERNETES_NAMESPACE"):
        return namespace
    try:
        return SERVICE_ACCOUNT_NAMESPACE_FILE.read_text().strip() or DEFAULT_NAMESPACE
    except OSError:
        return DEFAULT_NAMESPACE


def _kubernetes_pod(task_id: str, command: list[str], **kwargs) -> BaseOperator:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.providers.cncf.kubernetes.secret import Secret
    from kubernetes.client import models as k8s

    secret_name = os.environ.get("PIPELINE_SECRET_NAME", DEFAULT_SECRET_NAME)
    locked_down = k8s.V1SecurityContext(
        allow_privilege_escalation=False,
        capabilities=k8s.V1Capabilities(drop=["ALL"]),
        read_only_root_filesystem=True,
    )
    return KubernetesPodOperator(
        task_id=task_id,
        image=_project_image(),
        cmds=command[:1],
        arguments=command[1:],
        env_vars=_env(PUBLIC_ENV_KEYS),
        secrets=[Secret("env", name, secret_name, key) for name, key in SECRET_ENV_SOURCE_KEYS.items()],
        namespace=pipeline_namespace(),
        in_cluster=True,
        service_account_name=os.environ.get("PIPELINE_SERVICE_ACCOUNT", DEFAULT_SERVICE_ACCOUNT),
        labels=STEP_POD_LABELS,
        container_resources=k8s.V1ResourceRequirements(**STEP_POD_RESOURCES),
        # pod-wide, so the XCom sidecar (added by do_xcom_push=True) runs as the same non-root user
        security_context=k8s.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=SANDBOX_UID,
            run_as_group=SANDBOX_UID,
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
        ),
        container_security_context=locked_down,
        xcom_sidecar_container_security_context=locked_down,
        volumes=[k8s.V1Volume(name=name, empty_dir=k8s.V1EmptyDirVolumeSource()) for name in SCRATCH_DIRS],
        volume_mounts=[k8s.V1VolumeMount(name=name, mount_path=path) for name, path in SCRATCH_DIRS.items()],
        get_logs=True,
        on_finish_action="delete_succeeded_pod",
        **kwargs,
    )


RUNNERS = {"docker": _docker_container, "kubernetes": _kubernetes_pod}


def project_container(task_id: str, command: list[str], **kwargs) -> BaseOperator:
    """A task that runs `command` in a fresh project-image container, the way `PIPELINE_RUNNER` says.

    Extra keyword arguments go to the operator (`retries=0`, ...). XCom: a DockerOperator pushes the last
    line of stdout unless `do_xcom_push=False`; a KubernetesPodOperator pushes the step's
    `/airflow/xcom/return.json` (the same line) only with `do_xcom_push=True`, so a task whose output is
    read downstream passes `do_xcom_push=True`.
    """
    runner = os.environ.get("PIPELINE_RUNNER") or DEFAULT_RUNNER
    if runner not in RUNNERS:
        raise ValueError(f"PIPELINE_RUNNER={runner!r}: expected one of {', '.join(RUNNERS)}")
    return RUNNERS[runner](task_id, command, **kwargs)
