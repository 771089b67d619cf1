"""`GET /model` (the served version and its lineage) and `POST /reload` (look the alias up now)."""

import asyncio
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException

from mlops_sandbox.serve.deps import ExperimentDep, ProductionDep, SettingsDep
from mlops_sandbox.serve.reload import signal_reload

router = APIRouter()


@router.get("/model", responses={503: {"description": "No production model is served; the detail says why"}})
async def model_info(production: ProductionDep, experiment: ExperimentDep) -> dict[str, Any]:
    """The production version (alias, run id, data lineage, when it was loaded), and `served`: every version
    this worker answers or shadows with, and its role (production, or the experiment's candidate)."""
    current = production.current
    if current is None:
        raise HTTPException(status_code=503, detail=production.last_error or "no production model loaded")
    served = [{**current.info(), "role": "production"}]
    candidate = experiment.candidate
    if candidate is not None:
        served.append({**candidate.info(), "role": f"candidate ({experiment.mode})"})
    return {**current.info(), "served": served, "experiment": experiment.info(current)}


@router.post(
    "/reload",
    responses={
        401: {"description": "No or a wrong `Authorization: Bearer <PREDICTOR_RELOAD_TOKEN>`"},
        403: {"description": "Reload is disabled (PREDICTOR_RELOAD_TOKEN is empty)"},
    },
)
async def reload(
    production: ProductionDep,
    settings: SettingsDep,
    authorization: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """Look the `production` alias up now (every worker), instead of at the next poll. Needs the token."""
    expected = f"Bearer {settings.predictor_reload_token}"
    if not settings.predictor_reload_token:
        raise HTTPException(status_code=403, detail="reload is disabled: PREDICTOR_RELOAD_TOKEN is empty")
    # as bytes: compare_digest raises on a str with non-ASCII characters, which a client can send
    if authorization is None or not secrets.compare_digest(authorization.encode(), expected.encode()):
        raise HTTPException(status_code=401, detail="send 'Authorization: Bearer <PREDICTOR_RELOAD_TOKEN>'")
    signal_reload()
    changed = await asyncio.to_thread(production.refresh)
    current = production.current
    return {
        "reloaded": changed,
        "model_version": current.version if current else None,
        "detail": production.last_error,
    }
