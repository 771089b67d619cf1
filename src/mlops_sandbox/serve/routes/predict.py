"""`POST /predict`: one record or a batch, answered by the production model and captured for monitoring.

The body's model is generated from the scenario's schema when the app is built, so `router(record, max_batch)`
makes the route for one app; what the route does is `predict`, a module-level function.
"""

import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, HTTPException, Response
from pydantic import BaseModel, Discriminator, Field, Tag

from mlops_sandbox.config import Settings
from mlops_sandbox.contracts import PRODUCTION, prediction_log_records
from mlops_sandbox.serve.capture import PredictionCapture
from mlops_sandbox.serve.deps import CaptureDep, ProductionDep, SettingsDep
from mlops_sandbox.serve.model import ProductionModel


class PredictResponse(BaseModel):
    request_id: str
    model_name: str
    model_version: str
    predictions: list[float]


def predict(
    body: BaseModel | list[BaseModel],
    response: Response,
    x_request_id: str | None,
    production: ProductionModel,
    settings: Settings,
    capture: PredictionCapture | None,
) -> PredictResponse:
    """Predict for validated records with the production model; 503 while there is none.

    Sets the `X-Request-ID` response header (the client's, or a new UUID) and captures one log line per row.
    """
    current = production.current
    if current is None:
        raise HTTPException(
            status_code=503,
            detail=(
                f"No production model yet: no version of '{settings.model_name}' has the "
                f"'{PRODUCTION}' alias. Train one (Airflow DAG training_pipeline) and promote it."
            ),
        )
    started = time.perf_counter()
    records = [r.model_dump() for r in (body if isinstance(body, list) else [body])]
    predictions = current.predict(records)
    request_id = x_request_id or str(uuid.uuid4())
    response.headers["X-Request-ID"] = request_id
    if capture is not None:
        latency_ms = (time.perf_counter() - started) * 1000
        capture.log(prediction_log_records(request_id, current.name, current.version, records, predictions, latency_ms))
    return PredictResponse(
        request_id=request_id,
        model_name=current.name,
        model_version=current.version,
        predictions=[float(p) for p in predictions],
    )


# What /predict answers besides 200 and 422, in its OpenAPI document.
ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"description": "The body is larger than PREDICTOR_MAX_BODY_BYTES, or the batch than its cap"},
    503: {"description": "No production model is served yet"},
}


def one_or_many(body: Any) -> str:
    """Which branch of the body to validate: a list is a batch, anything else one record. Only that branch's
    errors are reported (not also "Input should be a valid list" for a bad single record)."""
    return "batch" if isinstance(body, list) else "record"


def router(record: type[BaseModel], max_batch: int) -> APIRouter:
    """The `/predict` route for bodies of one `record`, or a list of 1 to `max_batch` of them."""
    batch = Annotated[list[record], Field(min_length=1, max_length=max_batch)]  # type: ignore[valid-type]
    example = record.model_json_schema()["examples"][0]
    body_type = Annotated[
        Annotated[record, Tag("record")] | Annotated[batch, Tag("batch")],  # type: ignore[valid-type]
        Discriminator(one_or_many),
        Body(openapi_examples={"one record": {"value": example}, "a batch": {"value": [example] * 2}}),
    ]
    predict_router = APIRouter()

    @predict_router.post("/predict", response_model=PredictResponse, name="predict", responses=ERRORS)
    def predict_route(
        response: Response,
        body: body_type,  # type: ignore[valid-type]
        production: ProductionDep,
        settings: SettingsDep,
        capture: CaptureDep,
        x_request_id: Annotated[str | None, Header(max_length=128)] = None,
    ) -> PredictResponse:
        """Predict for one record or a batch with the production model."""
        return predict(body, response, x_request_id, production, settings, capture)

    return predict_router
