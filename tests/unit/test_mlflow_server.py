"""The stack's MLflow server app (`mlflow server --app-name sandbox`): MLflow's, minus presigned downloads."""

import pytest

pytestmark = pytest.mark.unit


@pytest.fixture
def proxied_s3(monkeypatch):
    """The environment `mlflow server --serve-artifacts --artifacts-destination=s3://...` gives its app."""
    from mlflow.server import ARTIFACTS_DESTINATION_ENV_VAR, SERVE_ARTIFACTS_ENV_VAR, handlers

    monkeypatch.setenv(SERVE_ARTIFACTS_ENV_VAR, "true")
    monkeypatch.setenv(ARTIFACTS_DESTINATION_ENV_VAR, "s3://mlflow-artifacts")
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setattr(handlers, "_artifact_repo", None)
    monkeypatch.setattr(handlers, "_get_tracking_store", lambda *_, **__: None)  # no database for this answer


def test_mlflow_alone_would_send_clients_to_presigned_s3_urls(proxied_s3):
    """What the sandbox app changes: MLflow's own payload advertises presigned downloads for an S3 store."""
    from mlops_sandbox import mlflow_server

    payload = mlflow_server._mlflow_payload()
    assert payload["multipart_downloads_enabled"] is True and payload["multipart_uploads_enabled"] is True


def test_server_info_tells_clients_to_download_through_the_server(proxied_s3):
    from fastapi.testclient import TestClient

    from mlops_sandbox import mlflow_server

    client = TestClient(mlflow_server.app)
    for path in ("/api/3.0/mlflow/server-info", "/ajax-api/3.0/mlflow/server-info"):
        answer = client.get(path, headers={"Host": "localhost"})
        assert answer.status_code == 200, answer.text
        info = answer.json()
        assert info["multipart_downloads_enabled"] is False and info["multipart_uploads_enabled"] is False
        assert info["store_type"] is None  # the rest is MLflow's own (no tracking store in this test)
