"""FastAPI app: `/predict` with the production model, `/model`, `/reload`, `/health`, `/metrics`. Swagger UI at
`/docs`.

Wiring only: the routes live in `serve.routes`, and take what they need (settings, the production model, the
capture) through the dependencies in `serve.deps`, which read what `create_app` puts on `app.state`.
"""

import asyncio
import contextlib
import ctypes
import functools
import gc
import importlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from mlops_sandbox import __version__
from mlops_sandbox.config import Settings, get_settings
from mlops_sandbox.contracts import PRODUCTION, STAGING
from mlops_sandbox.hostcheck import AllowedHosts, HostCheck, error_body, send_error
from mlops_sandbox.schema import get_schema
from mlops_sandbox.serve import deps, metrics
from mlops_sandbox.serve.body import BodyReader, over_the_cap, too_many
from mlops_sandbox.serve.capture import PredictionCapture
from mlops_sandbox.serve.experiment import Experiment, ShadowScorer
from mlops_sandbox.serve.model import ProductionModel
from mlops_sandbox.serve.reload import poll_registry
from mlops_sandbox.serve.routes import docs, health, invocations, model, predict
from mlops_sandbox.serve.routes import metrics as metrics_route

log = logging.getLogger(__name__)


def _json_safe(value: Any) -> Any:
    """`value` if it is strict JSON, else its repr (NaN and Infinity, which a lenient parser let through)."""
    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError):
        return repr(value)


MAX_ERRORS = 50  # a 422 names at most this many bad fields, and says how many more there were
MAX_INPUT_CHARS = 80  # and echoes at most this much of each bad value


def _echo(value: Any) -> Any:
    """What a 422 shows of a bad value: a number or a short string as it was, never a whole object or list."""
    if isinstance(value, dict | list):
        return f"<{type(value).__name__} of {len(value)}>"
    value = _json_safe(value)
    return value if not isinstance(value, str) or len(value) <= MAX_INPUT_CHARS else value[:MAX_INPUT_CHARS] + "..."


async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each bad field and row (capped in number and size), or 413 for a batch over its cap."""
    errors = exc.errors()
    too_long = over_the_cap(errors)
    if too_long is not None:
        return JSONResponse(status_code=413, content={"detail": too_many(too_long.get("ctx", {}).get("max_length"))})
    shown = [
        {"type": err["type"], "loc": list(err["loc"]), "msg": err["msg"], "input": _echo(err.get("input"))}
        for err in errors[:MAX_ERRORS]
    ]
    content: dict[str, Any] = {"detail": jsonable_encoder(shown, custom_encoder={float: _json_safe})}
    if len(errors) > MAX_ERRORS:
        content["more_errors"] = len(errors) - MAX_ERRORS
    return JSONResponse(status_code=422, content=content)


class BodyLimit:
    """413 for a request body over `max_bytes`, before it is parsed: at once when Content-Length says so, and
    as soon as a streamed (chunked) body goes over. Pure ASGI, so it costs nothing on a normal request."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._too_large(receive, send)
        received = 0

        async def counted() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                # FastAPI reads the body before the route runs, and passes an HTTPException through as it is
                raise HTTPException(status_code=413, detail=self._detail())
            return message

        return await self.app(scope, counted, send)

    def _detail(self) -> str:
        return f"the request body is larger than {self.max_bytes} bytes (PREDICTOR_MAX_BODY_BYTES)"

    async def _too_large(self, receive, send) -> None:
        # Read what the client is still sending and drop it, chunk by chunk (nothing is kept or parsed), so that
        # it gets to read this answer instead of a connection reset halfway through its upload.
        message = {"more_body": True}
        while message.get("more_body") and message.get("type") != "http.disconnect":
            message = await receive()
        await send_error(send, 413, error_body(self._detail()))


