"""FastAPI app: `/predict` with the production model, `/health`, `/model`. Swagger UI at `/docs`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pandas as pd
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from mlops_sandbox import __version__
from mlops_sandbox.config import Settings, get_settings
from mlops_sandbox.serve.model import ProductionModel

log = logging.getLogger(__name__)


class PredictRequest(BaseModel):
    records: list[dict[str, Any]] = Field(min_length=1, description="Feature records, one per prediction")


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


def create_app(settings: Settings | None = None, production: ProductionModel | None = None) -> FastAPI:
    """Build the app. `production` is injectable so tests can serve a model without a registry."""
    settings = settings or get_settings()
    production = production or ProductionModel(settings.model_name, settings.mlflow_tracking_uri)

    async def poll_registry() -> None:
        while True:
            try:
                await asyncio.to_thread(production.refresh)
            except Exception:  # noqa: BLE001 - the poller must outlive any single failure
                log.exception("registry poll failed")
            await asyncio.sleep(settings.model_poll_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        poller = asyncio.create_task(poll_registry())
        yield
        poller.cancel()

    app = FastAPI(
        title="mlops-sandbox prediction service",
        version=__version__,
        description=f"Serves `models:/{settings.model_name}@production` from the MLflow registry.",
        lifespan=lifespan,
    )
    app.state.production = production

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
        )

    @app.post("/predict", response_model=PredictResponse)
    def predict(body: PredictRequest) -> PredictResponse:
        """Predict for one or more records with the production model."""
        current = production.current
        if current is None:
            raise HTTPException(
                status_code=503,
                detail=(
                    f"No production model yet: no version of '{settings.model_name}' has the "
                    "'production' alias. Train one (Airflow DAG training_pipeline) and promote it."
                ),
            )
        frame = pd.DataFrame.from_records(body.records)
        predictions = current.pyfunc.predict(frame)
        return PredictResponse(
            request_id=str(uuid.uuid4()),
            model_name=current.name,
            model_version=current.version,
            predictions=[float(p) for p in list(predictions)],
        )

    return app


def app() -> FastAPI:
    """Factory for `uvicorn --factory mlops_sandbox.serve.app:app`."""
    return create_app()
