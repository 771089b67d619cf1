"""Each service of the running stack does its job, shown with real content."""

from __future__ import annotations

import ast
import json
import time
import uuid
from pathlib import Path

import pytest
import requests

from mlops_sandbox.serve.schema import EXAMPLES
from mlops_sandbox.storage import s3_client
from mlops_sandbox.tracking import use_tracking_server

pytestmark = pytest.mark.stack


# --- MinIO ------------------------------------------------------------------------------------------
def test_minio_object_round_trip_with_configured_credentials(settings):
    client = s3_client(settings)
    key = f"stack-test/{uuid.uuid4()}.json"
    body = json.dumps({"hello": "minio", "n": 42}).encode()
    client.put_object(Bucket=settings.raw_data_bucket, Key=key, Body=body)
    got = client.get_object(Bucket=settings.raw_data_bucket, Key=key)["Body"].read()
    assert got == body
    client.delete_object(Bucket=settings.raw_data_bucket, Key=key)


def test_minio_init_created_every_bucket_and_is_idempotent(settings, compose):
    names = {b["Name"] for b in s3_client(settings).list_buckets()["Buckets"]}
    assert set(settings.buckets.values()) <= names
    rerun = compose("run", "--rm", "--no-deps", "minio-init")
    assert json.loads(rerun.stdout) == {bucket: "exists" for bucket in settings.buckets.values()}


def test_the_readme_boto3_lines_list_the_raw_data_bucket_from_the_host(settings, plain_python, readme_block):
    key = f"readme-test/{uuid.uuid4().hex}.csv"
    s3 = s3_client(settings)
    s3.put_object(Bucket=settings.raw_data_bucket, Key=key, Body=b"a,b\n1,2\n")
    try:
        script = readme_block("boto3").replace("http://localhost:9000", settings.s3_endpoint_url)
        assert key in plain_python.run(script, parse=ast.literal_eval)
    finally:
        s3.delete_object(Bucket=settings.raw_data_bucket, Key=key)


def test_unknown_s3_access_key_is_refused(settings):
    from botocore.exceptions import ClientError

    bad = settings.model_copy(update={"s3_access_key_id": "not-a-user"})
    with pytest.raises(ClientError):
        s3_client(bad).list_buckets()


# --- MLflow -----------------------------------------------------------------------------------------
def test_mlflow_run_metric_and_artifact_read_back_and_artifact_lands_in_minio(settings, tmp_path):
    client = use_tracking_server(settings)
    experiment_id = client.create_experiment(f"stack-test-{uuid.uuid4().hex[:8]}")
    run = client.create_run(experiment_id)
    client.log_param(run.info.run_id, "alpha", "0.5")
    client.log_metric(run.info.run_id, "rmse", 1.25)
    artifact = tmp_path / "notes.txt"
    artifact.write_text("logged through the MLflow server\n")
    client.log_artifact(run.info.run_id, str(artifact))
    client.set_terminated(run.info.run_id)

    got = client.get_run(run.info.run_id)
    assert got.data.params["alpha"] == "0.5"
    assert got.data.metrics["rmse"] == 1.25
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["notes.txt"]
    downloaded = client.download_artifacts(run.info.run_id, "notes.txt", str(tmp_path / "dl"))
    assert Path(downloaded).read_text() == "logged through the MLflow server\n"

    objects = s3_client(settings).list_objects_v2(Bucket=settings.mlflow_artifacts_bucket)
    keys = [o["Key"] for o in objects.get("Contents", [])]
    assert any(k.endswith(f"{run.info.run_id}/artifacts/notes.txt") for k in keys), keys


PLAIN_CLIENT_RUN = """
import json, os, tempfile
import mlflow

mlflow.set_experiment("plain-client-" + os.urandom(4).hex())
with tempfile.TemporaryDirectory() as tmp:
    weights = os.path.join(tmp, "weights.bin")
    with open(weights, "wb") as f:
        f.write(os.urandom(3 * 1024 * 1024))
    with mlflow.start_run() as run:
        mlflow.log_metric("rmse", 1.5)
        mlflow.log_artifact(weights)
    back = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="weights.bin", dst_path=os.path.join(tmp, "back")
    )
    same = open(back, "rb").read() == open(weights, "rb").read()
rmse = mlflow.get_run(run.info.run_id).data.metrics["rmse"]
print(json.dumps({"run_id": run.info.run_id, "same": same, "rmse": rmse}))
"""


