"""The prediction service's Prometheus metrics, summed over its worker processes (`GET /metrics`).

Each uvicorn worker is a process with its own counters. With `PROMETHEUS_MULTIPROC_DIR` set (the service sets
it, and `mlops-sandbox serve` empties the folder before the workers start), prometheus-client keeps every
value in a file there, and `/metrics` reads them all: counters and histograms are summed over workers, live
or dead; gauges are read as each one's mode says. Without it (tests, one process), the values live in memory.

Metric names start with `predictor_`; `lost` counts answered predictions whose capture was lost, and must
stay 0.
"""

from __future__ import annotations

import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter("predictor_requests", "Requests answered, by route and status", ["route", "status"])
LATENCY = Histogram(
    "predictor_request_seconds",
    "Time from the request's first byte to its answer, by route",
    ["route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
ROWS = Counter("predictor_predicted_rows", "Rows predicted and answered")
CAPTURED = Counter("predictor_capture_captured_rows", "Rows whose log line was made durable before the answer")
UPLOADED = Counter("predictor_capture_uploaded_rows", "Captured rows uploaded to the prediction-logs bucket")
SPOOLED = Counter("predictor_capture_spooled_rows", "Captured rows that waited in the spool after a failed upload")
LOST = Counter("predictor_capture_lost_rows", "Captured rows that could not be read back and never reached S3 (0)")
CAPTURE_REFUSED = Counter(
    "predictor_capture_refused_requests", "Requests answered 503 because their capture was impossible", ["reason"]
)
SPOOL_BYTES = Gauge("predictor_capture_spool_bytes", "Bytes in the spool folder", multiprocess_mode="livemostrecent")
SPOOL_SEGMENTS = Gauge(
    "predictor_capture_spool_segments", "Closed segments waiting for upload", multiprocess_mode="livemostrecent"
)
MODEL_VERSION = Gauge(
    "predictor_model_version",
    "The registry version each worker serves (0: none)",
    ["model_name"],
    multiprocess_mode="liveall",
)
CANDIDATE_VERSION = Gauge(
    "predictor_candidate_version",
    "The `staging` version each worker runs beside production in a shadow or A/B experiment (0: none)",
    ["model_name"],
    multiprocess_mode="liveall",
)
EXPERIMENT_BROKEN = Gauge(
    "predictor_experiment_broken",
    "1 while the declared experiment cannot run (candidate not loadable, or it failed): production answers all",
    ["model_name"],
    multiprocess_mode="livemax",
)
VARIANT_ROWS = Counter("predictor_variant_rows", "Rows answered, by variant (production | candidate)", ["variant"])
SHADOW_ROWS = Counter("predictor_shadow_rows", "Rows the candidate predicted in shadow, after production answered")
SHADOW_DROPPED = Counter(
    "predictor_shadow_dropped_rows", "Rows the candidate did not shadow (queue full, candidate gone or failed)"
)
CANDIDATE_ERRORS = Counter("predictor_candidate_errors", "Predictions the candidate failed (production answered)")

ROUTES = frozenset({"/predict", "/health", "/model", "/reload", "/metrics", "/docs", "/openapi.json"})


def exposition() -> tuple[bytes, str]:
    """The metrics of every worker, in Prometheus' text format, and its content type."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry), CONTENT_TYPE_LATEST


def worker_exited(pid: int) -> None:
    """Drop a worker's live gauges (its counters stay in the sums)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)


class RequestMetrics:
    """Pure ASGI middleware: counts each HTTP request by route and status, and times it. An unknown path is
    counted as "other", so a scanner cannot grow the number of series."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500  # an exception that escapes every handler is answered 500 by the server

        async def sending(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope["path"] if scope["path"] in ROUTES else "other"
            REQUESTS.labels(route, str(status)).inc()
            LATENCY.labels(route).observe(time.perf_counter() - started)
