"""Every DAG file imports cleanly and wires the tasks we expect. Needs Airflow (the .venv-airflow venv)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

pytestmark = pytest.mark.dags

airflow = pytest.importorskip("airflow", reason="DAG tests run in the Airflow venv (make test-dags)")

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR), bundle_path=DAGS_DIR, bundle_name="dags-folder")


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_dag_ids_are_file_names(dagbag):
    dag_files = {p.stem for p in DAGS_DIR.glob("*.py")} - {"sandbox_containers"}
    assert set(dagbag.dag_ids) == dag_files


def test_stack_selfcheck_runs_check_in_project_container(dagbag, monkeypatch):
    dag = dagbag.dags["stack_selfcheck"]
    assert [t.task_id for t in dag.tasks] == ["check_stack"]
    task = dag.get_task("check_stack")
    assert task.task_type == "DockerOperator"
    assert task.command == ["mlops-sandbox", "check-stack"]
    assert task.image.startswith("mlops-sandbox/project:")
    assert task.auto_remove == "success"
    # secrets never go in the rendered (templated) environment
    assert "S3_SECRET_ACCESS_KEY" not in task.environment


def test_project_container_takes_image_network_and_env_from_scheduler(monkeypatch):
    from sandbox_containers import project_container

    monkeypatch.setenv("PROJECT_IMAGE", "mlops-sandbox/project:test")
    monkeypatch.setenv("STACK_NETWORK", "some-net")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("S3_SECRET_ACCESS_KEY", "s3cr3t")
    op = project_container("t", ["true"])
    assert op.image == "mlops-sandbox/project:test"
    assert op.network_mode == "some-net"
    assert op.environment["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert op._private_environment == {"S3_SECRET_ACCESS_KEY": "s3cr3t"}


def test_training_pipeline_runs_the_seed_steps_in_order_in_project_containers(dagbag):
    dag = dagbag.dags["training_pipeline"]
    order = ["ingest", "validate", "preprocess", "version_features", "train", "register"]
    assert {t.task_id for t in dag.tasks} == set(order)
    for upstream, downstream in zip(order, order[1:], strict=False):
        assert dag.get_task(upstream).downstream_task_ids == {downstream}
    for task in dag.tasks:
        assert task.task_type == "DockerOperator"
        assert task.command[:3] == ["mlops-sandbox", "pipeline", task.task_id.replace("_", "-")]
        assert "--run-id={{ run_id }}" in task.command
    # daily, and unpausing it (as a manual trigger does) starts no scheduled run on the spot
    assert dag.timetable.expression == "0 0 * * *" and dag.start_date is None
    assert dag.timetable.run_immediately == timedelta(0)
    assert set(dag.params) == {"scenario", "model_type", "last_batches", "epochs"}
    assert "--model-type={{ params.model_type }}" in dag.get_task("train").command


def test_monitoring_checks_the_run_window_every_five_minutes_and_fails_on_decay(dagbag):
    dag = dagbag.dags["monitoring"]
    assert {t.task_id for t in dag.tasks} == {"monitor_window", "flag_decay", "auto_retrain_on", "retrain", "challenge"}
    task = dag.get_task("monitor_window")
    assert task.task_type == "DockerOperator" and task.retries == 0
    assert "--end={{ dag_run.run_after.isoformat() }}" in task.command
    assert task.downstream_task_ids == {"flag_decay", "auto_retrain_on"}
    assert dag.get_task("auto_retrain_on").downstream_task_ids == {"retrain"}
    assert dag.get_task("retrain").trigger_dag_id == "training_pipeline"
    assert dag.get_task("retrain").downstream_task_ids == {"challenge"}
    assert dag.timetable.expression == "*/5 * * * *"


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