def test_a_plain_mlflow_client_on_the_host_logs_and_downloads_through_the_server(settings, plain_python):
    """Only MLFLOW_TRACKING_URI set: the server never sends the client to presigned URLs naming minio:9000
    (which the host cannot resolve, so MLflow's client retried them for ever)."""
    info = requests.get(f"{settings.mlflow_tracking_uri}/api/3.0/mlflow/server-info", timeout=10).json()
    assert info["multipart_downloads_enabled"] is False
    done = plain_python.run(PLAIN_CLIENT_RUN, timeout=60)
    assert done["same"] is True and done["rmse"] == 1.5
    artifacts = use_tracking_server(settings).list_artifacts(done["run_id"])
    assert [(a.path, a.file_size) for a in artifacts] == [("weights.bin", 3 * 1024 * 1024)]


# --- Airflow ----------------------------------------------------------------------------------------
def _airflow(settings, token, method, path, **kwargs):
    resp = requests.request(
        method,
        f"{settings.airflow_url}/api/v2{path}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
        **kwargs,
    )
    resp.raise_for_status()
    return resp.json()


def test_airflow_api_refuses_a_wrong_password(settings):
    resp = requests.post(
        f"{settings.airflow_url}/auth/token",
        json={"username": settings.airflow_admin_user, "password": "wrong-password"},
        timeout=30,
    )
    assert resp.status_code in (401, 403)
    assert requests.get(f"{settings.airflow_url}/api/v2/dags", timeout=30).status_code == 401


def test_airflow_lists_project_dags_and_scheduler_is_healthy(settings, airflow_token):
    deadline = time.monotonic() + 180
    while True:  # the DAG processor parses the folder shortly after start
        dag_ids = {d["dag_id"] for d in _airflow(settings, airflow_token, "GET", "/dags")["dags"]}
        if "stack_selfcheck" in dag_ids or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert "stack_selfcheck" in dag_ids
    health = _airflow(settings, airflow_token, "GET", "/monitor/health")
    assert health["metadatabase"]["status"] == "healthy"
    assert health["scheduler"]["status"] == "healthy"
    assert health["dag_processor"]["status"] == "healthy"
    assert _airflow(settings, airflow_token, "GET", "/importErrors")["total_entries"] == 0


def test_airflow_runs_a_project_container_on_the_stack_network(settings, airflow_token):
    """The path every ML step takes: scheduler -> Docker socket -> project image -> MinIO and MLflow."""
    _airflow(settings, airflow_token, "PATCH", "/dags/stack_selfcheck", json={"is_paused": False})
    run = _airflow(settings, airflow_token, "POST", "/dags/stack_selfcheck/dagRuns", json={"logical_date": None})
    deadline = time.monotonic() + 300
    state = run["state"]
    while state not in ("success", "failed") and time.monotonic() < deadline:
        time.sleep(3)
        state = _airflow(settings, airflow_token, "GET", f"/dags/stack_selfcheck/dagRuns/{run['dag_run_id']}")["state"]
    assert state == "success"
    log = requests.get(
        f"{settings.airflow_url}/api/v2/dags/stack_selfcheck/dagRuns/{run['dag_run_id']}"
        "/taskInstances/check_stack/logs/1",
        headers={"Authorization": f"Bearer {airflow_token}"},
        timeout=30,
    )
    assert log.status_code == 200
    text = json.dumps(log.json())  # structured log lines; the container's stdout is among them
    assert "ok   mlflow" in text and "ok   bucket:raw_data" in text, text[-2000:]


# --- Prediction service -----------------------------------------------------------------------------
def test_predictor_openapi_and_swagger_ui(settings):
    spec = requests.get(f"{settings.predictor_url}/openapi.json", timeout=30).json()
    assert spec["openapi"].startswith("3.")
    assert {"/predict", "/health", "/model", "/reload"} <= set(spec["paths"])
    docs = requests.get(f"{settings.predictor_url}/docs", timeout=30)
    assert docs.status_code == 200 and "swagger-ui" in docs.text
    # offline: the page's script comes from the service itself
    bundle = requests.get(f"{settings.predictor_url}/docs-assets/swagger-ui-bundle.js", timeout=30)
    assert bundle.status_code == 200 and "SwaggerUIBundle" in bundle.text


def test_predictor_without_a_production_model_answers_503(settings):
    health = requests.get(f"{settings.predictor_url}/health", timeout=30).json()
    assert health["status"] == "ok" and health["model_loaded"] is False
    resp = requests.post(f"{settings.predictor_url}/predict", json=EXAMPLES["house_prices"], timeout=30)
    assert resp.status_code == 503
    assert (
        "No production model is served: no version of model 'house-prices' has the alias 'production' yet"
        in (resp.json()["detail"])
    )


