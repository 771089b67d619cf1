"""`POST /invocations` speaks MLflow's scoring protocol: each input format, the answers, the refusals, and the
same status codes as MLflow's own scoring server (`mlflow models serve`), run here on the same price rule."""

import json

import mlflow.pyfunc
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from serving_stand_ins import HOUSE_PRICES, DeclaredExperiment, FixedRegistry, NoRegistry

from mlops_sandbox.config import Settings
from mlops_sandbox.serve.app import create_app
from mlops_sandbox.serve.schema import EXAMPLES

pytestmark = pytest.mark.unit
RECORD = EXAMPLES["house_prices"]
OTHER = {**RECORD, "area": 3000, "bedrooms": 2, "furnishingstatus": "furnished"}
COLUMNS = HOUSE_PRICES.feature_names


class Captured(list):
    """Stands in for a PredictionCapture: keeps the lines the service logs."""

    def start(self) -> None: ...

    def close(self) -> None: ...

    def log(self, lines: bytes, count: int) -> None:
        self.extend(json.loads(line) for line in lines.splitlines())


def _service(production=None, capture=None) -> TestClient:
    if production is None:
        production = FixedRegistry("house-prices", "http://unused")
        production.refresh()
    settings = Settings(
        _env_file=None, model_poll_seconds=3600, capture_enabled=False, predictor_allowed_hosts="testserver"
    )
    return TestClient(create_app(settings, production, capture, DeclaredExperiment()))


class PricePerAreaModel(mlflow.pyfunc.PythonModel):
    """The stand-ins' price rule (1,000 per square foot) as an MLflow pyfunc."""

    def predict(self, context, model_input, params=None):
        return (model_input["area"] * 1000.0).to_numpy(float)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory) -> TestClient:
    """MLflow's own scoring server (what `mlflow models serve` runs) on a pyfunc with the scenario's signature."""
    from mlflow.models import infer_signature
    from mlflow.pyfunc import scoring_server

    frame = pd.DataFrame([RECORD, OTHER]).astype(
        {c.name: "float64" for c in HOUSE_PRICES.features if c.kind == "float"}
    )
    path = tmp_path_factory.mktemp("pyfunc") / "model"
    mlflow.pyfunc.save_model(path, python_model=PricePerAreaModel(), signature=infer_signature(frame[COLUMNS]))
    return TestClient(scoring_server.init(mlflow.pyfunc.load_model(str(path))))


BODIES = {
    "dataframe_split": {
        "dataframe_split": {"columns": list(RECORD), "data": [list(RECORD.values()), list(OTHER.values())]}
    },
    "dataframe_split (pandas' orient=split, with index)": {
        "dataframe_split": json.loads(pd.DataFrame([RECORD, OTHER]).to_json(orient="split"))
    },
    "dataframe_records": {"dataframe_records": [RECORD, OTHER]},
    "instances": {"instances": [RECORD, OTHER]},
    "inputs (records)": {"inputs": [RECORD, OTHER]},
    "inputs (columns)": {"inputs": {name: [RECORD[name], OTHER[name]] for name in RECORD}},
}


@pytest.mark.parametrize("name", BODIES)
def test_each_mlflow_input_format_is_answered_like_mlflow_s_server(name, mlflow_server):
    capture = Captured()
    with _service(capture=capture) as service:
        ours = service.post("/invocations", json=BODIES[name])
    theirs = mlflow_server.post("/invocations", json=BODIES[name])
    assert theirs.status_code == 200, theirs.text
    assert ours.status_code == 200, ours.text
    assert ours.json() == theirs.json() == {"predictions": [5_500_000.0, 3_000_000.0]}
    # captured like /predict: one line per row, keyed by the service's request id, named in a header
    assert [(c["request_id"], c["row"], c["prediction"]) for c in capture] == [
        (ours.headers["x-request-id"], 0, 5_500_000.0),
        (ours.headers["x-request-id"], 1, 3_000_000.0),
    ]
    assert (ours.headers["x-model-version"], ours.headers["x-variant"]) == ("3", "production")


def test_csv_is_answered_like_mlflow_s_server(mlflow_server):
    body = pd.DataFrame([RECORD, OTHER]).to_csv(index=False)
    with _service() as service:
        ours = service.post("/invocations", content=body, headers={"Content-Type": "text/csv"})
    theirs = mlflow_server.post("/invocations", content=body, headers={"Content-Type": "text/csv"})
    assert ours.status_code == theirs.status_code == 200, (ours.text, theirs.text)
    assert ours.json() == theirs.json()


