"""What the routes depend on, read from `app.state` (set once by `create_app`) and overridable in tests.

Each provider is `async` so that FastAPI awaits it on the event loop: a plain `def` dependency would cost a
thread-pool hop on every request. A test swaps one with `app.dependency_overrides[get_production] = ...`.
Overrides reach the routes only: the lifespan (registry poller, capture writer) uses `app.state` itself.

`/predict` takes all it needs as one `Predictor`: each dependency costs FastAPI tens of microseconds per
request, which on a one-record prediction is as much as the model.
"""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from mlops_sandbox.config import Settings
from mlops_sandbox.serve.body import BodyReader
from mlops_sandbox.serve.capture import PredictionCapture
from mlops_sandbox.serve.experiment import Experiment, ShadowScorer
from mlops_sandbox.serve.model import ProductionModel


async def get_service_settings(request: Request) -> Settings:
    """The settings the app was built with."""
    return request.app.state.settings


async def get_production(request: Request) -> ProductionModel:
    """The holder of the served model (`.current`), which the poller and `/reload` refresh."""
    return request.app.state.production


async def get_experiment(request: Request) -> Experiment:
    """The shadow or A/B experiment beside production (mode `off` when none is declared)."""
    return request.app.state.experiment


@dataclass(frozen=True)
class Predictor:
    """What `/predict` uses: the settings, the served model's holder, the capture (None: off), the body reader,
    the experiment beside production, and its shadow scorer (None when capture is off)."""

    settings: Settings
    production: ProductionModel
    capture: PredictionCapture | None
    reader: BodyReader
    experiment: Experiment
    shadow: ShadowScorer | None


async def get_predictor(request: Request) -> Predictor:
    return request.app.state.predictor


SettingsDep = Annotated[Settings, Depends(get_service_settings)]
ProductionDep = Annotated[ProductionModel, Depends(get_production)]
ExperimentDep = Annotated[Experiment, Depends(get_experiment)]
PredictorDep = Annotated[Predictor, Depends(get_predictor)]
