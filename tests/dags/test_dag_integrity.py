"""Every DAG file imports cleanly and wires the tasks we expect, with the ML steps run by Docker (compose) or as
Kubernetes pods (`PIPELINE_RUNNER=kubernetes`). Needs Airflow (the .venv-airflow venv)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

pytestmark = pytest.mark.dags

airflow = pytest.importorskip("airflow", reason="DAG tests run in the Airflow venv (make test-dags)")

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"


# What the scheduler's environment holds (compose or the cluster sets it), the same in both modes.
SCHEDULER_ENV = {
    "PROJECT_IMAGE": "mlops-sandbox/project:test",
    "S3_ENDPOINT_URL": "http://minio:9000",
    "MLFLOW_TRACKING_URI": "http://mlflow:5000",
    "S3_ACCESS_KEY_ID": "sandbox",
    "S3_SECRET_ACCESS_KEY": "s3cr3t",
}


def parse_dags(**env: str):
    """A fresh DagBag of dags/, parsed with the scheduler's environment plus `env`."""
    from airflow.dag_processing.dagbag import DagBag

    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**SCHEDULER_ENV, **env}.items():
            mp.setenv(key, value)
        return DagBag(dag_folder=str(DAGS_DIR), bundle_path=DAGS_DIR, bundle_name="dags-folder")


@pytest.fixture(scope="module")
def dagbag():
    return parse_dags(PIPELINE_RUNNER="docker")


@pytest.fixture(scope="module")
def k8s_dagbag():
    return parse_dags(PIPELINE_RUNNER="kubernetes", KUBERNETES_NAMESPACE="mlops-test")


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_dag_ids_are_file_names(dagbag):
    dag_files = {p.stem for p in DAGS_DIR.glob("*.py")} - {"sandbox_containers"}
    assert set(dagbag.dag_ids) == dag_files


def test_stack_selfcheck_runs_check_in_project_container(dagbag, monkeypatch):
    dag = dagbag.dags["stack_selfcheck"]
    assert [t.task_id for t in dag.tasks] == ["check_stack"]
    task = dag.get_task("check_stack")
    assert task.task_type == "StepContainer"
    assert task.command == ["mlops-sandbox", "check-stack"]
    assert task.image.startswith("mlops-sandbox/project:")
    assert task.auto_remove == "force"  # failed step containers are removed too
    # secrets never go in the rendered (templated) environment
    assert "S3_SECRET_ACCESS_KEY" not in task.environment


