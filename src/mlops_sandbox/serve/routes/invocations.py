"""`POST /invocations`: MLflow's scoring protocol, so a client written for `mlflow models serve` works unchanged.

The body is what MLflow's scoring server takes: JSON holding exactly one of `dataframe_split`,
`dataframe_records`, `instances` or `inputs` (`application/json`), or CSV with a header (`text/csv`). MLflow's
own parsers read the JSON, and CSV the way MLflow reads it, so a body MLflow's server refuses is refused here
with the same status and the same error JSON (`{"error_code": ..., "message": ...}`): 400 for a body it cannot
read, 415 for another content type or charset. Columns that are not features are dropped, as MLflow does.
The rows are then checked against the scenario's schema like a `/predict` batch, answered by the same model
(the production version, or the A/B candidate for its callers), and captured before the answer in the same
way. The answer is MLflow's, `{"predictions": [...]}`;
the service's request id (the key that actuals name), the version and the variant that answered are in the
`X-Request-ID`, `X-Model-Version` and `X-Variant` headers.

Where it differs from `mlflow models serve`, on purpose: a row outside the schema's bounds or categories is
refused with 400 naming the field (MLflow's server checks column types only, and would predict), a batch over
`PREDICTOR_MAX_BATCH` gets 413 (counted before any table is built), Parquet gets 415 (a compressed body of a
few KB can expand to gigabytes), and with no production model, or when the rows cannot be captured, the answer
is 503 (`TEMPORARILY_UNAVAILABLE`): nothing was predicted.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from typing import Any

import msgspec
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError

from mlops_sandbox.serve.body import over_the_cap, too_many
from mlops_sandbox.serve.deps import CALLER_ID_PARAMETERS, caller_ids, predictor_of
from mlops_sandbox.serve.routes import DirectRoute
from mlops_sandbox.serve.routes.predict import predict_rows, served

router = APIRouter(route_class=DirectRoute)  # its endpoints take the Request and make the Response

JSON, CSV = "application/json", "text/csv"
MEDIA_TYPES = (JSON, CSV)  # not MLflow's Parquet: a compressed body of a few KB can expand to gigabytes
MAX_PROBLEMS = 10  # bad fields named in a 400


class Refused(Exception):
    """An answer other than 200, in MLflow's shape."""

    def __init__(self, status: int, message: str, error_code: str = "BAD_REQUEST") -> None:
        super().__init__(message)
        self.status, self.message, self.error_code = status, message, error_code

    def response(self) -> Response:
        if self.status == 415:  # MLflow's server answers a content type it does not take in plain text
            return Response(self.message, status_code=415, media_type="text/plain")
        body = json.dumps({"error_code": self.error_code, "message": self.message})
        return Response(body, status_code=self.status, media_type="application/json")


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "description": "MLflow's BAD_REQUEST: the body is not one of MLflow's input formats, or a row does not "
        "fit the scenario's schema (each bad field named)"
    },
    413: {"description": "The body is larger than PREDICTOR_MAX_BODY_BYTES, or the batch than PREDICTOR_MAX_BATCH"},
    415: {"description": "Not application/json or text/csv (Parquet is not taken), or not UTF-8"},
    422: {"description": "An X-Request-ID or X-Client-ID header over 128 characters"},
    503: {"description": "No production model is served, or the rows cannot be captured: nothing was predicted"},
}
_encode = msgspec.json.Encoder().encode


def media_type(content_type: str | None) -> str:
    """The body's media type, checked as MLflow's scoring server checks it (UTF-8 only, no other parameter)."""
    parts = [part.strip() for part in (content_type or "").split(";")]
    parameters = {key.strip().lower(): value.strip() for key, _, value in (p.partition("=") for p in parts[1:] if p)}
    if parameters.get("charset", "utf-8").lower() != "utf-8":
        raise Refused(415, "The scoring server only supports UTF-8")
    if unexpected := set(parameters) - {"charset"}:
        raise Refused(415, f"Unrecognized content type parameters: {', '.join(sorted(unexpected))}.")
    if parts[0].lower() not in MEDIA_TYPES:
        raise Refused(
            415,
            f"This predictor only supports the following content types: Types: {list(MEDIA_TYPES)}. "
            f"Got '{content_type or ''}'.",
        )
    return parts[0].lower()


def _rows_in(fields: dict[str, Any]) -> int:
    """How many rows MLflow's envelope holds, counted before any table is built (the largest count its one
    input field could give)."""
    split = fields.get("dataframe_split")
    if isinstance(split, dict):
        return len(split["data"]) if isinstance(split.get("data"), list) else 0
    counts = [0]
    for name in ("dataframe_records", "instances", "inputs"):
        value = fields.get(name)
        if isinstance(value, list):
            counts.append(len(value))
        elif isinstance(value, dict):
            counts.extend(len(column) for column in value.values() if isinstance(column, list))
    return max(counts)


