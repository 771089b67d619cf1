"""The MLflow tracking server, as every client of the library reaches it."""

from __future__ import annotations

import os

from mlops_sandbox.config import Settings, get_settings

# MLflow's HTTP client waits 120 s per try and retries 7 times by default: a hung tracking server holds a step
# for about 20 minutes per call. These bound a call to about 5.5 (5 tries of at most 60 s, with exponential
# backoff: 4, 8 and 16 s between them). Set any of them in the environment to override it.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",
}


def use_tracking_server(settings: Settings | None = None):
    """Point MLflow at the stack's tracking server and return an `MlflowClient` for it.

    Artifacts always travel through the server (`--serve-artifacts`). The stack's server never advertises
    presigned downloads (`mlops_sandbox.mlflow_server`), and this client does not ask for them either, so it
    also works against a plain `mlflow server` whose presigned S3 URLs would name a host only the server
    resolves (`minio:9000`). Set MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD yourself to override.

    Every request has a bounded timeout and retries with exponential backoff (`HTTP_DEFAULTS`, unless the
    environment sets them).
    """
    return tracking_client((settings or get_settings()).mlflow_tracking_uri)


def tracking_client(tracking_uri: str):
    """`use_tracking_server` for an explicit tracking URI."""
    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "false")
    # no "Downloading artifacts" progress bar by the dozen in the demo, the notebooks and the step logs
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)  # MLflow reads them on every request
    mlflow.set_tracking_uri(tracking_uri)
    return mlflow.MlflowClient(tracking_uri=tracking_uri)
