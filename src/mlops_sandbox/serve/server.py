"""How the prediction service runs: gunicorn forks uvicorn workers from one process that imported everything.

`mlops-sandbox serve` runs `gunicorn --preload --config python:mlops_sandbox.serve.server` on
`mlops_sandbox.serve.app:preloaded()`. The master imports the heavy libraries (MLflow, pandas and pyarrow,
scikit-learn), builds the app, freezes the garbage collector's view of those objects, then forks the workers:
their pages stay shared, copy-on-write, instead of each worker importing them again (about 100 MiB less for
two workers). The master starts no thread: each worker starts its own registry poller and capture shipper
(the app's lifespan) after the fork. gunicorn restarts a worker that dies.

This module is also gunicorn's config: `child_exit` is a gunicorn server hook.
"""

from __future__ import annotations

import os

from uvicorn_worker import UvicornWorker

from mlops_sandbox.serve import metrics


class Worker(UvicornWorker):
    """A uvicorn worker; without an access log line per request unless PREDICTOR_ACCESS_LOG is true
    (`GET /metrics` counts requests, and the capture keeps every prediction)."""

    CONFIG_KWARGS = {
        "loop": "auto",
        "http": "auto",
        "access_log": os.environ.get("PREDICTOR_ACCESS_LOG", "false").lower() in {"1", "true", "yes"},
    }


def child_exit(server, worker) -> None:  # noqa: ARG001 - gunicorn's hook signature
    """A worker is gone, however it ended: its live gauges leave /metrics (its counters stay in the sums)."""
    metrics.worker_exited(worker.pid)
