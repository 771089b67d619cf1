"""The MLflow tracking server, as every client of the library reaches it."""

from __future__ import annotations

import os

from mlops_sandbox.config import Settings, get_settings


def use_tracking_server(settings: Settings | None = None):
    """Point MLflow at the stack's tracking server and return an `MlflowClient` for it.

    Artifacts always travel through the server (`--serve-artifacts`). MLflow 3.17 would otherwise fetch
    large downloads from presigned S3 URLs, which name the S3 host as the *server* sees it (`minio:9000`)
    and so fail from the host. Set MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD yourself to override.
    """
    return tracking_client((settings or get_settings()).mlflow_tracking_uri)


def tracking_client(tracking_uri: str):
    """`use_tracking_server` for an explicit tracking URI."""
    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "false")
    mlflow.set_tracking_uri(tracking_uri)
    return mlflow.MlflowClient(tracking_uri=tracking_uri)