def test_project_container_takes_image_network_and_env_from_scheduler(monkeypatch):
    from sandbox_containers import project_container

    monkeypatch.delenv("PIPELINE_RUNNER", raising=False)  # the default: Docker
    monkeypatch.setenv("PROJECT_IMAGE", "mlops-sandbox/project:test")
    monkeypatch.setenv("STACK_NETWORK", "some-net")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("S3_SECRET_ACCESS_KEY", "s3cr3t")
    op = project_container("t", ["true"])
    assert op.image == "mlops-sandbox/project:test"
    assert op.network_mode == "some-net"
    assert op.environment["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert op._private_environment == {"S3_SECRET_ACCESS_KEY": "s3cr3t"}


class FakeDocker:
    """The Docker API calls a step makes, recorded; one container of an earlier try is still running."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __getattr__(self, name: str):
        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return {
                "images": [{"Id": "image"}],
                "containers": [{"Id": "c0ffee" * 4, "State": "running", "Labels": {"io.mlops-sandbox.step.try": "1"}}],
                "create_host_config": {"host": "config", **kwargs},
                "create_container": {"Id": "new"},
                "attach": iter([b"done\n"]),
                "wait": {"StatusCode": 0},
            }.get(name)

        return call


def test_a_step_container_is_locked_down_labelled_and_replaces_what_an_earlier_try_left_running(monkeypatch):
    """DockerOperator has no cap_drop or security_opt: the step's client adds them to every container's host
    config. Before the try starts its container, the one an earlier try left running (the scheduler was killed
    mid-step) is removed; the new one is labelled with its task and try, and removed however it ends."""
    from types import SimpleNamespace

    from sandbox_containers import STACK_LABEL, STEP_LABEL, STEP_TRY_LABEL, project_container

    monkeypatch.delenv("PIPELINE_RUNNER", raising=False)
    monkeypatch.setenv("STACK_NETWORK", "mlops-sandbox-test")  # another stack on the engine is not touched
    op = project_container("train", ["mlops-sandbox", "train"])
    docker = FakeDocker()
    monkeypatch.setattr(type(op), "hook", SimpleNamespace(api_client=docker, client_created=True))
    ti = SimpleNamespace(dag_id="training_pipeline", task_id="train", run_id="manual__1", map_index=-1, try_number=2)
    op.execute({"ti": ti})

    names = [name for name, _, _ in docker.calls]
    step = "training_pipeline/train/manual__1/-1"
    mine = [f"{STACK_LABEL}=mlops-sandbox-test", f"{STEP_LABEL}={step}"]
    assert docker.calls[0] == ("containers", (), {"all": True, "filters": {"label": mine}})
    assert docker.calls[1] == ("remove_container", ("c0ffee" * 4,), {"force": True})
    assert names.index("remove_container") < names.index("create_container") < names.index("start")
    (host_config,) = [kwargs for name, _, kwargs in docker.calls if name == "create_host_config"]
    assert host_config["cap_drop"] == ["ALL"] and host_config["security_opt"] == ["no-new-privileges:true"]
    (created,) = [kwargs for name, _, kwargs in docker.calls if name == "create_container"]
    assert created["labels"] == {STACK_LABEL: "mlops-sandbox-test", STEP_LABEL: step, STEP_TRY_LABEL: "2"}
    assert created["host_config"]["cap_drop"] == ["ALL"]
    assert docker.calls[-1] == ("remove_container", ("new",), {"force": True})


def test_training_pipeline_runs_the_seed_steps_in_order_in_project_containers(dagbag):
    dag = dagbag.dags["training_pipeline"]
    order = ["ingest", "validate", "preprocess", "version_features", "train", "register"]
    assert {t.task_id for t in dag.tasks} == set(order)
    for upstream, downstream in zip(order, order[1:], strict=False):
        assert dag.get_task(upstream).downstream_task_ids == {downstream}
    for task in dag.tasks:
        assert task.task_type == "StepContainer"
        assert task.command[:3] == ["mlops-sandbox", "pipeline", task.task_id.replace("_", "-")]
        assert "--run-id={{ run_id }}" in task.command
    # daily, and unpausing it (as a manual trigger does) starts no scheduled run on the spot
    assert dag.timetable.expression == "0 0 * * *" and dag.start_date is None
    assert dag.timetable.run_immediately == timedelta(0)
    assert set(dag.params) == {"scenario", "model_type", "last_batches", "epochs"}
    assert "--model-type={{ params.model_type }}" in dag.get_task("train").command


def test_monitoring_checks_the_run_window_every_five_minutes_and_fails_on_decay(dagbag):
    dag = dagbag.dags["monitoring"]
    assert {t.task_id for t in dag.tasks} == {
        "monitor_window",
        "flag_decay",
        "auto_retrain_on",
        "retrain",
        "wait_for_retraining",
        "challenge",
    }
    task = dag.get_task("monitor_window")
    assert task.task_type == "StepContainer" and task.retries == 0
    assert "--end={{ dag_run.run_after.isoformat() }}" in task.command
    assert task.downstream_task_ids == {"flag_decay", "auto_retrain_on"}
    assert dag.get_task("auto_retrain_on").downstream_task_ids == {"retrain"}
    assert dag.get_task("retrain").trigger_dag_id == "training_pipeline"
    assert dag.get_task("retrain").downstream_task_ids == {"wait_for_retraining"}
    assert dag.get_task("wait_for_retraining").downstream_task_ids == {"challenge"}
    assert dag.timetable.expression == "*/5 * * * *"


@pytest.mark.parametrize(
    ("run_type", "catch_up", "lateness", "expected"),
    [
        ("scheduled", "scheduled", None, ["--catch-up", "--lateness-seconds="]),
        ("manual", "scheduled", None, ["--start=2026-05-01T11:55:00+00:00", "--lateness-seconds="]),
        ("manual", "on", 15, ["--catch-up", "--lateness-seconds=15"]),
        ("scheduled", "off", None, ["--start=2026-05-01T11:55:00+00:00", "--lateness-seconds="]),
    ],
)
def test_scheduled_monitoring_runs_catch_up_and_triggered_ones_check_the_last_window(
    dagbag, run_type, catch_up, lateness, expected
):
    """The monitor_window command as Airflow renders it for each kind of run."""
    import pendulum
    from airflow.utils.types import DagRunType
    from jinja2 import Environment

    task = dagbag.dags["monitoring"].get_task("monitor_window")
    context = {
        "params": {
            "scenario": "house_prices",
            "window_minutes": 5,
            "catch_up": catch_up,
            "allowed_lateness_seconds": lateness,
        },
        "dag_run": type("Run", (), {"run_type": DagRunType(run_type), "run_after": pendulum.datetime(2026, 5, 1, 12)}),
        "macros": type("Macros", (), {"timedelta": timedelta}),
    }
    rendered = [Environment().from_string(arg).render(context) for arg in task.command]
    assert rendered[:3] == ["mlops-sandbox", "monitor", "--scenario=house_prices"]
    assert rendered[3] == expected[0] and rendered[-1] == expected[1]
    assert "--end=2026-05-01T12:00:00+00:00" in rendered and "--window-minutes=5" in rendered


def test_flag_decay_fails_only_on_decay_and_auto_retrain_is_opt_in(dagbag, monkeypatch):
    dag = dagbag.dags["monitoring"]
    flag = dag.get_task("flag_decay").python_callable
    gate = dag.get_task("auto_retrain_on").python_callable
    healthy = json.dumps({"decay": False, "reasons": []})
    decayed = json.dumps({"decay": True, "reasons": ["drift: 60% of features drifted (limit 50%)"]})
    assert flag(healthy)["decay"] is False
    with pytest.raises(ValueError, match="DECAY: drift: 60%"):
        flag(decayed)
    monkeypatch.delenv("AUTO_RETRAIN", raising=False)
    assert gate(decayed, "env") is False
    assert gate(decayed, "on") is True and gate(healthy, "on") is False
    monkeypatch.setenv("AUTO_RETRAIN", "true")
    assert gate(decayed, "env") is True and gate(healthy, "env") is False
    assert gate(decayed, "off") is False


def docker_steps(dagbag) -> list:
    steps = [t for dag in dagbag.dags.values() for t in dag.tasks if t.task_type == "StepContainer"]
    assert len(steps) == 10  # 6 training steps, monitor_window, challenge, simulate, check_stack
    return steps


def test_kubernetes_mode_parses_the_same_dags_and_task_graphs(dagbag, k8s_dagbag):
    assert k8s_dagbag.import_errors == {}
    assert set(k8s_dagbag.dag_ids) == set(dagbag.dag_ids)
    for dag_id, dag in dagbag.dags.items():
        pods = k8s_dagbag.dags[dag_id]
        assert {t.task_id: t.downstream_task_ids for t in pods.tasks} == {
            t.task_id: t.downstream_task_ids for t in dag.tasks
        }


def test_every_docker_step_is_a_pod_with_the_same_image_command_and_public_env(dagbag, k8s_dagbag):
    for step in docker_steps(dagbag):
        pod = k8s_dagbag.dags[step.dag_id].get_task(step.task_id)
        assert pod.task_type == "KubernetesPodOperator"
        assert pod.image == step.image == "mlops-sandbox/project:test"
        assert pod.cmds + pod.arguments == step.command
        assert pod.env_vars == step.environment
        assert pod.env_vars["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert pod.namespace == "mlops-test" and pod.in_cluster is True
        assert pod.retries == step.retries
        assert pod.execution_timeout == step.execution_timeout


def test_pods_read_the_s3_keys_from_the_kubernetes_secret_never_from_the_task(k8s_dagbag):
    pods = [t for dag in k8s_dagbag.dags.values() for t in dag.tasks if t.task_type == "KubernetesPodOperator"]
    assert len(pods) == 10
    for pod in pods:
        assert not {"S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"} & set(pod.env_vars)
        assert "s3cr3t" not in repr(pod.env_vars) and "s3cr3t" not in repr(pod.secrets)
        assert {(s.deploy_type, s.deploy_target, s.secret, s.key) for s in pod.secrets} == {
            ("env", "S3_ACCESS_KEY_ID", "mlops-sandbox-secrets", "MINIO_ROOT_USER"),
            ("env", "S3_SECRET_ACCESS_KEY", "mlops-sandbox-secrets", "MINIO_ROOT_PASSWORD"),
        }


def test_no_docker_operator_is_left_in_kubernetes_mode(k8s_dagbag):
    task_types = {t.task_type for dag in k8s_dagbag.dags.values() for t in dag.tasks}
    assert not task_types & {"DockerOperator", "StepContainer"}
    assert "KubernetesPodOperator" in task_types


def test_step_pods_are_locked_down_labelled_and_kept_only_when_they_fail(k8s_dagbag):
    pod = k8s_dagbag.dags["training_pipeline"].get_task("train")
    assert pod.service_account_name == "mlops-pipeline-step"
    assert pod.on_finish_action.value == "delete_succeeded_pod" and pod.get_logs is True
    assert pod.labels["app.kubernetes.io/part-of"] == "mlops-sandbox"
    assert pod.labels["app.kubernetes.io/component"] == "pipeline-step"
    assert pod.container_resources.requests == {"cpu": "250m", "memory": "512Mi"}
    assert pod.container_resources.limits == {"cpu": "2", "memory": "3Gi"}
    assert pod.security_context.run_as_non_root is True and pod.security_context.run_as_user == 1000
    container = pod.container_security_context
    assert container.read_only_root_filesystem is True and container.allow_privilege_escalation is False
    assert container.capabilities.drop == ["ALL"]
    # the read-only root filesystem leaves the steps these folders to write to
    assert {m.mount_path for m in pod.volume_mounts} == {"/tmp", "/home/sandbox", "/var/tmp"}
    assert all(v.empty_dir is not None for v in pod.volumes)


def test_pod_arguments_are_templated_like_the_docker_command(k8s_dagbag):
    pod = k8s_dagbag.dags["training_pipeline"].get_task("train")
    assert {"cmds", "arguments"} <= set(pod.template_fields)
    params = {"scenario": "delivery_delay", "model_type": "linear", "epochs": 5}
    rendered = pod.render_template(pod.arguments, {"params": params, "run_id": "r1"})
    assert rendered == [
        "pipeline",
        "train",
        "--scenario=delivery_delay",
        "--run-id=r1",
        "--model-type=linear",
        "--epochs=5",
    ]


def test_monitor_window_pushes_its_summary_as_xcom_in_both_modes(dagbag, k8s_dagbag):
    assert dagbag.dags["monitoring"].get_task("monitor_window").do_xcom_push is True
    assert k8s_dagbag.dags["monitoring"].get_task("monitor_window").do_xcom_push is True
    # other pods get no XCom sidecar: nothing reads their output
    assert k8s_dagbag.dags["training_pipeline"].get_task("train").do_xcom_push is False


def test_pipeline_namespace_is_the_schedulers_own(monkeypatch, tmp_path):
    import sandbox_containers

    monkeypatch.delenv("KUBERNETES_NAMESPACE", raising=False)
    monkeypatch.setattr(sandbox_containers, "SERVICE_ACCOUNT_NAMESPACE_FILE", tmp_path / "namespace")
    assert sandbox_containers.pipeline_namespace() == "mlops-sandbox"  # outside a cluster
    (tmp_path / "namespace").write_text("from-token\n")
    assert sandbox_containers.pipeline_namespace() == "from-token"
    monkeypatch.setenv("KUBERNETES_NAMESPACE", "from-env")
    assert sandbox_containers.pipeline_namespace() == "from-env"


def test_an_unknown_runner_is_refused_with_the_allowed_ones(monkeypatch):
    from sandbox_containers import project_container

    monkeypatch.setenv("PIPELINE_RUNNER", "podman")
    with pytest.raises(ValueError, match="PIPELINE_RUNNER='podman'.*docker, kubernetes"):
        project_container("t", ["true"])


def test_param_choices_come_from_the_catalog(dagbag):
    from mlops_sandbox import catalog

    for dag_id in ("training_pipeline", "monitoring", "simulate_batch"):
        scenario = dagbag.dags[dag_id].params.get_param("scenario")
        assert scenario.schema["enum"] == sorted(catalog.SECTORS)
        assert scenario.value == catalog.DEFAULT_SECTOR
    model_type = dagbag.dags["training_pipeline"].params.get_param("model_type")
    assert model_type.schema["enum"] == sorted(catalog.MODEL_TYPES)


# --- nothing hangs: timeouts, and retries with backoff where a retry is safe ---------------------------------
# Retried steps overwrite their own outputs. `train` once: a retry fits the model again. `register` finds the
# version an earlier try registered (pipeline.register). Monitoring never: the next window is 5 min away, and a second
# `retrain` would start a second training run. simulate_batch and check_stack neither (see their DAGs).
RETRIED = {
    ("training_pipeline", "ingest"): 2,
    ("training_pipeline", "validate"): 2,
    ("training_pipeline", "preprocess"): 2,
    ("training_pipeline", "version_features"): 2,
    ("training_pipeline", "train"): 1,
    ("training_pipeline", "register"): 2,
}


@pytest.mark.parametrize("runner", ["docker", "kubernetes"])
def test_every_task_of_every_dag_has_a_timeout(dagbag, k8s_dagbag, runner):
    bag = dagbag if runner == "docker" else k8s_dagbag
    tasks = [t for dag in bag.dags.values() for t in dag.tasks]
    assert len(tasks) == 14  # 6 training steps, 6 monitoring tasks, simulate, check_stack
    for task in tasks:
        assert isinstance(task.execution_timeout, timedelta), f"{task.dag_id}.{task.task_id} has no timeout"
        assert timedelta(0) < task.execution_timeout <= timedelta(hours=2), (task.dag_id, task.task_id)
    training = bag.dags["training_pipeline"]
    assert training.get_task("train").execution_timeout == timedelta(minutes=120)
    assert training.get_task("version_features").execution_timeout == timedelta(minutes=30)


@pytest.mark.parametrize("runner", ["docker", "kubernetes"])
def test_retries_with_exponential_backoff_only_where_a_retry_is_safe(dagbag, k8s_dagbag, runner):
    bag = dagbag if runner == "docker" else k8s_dagbag
    for dag in bag.dags.values():
        for task in dag.tasks:
            assert task.retries == RETRIED.get((dag.dag_id, task.task_id), 0), (dag.dag_id, task.task_id)
            if task.retries:
                # Airflow 3's multiplier: 30 s, then 1 min, 2 min, ... (True would be 1: a constant delay)
                assert task.retry_exponential_backoff == 2.0
                assert task.retry_delay == timedelta(seconds=30)
                assert task.max_retry_delay == timedelta(minutes=10)


def test_timeouts_and_the_retraining_wait_come_from_the_environment():
    import inspect

    bag = parse_dags(
        PIPELINE_RUNNER="docker", STEP_TIMEOUT_MINUTES="7", TRAIN_TIMEOUT_MINUTES="45", RETRAIN_WAIT_MINUTES="20"
    )
    assert bag.import_errors == {}
    training, monitoring = bag.dags["training_pipeline"], bag.dags["monitoring"]
    assert training.get_task("ingest").execution_timeout == timedelta(minutes=7)
    assert training.get_task("train").execution_timeout == timedelta(minutes=45)
    assert monitoring.get_task("monitor_window").execution_timeout == timedelta(minutes=7)
    wait = monitoring.get_task("wait_for_retraining")
    assert inspect.signature(wait.python_callable).parameters["wait_seconds"].default == 20 * 60
    assert wait.execution_timeout == timedelta(minutes=25)  # the hard stop, after the task's own deadline


def test_a_bad_timeout_is_an_import_error_that_names_the_key():
    bag = parse_dags(PIPELINE_RUNNER="docker", STEP_TIMEOUT_MINUTES="soon")
    assert bag.import_errors
    assert all("STEP_TIMEOUT_MINUTES='soon'" in error for error in bag.import_errors.values())


class RetrainingRun:
    """What `wait_for_retraining` asks of its task instance: the triggered run's id, then its state."""

    def __init__(self, *states: str):
        self.states = list(states)

    def xcom_pull(self, task_ids: str, key: str) -> str:
        assert (task_ids, key) == ("retrain", "trigger_run_id")
        return "manual__retrain"

    def get_dagrun_state(self, dag_id: str, run_id: str) -> str:
        assert (dag_id, run_id) == ("training_pipeline", "manual__retrain")
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]


def test_monitoring_waits_for_the_retraining_run_within_a_deadline(dagbag):
    from airflow.sdk.exceptions import AirflowFailException

    dag = dagbag.dags["monitoring"]
    # the operator's own wait has no deadline in Airflow 3.3: it starts the run, the next task waits
    assert dag.get_task("retrain").wait_for_completion is False
    wait = dag.get_task("wait_for_retraining").python_callable
    fast = {"wait_seconds": 0.2, "poll_seconds": 0.01}
    assert wait(**fast, ti=RetrainingRun("queued", "running", "success")) == "manual__retrain"
    with pytest.raises(AirflowFailException, match="training_pipeline run manual__retrain failed"):
        wait(**fast, ti=RetrainingRun("running", "failed"))
    with pytest.raises(AirflowFailException, match=r"waiting for training_pipeline run manual__retrain: still running"):
        wait(**fast, ti=RetrainingRun("running"))
