"""The stack's MLflow tracking server: MLflow's own app, which never sends clients to presigned S3 URLs.

`mlflow server --serve-artifacts` proxies every artifact to MinIO, so a client needs only the tracking URI.
But MLflow 3.17's server also advertises multipart downloads in `/api/3.0/mlflow/server-info` whenever its
artifact store could presign them (S3 can), and a client that reads that downloads from presigned URLs. They
name the S3 endpoint as the *server* sees it (`http://minio:9000` in compose, the Service in a cluster),
which the host cannot resolve: `mlflow.pyfunc.load_model("models:/house-prices@production")` on a laptop
retried chunk downloads for ever.

This app is MLflow's FastAPI app with those capabilities switched off: `multipart_downloads_enabled` and
`multipart_uploads_enabled` (the same presigned URLs, for files over 500 MB) are false, so plain clients (on
the host, in a container, in a pod) stream artifacts through the server, as `--serve-artifacts` promises. A
client that asks for presigned transfers itself (`MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD=true`, `..._UPLOAD`)
still gets them. Everything else is MLflow's, unchanged.

compose.yaml and the Kubernetes Deployment run it with `mlflow server --app-name sandbox` (the `mlflow.app`
entry point in pyproject.toml), under uvicorn, MLflow's default: it is an ASGI app, not for `--gunicorn-opts`
or `--waitress-opts`.
"""

from __future__ import annotations

from typing import Any

from mlflow.server import handlers, server_info_api
from mlflow.utils.server_info import SERVER_INFO_MULTIPART_DOWNLOADS_ENABLED, SERVER_INFO_MULTIPART_UPLOADS_ENABLED

_mlflow_payload = handlers.build_server_info_payload


def build_server_info_payload() -> dict[str, Any]:
    """MLflow's server-info, with presigned multipart downloads and uploads never advertised."""
    return {
        **_mlflow_payload(),
        SERVER_INFO_MULTIPART_DOWNLOADS_ENABLED: False,
        SERVER_INFO_MULTIPART_UPLOADS_ENABLED: False,  # files over 500 MB would get part URLs naming minio:9000
    }


# Both routes that answer server-info: the FastAPI one (uvicorn, the default) and the Flask one.
handlers.build_server_info_payload = build_server_info_payload
server_info_api.build_server_info_payload = build_server_info_payload

from mlflow.server.fastapi_app import app  # noqa: E402 - built after the routes read the payload from here

__all__ = ["app", "build_server_info_payload"]