def records(body: bytes, kind: str, features: list[str], max_rows: int) -> list[dict[str, Any]]:
    """The rows of an MLflow scoring body as plain records of the scenario's features, read by MLflow's own
    parsers. More than `max_rows` rows: 413, found before the table is built. Columns that are not features
    are dropped, as MLflow's schema enforcement drops them."""
    import numpy as np
    import pandas as pd
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server

    over = Refused(413, too_many(max_rows))
    try:
        if kind == CSV:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as err:
                raise Refused(400, f"Ensure that input is a valid UTF-8 encoded string. Error: '{err!r}'") from None
            try:  # MLflow's parse_csv_input, reading at most one row more than the cap
                data = pd.read_csv(io.StringIO(text), nrows=max_rows + 1)
            except Exception as err:  # noqa: BLE001 - pandas' many parse errors: MLflow answers them all with 400
                raise Refused(400, f"Failed to parse input as a Pandas DataFrame. Error: '{err}'") from None
            if len(data) > max_rows:
                raise over
        else:
            envelope = scoring_server._decode_json_input(body)  # MLflow's: 400 for bad JSON, or a list
            if _rows_in(envelope) > max_rows:
                raise over
            fields, _ = scoring_server._split_data_and_params(envelope)
            data = scoring_server.infer_and_parse_data(fields)
    except MlflowException as err:
        raise Refused(err.get_http_status_code(), err.message, _error_code(err)) from None
    except RecursionError:
        raise Refused(400, "the body is JSON nested too deeply to be records") from None
    except (ValueError, TypeError, KeyError, IndexError) as err:  # pandas refusing what MLflow's envelope let through
        raise Refused(400, f"the input is not a table of records: {err}") from None
    try:
        if isinstance(data, dict):  # `instances` / `inputs` as columns (or one record): name -> array
            data = pd.DataFrame({name: np.atleast_1d(np.asarray(values)).tolist() for name, values in data.items()})
        elif isinstance(data, list) and all(isinstance(row, dict) for row in data):  # `inputs` as records
            data = pd.DataFrame([{name: np.asarray(value).tolist() for name, value in row.items()} for row in data])
        if not isinstance(data, pd.DataFrame):
            raise Refused(400, "the input must name its columns (dataframe_split, dataframe_records, or records)")
        if not data.columns.is_unique:
            raise Refused(400, "the input names a column twice")
        if len(data) > max_rows:
            raise over
        data = data[[column for column in data.columns if column in features]]
        return json.loads(data.to_json(orient="records"))  # plain Python values; NaN as None
    except (ValueError, TypeError, UnicodeDecodeError) as err:
        raise Refused(400, f"the input is not a table of records: {err}") from None


def _error_code(err) -> str:
    code = getattr(err, "error_code", "BAD_REQUEST")
    return code if isinstance(code, str) else "BAD_REQUEST"


def _problems(err: RequestValidationError) -> Refused:
    errors = err.errors()
    too_long = over_the_cap(errors)
    if too_long is not None:
        return Refused(413, too_many(too_long.get("ctx", {}).get("max_length")))
    named = []
    for e in errors[:MAX_PROBLEMS]:
        where = [str(part) for part in e["loc"][1:] if part != "batch"]
        named.append(f"{'.'.join(where) or 'input'}: {e['msg']}")
    more = f" (and {len(errors) - MAX_PROBLEMS} more)" if len(errors) > MAX_PROBLEMS else ""
    return Refused(400, "Failed to enforce schema of data: " + "; ".join(named) + more)


@router.post("/invocations", name="invocations", responses=ERRORS, openapi_extra={"parameters": CALLER_ID_PARAMETERS})
async def invocations(request: Request) -> Response:
    """Predict in MLflow's scoring protocol (`mlflow models serve`): `{"dataframe_split": ...}`,
    `{"dataframe_records": [...]}`, `{"instances": ...}` or `{"inputs": ...}` as JSON, or a CSV with a header.
    Answers `{"predictions": [...]}`, one per row in order; captured like `/predict`."""
    predictor = predictor_of(request)
    x_request_id, x_client_id = caller_ids(request)
    try:
        served(predictor)
        kind = media_type(request.headers.get("content-type"))
        started = time.perf_counter()
        body = await request.body()  # a streamed body over PREDICTOR_MAX_BODY_BYTES: 413 from BodyLimit
        reader, cap = predictor.reader, predictor.settings.predictor_max_batch
        rows = await asyncio.to_thread(records, body, kind, reader.features, cap)  # pandas: off the event loop
        try:
            valid = reader.validate(rows)
        except RequestValidationError as err:
            raise _problems(err) from None
        answer = predict_rows(predictor, valid, started, x_request_id, x_client_id)
    except Refused as refused:
        return refused.response()
    except HTTPException as err:  # 503: nothing served, or the rows cannot be captured; 413: the body
        code = "TEMPORARILY_UNAVAILABLE" if err.status_code == 503 else "BAD_REQUEST"
        return Refused(err.status_code, str(err.detail), code).response()
    headers = {
        "X-Request-ID": answer["request_id"],
        "X-Model-Version": answer["model_version"],
        "X-Variant": answer["variant"],
    }
    return Response(_encode({"predictions": answer["predictions"]}), media_type="application/json", headers=headers)


def openapi(example: dict[str, Any]) -> dict[str, Any]:
    """The request body of `/invocations` for the OpenAPI document: MLflow's formats, each with an example."""
    columns = list(example)
    return {
        "required": True,
        "content": {
            JSON: {
                "schema": {
                    "type": "object",
                    "description": "Exactly one of MLflow's input fields",
                    "properties": {
                        "dataframe_split": {"type": "object"},
                        "dataframe_records": {"type": "array", "items": {"type": "object"}},
                        "instances": {},
                        "inputs": {},
                    },
                },
                "examples": {
                    "dataframe_split": {
                        "value": {"dataframe_split": {"columns": columns, "data": [list(example.values())]}}
                    },
                    "dataframe_records": {"value": {"dataframe_records": [example, example]}},
                    "instances": {"value": {"instances": [example]}},
                    "inputs": {"value": {"inputs": {name: [value] for name, value in example.items()}}},
                },
            },
            CSV: {
                "schema": {"type": "string"},
                "example": ",".join(columns) + "\n" + ",".join(map(str, example.values())),
            },
        },
    }