def s3_capture(settings: Settings) -> PredictionCapture:
    """Capture to the prediction-logs bucket, with a client that fails fast when MinIO is away."""
    from botocore.config import Config

    from mlops_sandbox.storage import s3_client

    client = s3_client(settings, Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 1}))

    def upload(key: str, body: bytes) -> None:
        client.put_object(
            Bucket=settings.prediction_logs_bucket, Key=key, Body=body, ContentType="application/x-ndjson"
        )

    return PredictionCapture(
        upload,
        Path(settings.capture_spool_dir),
        settings.scenario,
        segment_records=settings.capture_batch_records,
        segment_seconds=settings.capture_flush_seconds,
        max_spool_bytes=settings.capture_spool_max_bytes,
    )


async def trim_memory(every: float = 30.0) -> None:
    """Hand freed heap back to the OS every `every` seconds: glibc otherwise keeps the free pages that a burst
    of large batches leaves at the top of its heaps. (What Python's own allocator keeps, and the shared pages a
    worker has written to since the fork, stay: see scripts/bench_predictor.py for the figures.) Elsewhere than
    glibc, does nothing."""
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return
    while True:
        await asyncio.sleep(every)
        await asyncio.to_thread(trim, 0)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the capture writer and the registry poller; on shutdown (SIGTERM too), flush the capture."""
    capture: PredictionCapture | None = app.state.capture
    if capture is not None:
        capture.start()
    shadow: ShadowScorer | None = app.state.predictor.shadow
    if shadow is not None:
        shadow.start()
    poller = asyncio.create_task(
        poll_registry(app.state.production, app.state.settings.model_poll_seconds, app.state.experiment, shadow)
    )
    trimmer = asyncio.create_task(trim_memory())
    yield
    poller.cancel()
    trimmer.cancel()
    if shadow is not None:
        await asyncio.to_thread(shadow.stop)  # before the capture closes: it ships their last segments
    if capture is not None:
        await asyncio.to_thread(capture.close)  # on SIGTERM too: uvicorn runs the shutdown first
    metrics.worker_exited(os.getpid())


def create_app(
    settings: Settings | None = None,
    production: ProductionModel | None = None,
    capture: PredictionCapture | None = None,
    experiment: Experiment | None = None,
) -> FastAPI:
    """Build the app. `production`, `capture` and `experiment` are injectable, so tests need no registry and
    no S3.

    What the routes use is on `app.state` (`settings`, `production`, `capture`), and reaches them through
    `serve.deps`; a test can also override one there (`app.dependency_overrides[deps.get_production]`).
    """
    settings = settings or get_settings()
    schema = get_schema(settings.scenario)
    production = production or ProductionModel(settings.model_name, settings.mlflow_tracking_uri, schema=schema)
    if capture is None and settings.capture_enabled:
        capture = s3_capture(settings)
    experiment = experiment or Experiment(settings.model_name, settings.mlflow_tracking_uri, schema=schema)

    app = FastAPI(
        title="mlops-sandbox prediction service",
        version=__version__,
        description=(
            f"Serves `models:/{settings.model_name}@{PRODUCTION}` from the MLflow registry "
            f"(scenario `{schema.name}`). Send one record, or a list of up to {settings.predictor_max_batch}."
        ),
        lifespan=lifespan,
        docs_url=None,  # served by routes.docs from local assets: FastAPI's default pages load them from a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.production = production
    app.state.capture = capture
    app.state.experiment = experiment
    reader = BodyReader(schema, settings.predictor_max_batch)
    shadow = ShadowScorer(experiment, capture, reader.features) if capture is not None else None
    app.state.predictor = deps.Predictor(settings, production, capture, reader, experiment, shadow)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_middleware(BodyLimit, max_bytes=settings.predictor_max_body_bytes)
    # DNS rebinding protection: a Host that is not one of the service's names gets 400, before anything is read.
    # The list is read here, so that a bad PREDICTOR_ALLOWED_HOSTS fails the start, not each worker's first request.
    allowed_hosts = AllowedHosts(settings.predictor_allowed_hosts)
    app.add_middleware(HostCheck, allowed=allowed_hosts, setting="PREDICTOR_ALLOWED_HOSTS")
    app.add_middleware(metrics.RequestMetrics)  # the outermost: it also counts the 413s and 400s of the two above
    app.mount(docs.ASSETS_PATH, docs.assets(), "docs-assets")
    app.include_router(predict.router)  # first: the route most requests are for is matched first
    app.include_router(invocations.router)
    app.include_router(docs.router)
    app.include_router(health.router)
    app.include_router(model.router)
    app.include_router(metrics_route.router)
    app.openapi = functools.partial(_openapi, app)
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's OpenAPI document, with the body of `/predict`, which the route reads itself (`serve.body`)."""
    if app.openapi_schema is None:
        document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = document.setdefault("components", {}).setdefault("schemas", {})
        document["paths"]["/predict"]["post"]["requestBody"] = app.state.predictor.reader.openapi(components)
        document["paths"]["/invocations"]["post"]["requestBody"] = invocations.openapi(
            app.state.predictor.reader.record.model_json_schema()["examples"][0]
        )
        app.openapi_schema = document
    return app.openapi_schema


