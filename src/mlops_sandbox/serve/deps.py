"""What the routes depend on, read from `app.state` (set once by `create_app`).

The routes other than the prediction ones take FastAPI dependencies, overridable in tests. Each provider is
`async` so that FastAPI awaits it on the event loop: a plain `def` dependency would cost a thread-pool hop on
every request. A test swaps one with `app.dependency_overrides[get_production] = ...`. Overrides reach those
routes only: the lifespan (registry poller, capture writer) uses `app.state` itself.

`/predict` and `/invocations` take no FastAPI dependency or parameter at all: solving them cost about a third
of a one-record request, more than the model. They read the app's `Predictor` (`predictor_of(request)`) and the
caller's ids (`caller_ids(request)`) themselves, and `CALLER_ID_PARAMETERS` documents those headers; their
route class (`routes.DirectRoute`) calls them with the request as it is. A test sets `app.state.predictor`;
dependency overrides do not reach them.
"""

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError

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


def predictor_of(request: Request) -> Predictor:
    """What the prediction routes use, as `create_app` set it (a test may set another on `app.state`)."""
    return request.app.state.predictor


MAX_ID_CHARS = 128  # X-Request-ID and X-Client-ID
CALLER_ID_HEADERS = ("x-request-id", "x-client-id")
CALLER_ID_DOCS = (  # each header's title and description in the OpenAPI document, in the same order
    ("X-Request-Id", "The caller's own id for the request, kept beside the service's own"),
    ("X-Client-Id", "The caller, for a sticky A/B assignment (else the request id is used)"),
)


def caller_ids(request: Request) -> tuple[str | None, str | None]:
    """The caller's `X-Request-ID` and `X-Client-ID` (None when not sent); a 422 naming the header, as FastAPI
    gives for a declared `Header(max_length=128)`, when one is longer."""
    values = [request.headers.get(name) for name in CALLER_ID_HEADERS]
    errors = [
        {
            "type": "string_too_long",
            "loc": ("header", name),
            "msg": f"String should have at most {MAX_ID_CHARS} characters",
            "input": value,
            "ctx": {"max_length": MAX_ID_CHARS},
        }
        for name, value in zip(CALLER_ID_HEADERS, values, strict=True)
        if value is not None and len(value) > MAX_ID_CHARS
    ]
    if errors:
        raise RequestValidationError(errors)
    return values[0], values[1]


# The two headers in the OpenAPI document of the routes that read them with `caller_ids`.
CALLER_ID_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": {"anyOf": [{"type": "string", "maxLength": MAX_ID_CHARS}, {"type": "null"}], "title": title},
    }
    for name, (title, description) in zip(CALLER_ID_HEADERS, CALLER_ID_DOCS, strict=True)
]


SettingsDep = Annotated[Settings, Depends(get_service_settings)]
ProductionDep = Annotated[ProductionModel, Depends(get_production)]
ExperimentDep = Annotated[Experiment, Depends(get_experiment)]