BAD = {
    "not JSON": ("{not json", "application/json"),
    "a list, not an object": (json.dumps([RECORD]), "application/json"),
    "no input field": (json.dumps({"data": [RECORD]}), "application/json"),
    "two input fields": (json.dumps({"instances": [RECORD], "inputs": [RECORD]}), "application/json"),
    "a column missing": (
        json.dumps({"dataframe_records": [{k: v for k, v in RECORD.items() if k != "area"}]}),
        "application/json",
    ),
    "a word for a number": (json.dumps({"dataframe_records": [{**RECORD, "bedrooms": "three"}]}), "application/json"),
    "another content type": (json.dumps({"dataframe_records": [RECORD]}), "text/plain"),
    "another charset": (json.dumps({"dataframe_records": [RECORD]}), "application/json; charset=latin-1"),
    "an unknown content-type parameter": (json.dumps({"dataframe_records": [RECORD]}), "application/json; v=2"),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_input_gets_the_status_mlflow_s_server_gives(name, mlflow_server):
    body, content_type = BAD[name]
    capture = Captured()
    with _service(capture=capture) as service:
        ours = service.post("/invocations", content=body, headers={"Content-Type": content_type})
    theirs = mlflow_server.post("/invocations", content=body, headers={"Content-Type": content_type})
    assert theirs.status_code in (400, 415), theirs.text
    assert ours.status_code == theirs.status_code, (ours.text, theirs.text)
    if ours.status_code == 400:  # MLflow's error JSON (its code may be BAD_REQUEST or INVALID_PARAMETER_VALUE)
        assert set(ours.json()) == {"error_code", "message"} and "error_code" in theirs.json()
    assert capture == []  # nothing predicted, nothing captured


def test_a_row_outside_the_schema_is_refused_naming_the_field():
    """Where the service is stricter than MLflow's server (which checks column types only)."""
    with _service() as service:
        answer = service.post("/invocations", json={"dataframe_records": [RECORD, {**RECORD, "area": -5.0}]})
    assert answer.status_code == 400
    assert answer.json()["error_code"] == "BAD_REQUEST" and "1.area" in answer.json()["message"]


def test_without_a_production_model_it_answers_503_in_mlflow_s_shape():
    with _service(NoRegistry("house-prices", "http://unused")) as service:
        answer = service.post("/invocations", json={"dataframe_records": [RECORD]})
    assert answer.status_code == 503
    assert answer.json()["error_code"] == "TEMPORARILY_UNAVAILABLE" and "production" in answer.json()["message"]


def test_a_batch_over_the_cap_is_413():
    settings = Settings(
        _env_file=None,
        model_poll_seconds=3600,
        capture_enabled=False,
        predictor_allowed_hosts="testserver",
        predictor_max_batch=2,
    )
    production = FixedRegistry("house-prices", "http://unused")
    production.refresh()
    with TestClient(create_app(settings, production, None, DeclaredExperiment())) as service:
        answer = service.post("/invocations", json={"dataframe_records": [RECORD] * 3})
    assert answer.status_code == 413 and "at most 2" in answer.json()["message"]


def test_columns_that_are_not_features_are_dropped_as_mlflow_drops_them(mlflow_server):
    body = {"dataframe_records": [{**RECORD, "id": "house-1", "price": 1.0}, {**OTHER, "id": "house-2", "price": 2.0}]}
    capture = Captured()
    with _service(capture=capture) as service:
        ours = service.post("/invocations", json=body)
    theirs = mlflow_server.post("/invocations", json=body)
    assert ours.status_code == theirs.status_code == 200, (ours.text, theirs.text)
    assert ours.json() == theirs.json()
    assert "id" not in capture[0]["inputs"] and "price" not in capture[0]["inputs"]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (json.dumps({"dataframe_split": {"columns": ["area", "area"], "data": [[1, 2]]}}), "application/json"),
        (json.dumps({"inputs": 5}), "application/json"),
        (json.dumps(7), "application/json"),
        (json.dumps({"dataframe_split": {"columns": ["area"], "data": 3}}), "application/json"),
        ("area,area\n1,2\n", "text/csv"),
        ('area,"bedrooms\n1', "text/csv"),
        (b"\xff\xfe", "text/csv"),
    ],
)
def test_hostile_tables_get_400_never_500(body, content_type):
    with _service() as service:
        answer = service.post("/invocations", content=body, headers={"Content-Type": content_type})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error_code"] in {"BAD_REQUEST", "INVALID_PARAMETER_VALUE"}


@pytest.mark.parametrize("kind", ["csv", "dataframe_split", "dataframe_records", "inputs (columns)"])
def test_more_rows_than_the_cap_get_413_before_a_table_is_built(kind):
    """A small body can hold many rows (a CSV of one short column, say): the cap is checked on the count."""
    rows = 500_000
    body, content_type = {
        "csv": ("area\n" + "1\n" * rows, "text/csv"),
        "dataframe_split": (
            json.dumps({"dataframe_split": {"columns": ["area"], "data": [[1]] * rows}}),
            "application/json",
        ),
        "dataframe_records": (json.dumps({"dataframe_records": [{}] * rows}), "application/json"),
        "inputs (columns)": (json.dumps({"inputs": {"area": [1] * rows}}), "application/json"),
    }[kind]
    with _service() as service:
        answer = service.post("/invocations", content=body, headers={"Content-Type": content_type})
    assert answer.status_code == 413 and "at most 10000" in answer.json()["message"], answer.text[:500]


def test_parquet_is_not_taken():
    frame = pd.DataFrame([RECORD])
    with _service() as service:
        answer = service.post(
            "/invocations", content=frame.to_parquet(), headers={"Content-Type": "application/vnd.apache.parquet"}
        )
    assert answer.status_code == 415 and "application/json" in answer.text