def app() -> FastAPI:
    """Factory for `uvicorn --factory mlops_sandbox.serve.app:app` (one process, e.g. to debug)."""
    return create_app()


def registered_model_types(
    settings: Settings, aliases: tuple[str, ...] = (PRODUCTION, STAGING), wait: float = 30.0
) -> set[str]:
    """The model types (the `model_type` tag) of the versions behind `aliases` now, as the registry's REST API
    says. A registry that does not answer yet (MLflow starts beside this service) is asked again for up to
    `wait` seconds; what it still does not say (no such version, no answer) is left out."""
    import requests

    if not settings.mlflow_tracking_uri.startswith(("http://", "https://")):
        return set()
    url = f"{settings.mlflow_tracking_uri.rstrip('/')}/api/2.0/mlflow/registered-models/alias"
    deadline, types = time.monotonic() + wait, set()
    for alias in aliases:
        while True:
            try:
                answer = requests.get(url, params={"name": settings.model_name, "alias": alias}, timeout=3)
            except requests.RequestException:
                answer = None
            if answer is not None and answer.status_code < 500:
                try:  # an answer that is not the registry's (a proxy's page) is not asked again
                    tags = answer.json()["model_version"].get("tags", []) if answer.ok else []
                    types |= {tag["value"] for tag in tags if tag.get("key") == "model_type"}
                except (ValueError, KeyError, TypeError, AttributeError) as err:
                    log.info("model type of '%s' not read before the fork: %s", alias, err)
                break
            if time.monotonic() >= deadline:
                log.info("model type of '%s' not read before the fork: the registry did not answer", alias)
                break
            time.sleep(1)
    return types


def preload_model_types(types: set[str]) -> list[str]:
    """Import the serving modules (`ModelType.serving_modules`) of the registered model types among `types`;
    the modules imported (one that is not installed is skipped, and its worker will say so when it loads)."""
    from mlops_sandbox import catalog

    imported = []
    for name in sorted(types & set(catalog.MODEL_TYPES)):
        for module in catalog.model_type(name).serving_modules:
            try:
                importlib.import_module(module)
            except ImportError as err:
                log.warning("model type %s: %s not preloaded: %s", name, module, err)
                continue
            imported.append(module)
    return imported


def preloaded() -> FastAPI:
    """The app, for gunicorn's master to build before it forks the workers (`mlops_sandbox.serve.server`): the
    libraries a served model needs are imported here, once, and the objects so far are frozen out of the
    garbage collector's generations, so that collections in a worker do not touch (and copy) their pages.

    Besides MLflow and scikit-learn, that is what the model types of the production and staging versions name
    in `serving_modules`, read from the registry at start (the built-in types name none: an MLP predicts with
    NumPy from its `.npz`, without torch; an MLP version logged before the `.npz` existed still imports torch,
    in each worker). A type that only later comes to be served is imported by each
    worker when it loads the model, as it would be without this."""
    import mlflow.pyfunc  # noqa: F401 - imported for the workers: the registry client, the model's loader
    import sklearn.compose  # noqa: F401 - what the logged models unpickle
    import sklearn.linear_model  # noqa: F401

    import mlops_sandbox.train  # noqa: F401

    settings = get_settings()
    modules = preload_model_types(registered_model_types(settings))
    if modules:
        log.info("imported for the workers before the fork: %s", ", ".join(modules))
    application = create_app(settings)
    gc.collect()
    gc.freeze()
    return application
