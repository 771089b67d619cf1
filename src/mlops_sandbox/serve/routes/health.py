"""`GET /health`: liveness, and which model this worker serves."""

import os
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from mlops_sandbox.serve.deps import ExperimentDep, ProductionDep, SettingsDep

router = APIRouter()


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
    # the shadow or A/B experiment beside production: mode, share, candidate_version, running, broken (why not)
    experiment: dict[str, Any]


@router.get("/health", response_model=Health)
async def health(production: ProductionDep, settings: SettingsDep, experiment: ExperimentDep) -> Health:
    """Liveness, whether a production model is loaded, and the experiment beside it (`broken` says why one that
    is declared does not run: production then answers every request)."""
    current = production.current
    return Health(
        status="ok",
        model_loaded=current is not None,
        model_name=settings.model_name,
        model_version=current.version if current else None,
        detail=production.last_error,
        worker=os.getpid(),
        workers=settings.predictor_workers,
        experiment=experiment.info(current),
    )
