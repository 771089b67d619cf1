"""FastAPI app: `/predict` with the production model, `/model`, `/reload`, `/health`. Swagger UI at `/docs`."""

import asyncio
import contextlib
import json
import logging
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, FastAPI, Header, HTTPException, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from mlops_sandbox import __version__
from mlops_sandbox.config import Settings, get_settings
from mlops_sandbox.schema import get_schema
from mlops_sandbox.serve.capture import PredictionCapture
from mlops_sandbox.serve.model import ProductionModel
from mlops_sandbox.serve.schema import record_model

log = logging.getLogger(__name__)

RELOAD_SIGNAL = "/tmp/mlops-sandbox-reload"  # touched by /reload so that every worker reloads


class PredictResponse(BaseModel):
    request_id: str
    model_name: str
    model_version: str
    predictions: list[float]


class Health(BaseModel):
    status: str
    model_loaded: bool
    model_name: str
    model_version: str | None
    detail: str | None
    # Each worker process loads the model on its own: which one answered, and how many there are, so that a
    # client can wait until every worker serves a new version.
    worker: int
    workers: int


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


def _offline_docs(app: FastAPI) -> None:
    """Swagger UI at /docs and ReDoc at /redoc from assets in the image, so they work with no internet."""
    import fastapi_offline

    app.mount("/docs-assets", StaticFiles(directory=Path(fastapi_offline.__file__).parent / "static"), "docs-assets")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url="/docs-assets/redoc.standalone.js",
            redoc_favicon_url="/docs-assets/favicon.png",
            with_google_fonts=False,
        )


def create_app(
    settings: Settings | None = None,
    production: ProductionModel | None = None,
    capture: PredictionCapture | None = None,
) -> FastAPI:
    """Build the app. `production` and `capture` are injectable, so tests need no registry and no S3."""
    settings = settings or get_settings()
    schema = get_schema(settings.scenario)
    production = production or ProductionModel(settings.model_name, settings.mlflow_tracking_uri, schema=schema)
    if capture is None and settings.capture_enabled:
        capture = s3_capture(settings)
    Record = record_model(schema)
    Batch = Annotated[list[Record], Field(min_length=1, max_length=settings.predictor_max_batch)]  # type: ignore[valid-type]

    def signal_mtime() -> float:
        try:
            return os.stat(RELOAD_SIGNAL).st_mtime
        except FileNotFoundError:
            return 0.0

    async def poll_registry() -> None:
        seen_signal, next_poll = signal_mtime(), 0.0
        while True:
            signal = signal_mtime()
            if time.monotonic() >= next_poll or signal != seen_signal:
                seen_signal, next_poll = signal, time.monotonic() + settings.model_poll_seconds
                try:
                    await asyncio.to_thread(production.refresh)
                except Exception:  # noqa: BLE001 - the poller must outlive any single failure
                    log.exception("registry poll failed")
            await asyncio.sleep(1.0)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if capture is not None:
            capture.start()
        poller = asyncio.create_task(poll_registry())
        yield
        poller.cancel()
        if capture is not None:
            await asyncio.to_thread(capture.close)  # on SIGTERM too: uvicorn runs the shutdown first

    app = FastAPI(
        title="mlops-sandbox prediction service",
        version=__version__,
        description=(
            f"Serves `models:/{settings.model_name}@production` from the MLflow registry "
            f"(scenario `{schema.name}`). Send one record, or a list of up to {settings.predictor_max_batch}."
        ),
        lifespan=lifespan,
        docs_url=None,  # served below from local assets: FastAPI's default pages load them from a CDN
        redoc_url=None,
    )
    _offline_docs(app)
    app.state.production = production
    app.state.capture = capture
    app.add_exception_handler(RequestValidationError, validation_error)

    @app.get("/health", response_model=Health)
    def health() -> Health:
        """Liveness, and whether a production model is loaded."""
        current = production.current
        return Health(
            status="ok",
            model_loaded=current is not None,
            model_name=settings.model_name,
            model_version=current.version if current else None,
            detail=production.last_error,
            worker=os.getpid(),
            workers=settings.predictor_workers,
        )

    @app.post("/predict", response_model=PredictResponse)
    def predict(
        response: Response,
        body: Annotated[
            Record | Batch,
            Body(
                openapi_examples={  # type: ignore[valid-type]
                    "one record": {"value": Record.model_json_schema()["examples"][0]},
                    "a batch": {"value": [Record.model_json_schema()["examples"][0]] * 2},
                }
            ),
        ],
        x_request_id: Annotated[str | None, Header(max_length=128)] = None,
    ) -> PredictResponse:
        """Predict for one record or a batch with the production model."""
        current = production.current
        if current is None:
            raise HTTPException(
                status_code=503,
                detail=(
                    f"No production model yet: no version of '{settings.model_name}' has the "
                    "'production' alias. Train one (Airflow DAG training_pipeline) and promote it."
                ),
            )
        started = time.perf_counter()
        records = [r.model_dump() for r in (body if isinstance(body, list) else [body])]
        predictions = current.predict(records)
        request_id = x_request_id or str(uuid.uuid4())
        response.headers["X-Request-ID"] = request_id
        if capture is not None:
            latency_ms = (time.perf_counter() - started) * 1000
            now = datetime.now(UTC).isoformat()
            capture.log(
                [
                    {
                        "request_id": request_id,
                        "row": i,
                        "timestamp": now,
                        "model_name": current.name,
                        "model_version": current.version,
                        "inputs": record,
                        "prediction": float(prediction),
                        "latency_ms": latency_ms,
                    }
                    for i, (record, prediction) in enumerate(zip(records, predictions, strict=True))
                ]
            )
        return PredictResponse(
            request_id=request_id,
            model_name=current.name,
            model_version=current.version,
            predictions=[float(p) for p in predictions],
        )

    @app.get("/model")
    def model_info() -> dict[str, Any]:
        """The served version: alias, run id, data lineage, and when it was loaded."""
        current = production.current
        if current is None:
            raise HTTPException(status_code=503, detail=production.last_error or "no production model loaded")
        return current.info()

    @app.post("/reload")
    async def reload(authorization: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        """Look the `production` alias up now (every worker), instead of at the next poll. Needs the token."""
        expected = f"Bearer {settings.predictor_reload_token}"
        if not settings.predictor_reload_token:
            raise HTTPException(status_code=403, detail="reload is disabled: PREDICTOR_RELOAD_TOKEN is empty")
        if authorization is None or not secrets.compare_digest(authorization, expected):
            raise HTTPException(status_code=401, detail="send 'Authorization: Bearer <PREDICTOR_RELOAD_TOKEN>'")
        with open(RELOAD_SIGNAL, "a"):
            os.utime(RELOAD_SIGNAL)
        changed = await asyncio.to_thread(production.refresh)
        current = production.current
        return {
            "reloaded": changed,
            "model_version": current.version if current else None,
            "detail": production.last_error,
        }

    return app


def app() -> FastAPI:
    """Factory for `uvicorn --factory mlops_sandbox.serve.app:app`."""
    return create_app()
