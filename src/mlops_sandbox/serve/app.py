"""FastAPI app: `/predict` with the production model, `/model`, `/reload`, `/health`. Swagger UI at `/docs`.

Wiring only: the routes live in `serve.routes`, and take what they need (settings, the production model, the
capture) through the dependencies in `serve.deps`, which read what `create_app` puts on `app.state`.
"""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from mlops_sandbox import __version__
from mlops_sandbox.config import Settings, get_settings
from mlops_sandbox.contracts import PRODUCTION
from mlops_sandbox.schema import get_schema
from mlops_sandbox.serve.capture import PredictionCapture
from mlops_sandbox.serve.model import ProductionModel
from mlops_sandbox.serve.reload import poll_registry
from mlops_sandbox.serve.routes import docs, health, model, predict
from mlops_sandbox.serve.schema import record_model


def _json_safe(value: Any) -> Any:
    """`value` if it is strict JSON, else its repr (NaN and Infinity, which a lenient parser let through)."""
    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError):
        return repr(value)


async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with one message per field, even when the input echoed back is not valid JSON (NaN)."""
    errors = [{**err, "input": _json_safe(err.get("input"))} for err in exc.errors()]
    return JSONResponse(
        status_code=422, content={"detail": jsonable_encoder(errors, custom_encoder={float: _json_safe})}
    )


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
        batch_records=settings.capture_batch_records,
        flush_seconds=settings.capture_flush_seconds,
        max_buffer=settings.capture_max_buffer,
    )


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the capture writer and the registry poller; on shutdown (SIGTERM too), flush the capture."""
    capture: PredictionCapture | None = app.state.capture
    if capture is not None:
        capture.start()
    poller = asyncio.create_task(poll_registry(app.state.production, app.state.settings.model_poll_seconds))
    yield
    poller.cancel()
    if capture is not None:
        await asyncio.to_thread(capture.close)  # on SIGTERM too: uvicorn runs the shutdown first


def create_app(
    settings: Settings | None = None,
    production: ProductionModel | None = None,
    capture: PredictionCapture | None = None,
) -> FastAPI:
    """Build the app. `production` and `capture` are injectable, so tests need no registry and no S3.

    What the routes use is on `app.state` (`settings`, `production`, `capture`), and reaches them through
    `serve.deps`; a test can also override one there (`app.dependency_overrides[deps.get_production]`).
    """
    settings = settings or get_settings()
    schema = get_schema(settings.scenario)
    production = production or ProductionModel(settings.model_name, settings.mlflow_tracking_uri, schema=schema)
    if capture is None and settings.capture_enabled:
        capture = s3_capture(settings)

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
    app.add_exception_handler(RequestValidationError, validation_error)
    app.mount(docs.ASSETS_PATH, docs.assets(), "docs-assets")
    app.include_router(docs.router)
    app.include_router(health.router)
    app.include_router(predict.router(record_model(schema), settings.predictor_max_batch))
    app.include_router(model.router)
    return app


def app() -> FastAPI:
    """Factory for `uvicorn --factory mlops_sandbox.serve.app:app`."""
    return create_app()
