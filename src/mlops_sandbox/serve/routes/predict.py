"""`POST /predict`: one record or a batch, answered by the production model, captured before it is answered.

The body is read by the app's `BodyReader` (`serve.body`: JSON straight into columns, the same path for one
row and many); its OpenAPI description is added by `create_app`, since it depends on the scenario.
"""

import time
import uuid
from typing import Any

import msgspec
from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel

from mlops_sandbox.contracts import MODE_OFF, MODE_SHADOW, PRODUCTION, PRODUCTION_VARIANT, prediction_log_lines
from mlops_sandbox.serve import metrics
from mlops_sandbox.serve.body import Rows
from mlops_sandbox.serve.capture import CaptureUnavailable
from mlops_sandbox.serve.deps import CALLER_ID_PARAMETERS, caller_ids, predictor_of
from mlops_sandbox.serve.experiment import ShadowJob
from mlops_sandbox.serve.routes import DirectRoute

router = APIRouter(route_class=DirectRoute)  # its endpoints take the Request and make the Response


class PredictResponse(BaseModel):
    request_id: str  # made by the service, unique: the key that actuals name (with the row's place)
    client_request_id: str | None = None  # the caller's X-Request-ID, when it sent one
    model_name: str
    model_version: str  # of the model that answered
    variant: str  # production, or candidate (the `staging` version, for its A/B share of callers)
    predictions: list[float]


# What /predict answers besides 200, in its OpenAPI document.
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "The body is not JSON"},
    413: {"description": "The body is larger than PREDICTOR_MAX_BODY_BYTES, or the batch than PREDICTOR_MAX_BATCH"},
    422: {"description": "A record does not fit the scenario's schema: each bad field and row is named"},
    503: {
        "description": "No production model is served (none promoted, or the registry withdrew it), or the "
        "prediction cannot be captured (spool full, disk full or not writable): nothing was predicted"
    },
}

_encode = msgspec.json.Encoder().encode


@router.post(
    "/predict",
    response_model=PredictResponse,
    name="predict",
    responses=ERRORS,
    openapi_extra={"parameters": CALLER_ID_PARAMETERS},
)
async def predict(request: Request) -> Response:
    """Predict for one record or a batch with the production model.

    Every request gets a `request_id` of the service's own (a UUID, also in the answer's `X-Request-ID`
    header): ground truth names it, with the row's place in the batch. A caller's own `X-Request-ID` is kept
    beside it (`client_request_id`, in the answer and the log), never as the key: two callers may send the
    same one. Each row's log line is on the spool disk before the answer is sent: an answered prediction is
    never lost, even if the service is killed.

    In an A/B experiment (`mlops-sandbox model experiment ab`), a share of callers is answered by the candidate
    (the `staging` version): always the same callers, by `X-Client-ID` (else by request id). `model_version`
    and `variant` say which model answered. In shadow mode production answers, and the candidate's predictions
    are captured after the answer.
    """
    predictor = predictor_of(request)
    x_request_id, x_client_id = caller_ids(request)
    served(predictor)  # 503 before the body is read when nothing is served
    started = time.perf_counter()
    rows = predictor.reader.read(await request.body())
    answer = predict_rows(predictor, rows, started, x_request_id, x_client_id)
    return Response(_encode(answer), media_type="application/json", headers={"X-Request-ID": answer["request_id"]})


def served(predictor):
    """The production model being served, or 503 saying why there is none."""
    current = predictor.production.current
    if current is None:
        model_name = predictor.settings.model_name
        why = predictor.production.last_error or f"no version of '{model_name}' has the '{PRODUCTION}' alias yet"
        raise HTTPException(
            status_code=503,
            detail=f"No production model is served: {why}. Train one (Airflow DAG training_pipeline) and promote it.",
        )
    return current


def predict_rows(predictor, rows: Rows, started: float, x_request_id: str | None, x_client_id: str | None) -> dict:
    """Predict validated rows with the model that answers this caller, capture them, and return the answer
    (`/predict`'s; `/invocations` answers with its `predictions`). 503 when nothing is served or the rows
    cannot be captured: then nothing was predicted for the caller."""
    current = served(predictor)
    capture, experiment = predictor.capture, predictor.experiment
    request_id = str(uuid.uuid4())
    variant, answering = experiment.variant_for(x_client_id or x_request_id or request_id)
    predictions = None
    if answering is not None:
        try:
            predictions = answering.predict(rows.columns).tolist()
        except Exception as err:  # noqa: BLE001 - the candidate never costs a caller an answer
            experiment.fail(answering, err)
            variant, answering = PRODUCTION_VARIANT, None
    if answering is None:
        answering = current
        predictions = current.predict(rows.columns).tolist()
    if capture is not None:
        latency_ms = (time.perf_counter() - started) * 1000
        lines = prediction_log_lines(
            request_id,
            answering.name,
            answering.version,
            rows.records,
            predictions,
            latency_ms,
            variant=variant,
            client_request_id=x_request_id,
        )
        try:
            capture.log(lines, len(rows))
        except CaptureUnavailable as err:
            detail = f"not answered, since it could not be captured: {err}"
            raise HTTPException(status_code=503, detail=detail) from None
    metrics.ROWS.inc(len(rows))
    if experiment.mode != MODE_OFF:
        metrics.VARIANT_ROWS.labels(variant).inc(len(rows))
        if experiment.mode == MODE_SHADOW and predictor.shadow is not None:
            predictor.shadow.submit(ShadowJob(request_id, rows.records, current.version, predictions))
    return {
        "request_id": request_id,
        **({} if x_request_id is None else {"client_request_id": x_request_id}),
        "model_name": answering.name,
        "model_version": answering.version,
        "variant": variant,
        "predictions": predictions,
    }