def test_predictor_refuses_a_48_mb_body_with_a_short_413_and_stays_up(settings):
    body = json.dumps([EXAMPLES["house_prices"]] * 200_000).encode()  # ~46 MiB: over PREDICTOR_MAX_BODY_BYTES
    resp = requests.post(
        f"{settings.predictor_url}/predict", data=body, headers={"Content-Type": "application/json"}, timeout=120
    )
    assert resp.status_code == 413 and len(resp.content) < 10_000
    assert "PREDICTOR_MAX_BODY_BYTES" in resp.json()["detail"]
    assert requests.get(f"{settings.predictor_url}/health", timeout=30).json()["status"] == "ok"
    # a non-ASCII token is a wrong token (401), not a server error
    reload = requests.post(
        f"{settings.predictor_url}/reload", headers={"Authorization": "Bearer sécret".encode()}, timeout=30
    )
    assert reload.status_code == 401


# --- Evidently --------------------------------------------------------------------------------------
def test_evidently_ui_api_answers(settings):
    version = requests.get(f"{settings.evidently_url}/api/version", timeout=30).json()
    assert version["application"] == "Evidently UI" and version["version"] == "0.7.23"
    projects = requests.get(f"{settings.evidently_url}/api/projects", timeout=30)
    assert projects.status_code == 200 and isinstance(projects.json(), list)


# --- JupyterLab -------------------------------------------------------------------------------------
def test_jupyter_api_needs_the_token(settings):
    url = f"{settings.jupyter_url}/api/contents"
    assert requests.get(url, timeout=30).status_code == 403
    with_token = requests.get(url, headers={"Authorization": f"token {settings.jupyter_token}"}, timeout=30)
    assert with_token.status_code == 200
    assert "notebooks" in {item["name"] for item in with_token.json()["content"]}


SAVE_A_NOTEBOOK = """
import json, sys, time, urllib.request
for _ in range(120):
    try:
        urllib.request.urlopen("http://localhost:8888/api", timeout=2)
        break
    except OSError:
        time.sleep(0.5)
notebook = {"type": "notebook", "content": {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}}
request = urllib.request.Request(
    "http://localhost:8888/api/contents/attendee/saved-by-an-attendee.ipynb",
    data=json.dumps(notebook).encode(),
    method="PUT",
    headers={"Authorization": "token " + sys.argv[1], "Content-Type": "application/json"},
)
print(urllib.request.urlopen(request, timeout=30).status)
"""


def test_jupyter_saves_into_a_notebooks_folder_as_its_owner_and_says_when_it_cannot(
    compose, settings, tmp_path, monkeypatch
):
    """JupyterLab runs as JUPYTER_UID:JUPYTER_GID (what `make` sets from the owner of notebooks/): a notebook
    saved in it lands in the folder, owned by that user. A folder it cannot write is named at start, with the
    setting to change."""
    import os
    import subprocess

    root = os.getuid() == 0
    # as root, a user that is neither root nor the image's; else the one running the tests, in its own group
    uid, gid = (4242, 4343) if root else (os.getuid(), os.getgid())
    folder = tmp_path / "notebooks"
    folder.mkdir()
    os.chown(folder, uid, gid)
    monkeypatch.setenv("JUPYTER_UID", str(uid))  # read by compose when it loads compose.yaml
    monkeypatch.setenv("JUPYTER_GID", str(gid))
    name = f"jupyter-owner-{uuid.uuid4().hex[:8]}"
    # beside the stack's notebooks/ (a second mount on the same path would not replace the service's)
    mount = ["-v", f"{folder}:/home/sandbox/work/attendee", "-e", "NOTEBOOKS_DIR=/home/sandbox/work/attendee"]
    compose("run", "-d", "--no-deps", "--name", name, *mount, "jupyter")
    try:
        saved = subprocess.run(
            ["docker", "exec", name, "python", "-c", SAVE_A_NOTEBOOK, settings.jupyter_token],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert saved.stdout.strip() == "201", saved.stdout + saved.stderr
        owner = (folder / "saved-by-an-attendee.ipynb").stat()
        assert (owner.st_uid, owner.st_gid) == (uid, gid)
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True).stderr
        assert "cannot save there" not in logs
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)

    if root:  # a folder another user owns is named at start, with what to do; JupyterLab still starts
        folder.chmod(0o755)
        for owner, advice in (((4545, 4646), "make up JUPYTER_UID=4545 JUPYTER_GID=4646"), ((0, 0), "sudo chown")):
            os.chown(folder, *owner)
            warned = compose("run", "--rm", "--no-deps", *mount, "jupyter", "--version")
            said = f"owned by uid {owner[0]} (gid {owner[1]}) but JupyterLab runs as uid {uid}"
            assert said in warned.stderr and advice in warned.stderr, warned.stderr
            assert warned.stdout.strip()  # JupyterLab's version: it started
