import asyncio
import json
from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from serving_stand_ins import (
    HOUSE_PRICES,
    DeclaredExperiment,
    FixedRegistry,
    NoRegistry,
    PricePerArea,
    Uploads,
)

from mlops_sandbox.config import Settings
from mlops_sandbox.serve import deps
from mlops_sandbox.serve.app import create_app
from mlops_sandbox.serve.capture import PredictionCapture
from mlops_sandbox.serve.model import ProductionModel
from mlops_sandbox.serve.reload import poll_registry, signal_reload
from mlops_sandbox.serve.schema import EXAMPLES

pytestmark = pytest.mark.unit

RECORD = EXAMPLES["house_prices"]


class Captured(list):
    """Stands in for a PredictionCapture: keeps what the service logs."""

    def log(self, lines: bytes, count: int) -> None:
        rows = [json.loads(line) for line in lines.splitlines()]
        assert len(rows) == count and lines.endswith(b"\n")
        self.extend(rows)


def _settings(**overrides) -> Settings:
    # "testserver": the Host that TestClient sends (tests/unit/test_hostcheck.py tests the stack's names)
    overrides.setdefault("predictor_allowed_hosts", "testserver")
    return Settings(_env_file=None, model_poll_seconds=3600, capture_enabled=False, **overrides)


def _client(
    production: ProductionModel,
    capture: PredictionCapture | None = None,
    experiment: DeclaredExperiment | None = None,
    **overrides,
) -> TestClient:
    return TestClient(create_app(_settings(**overrides), production, capture, experiment or DeclaredExperiment()))


def _serving() -> ProductionModel:
    production = FixedRegistry("house-prices", "http://unused")
    production.refresh()
    return production


@pytest.fixture
def app() -> FastAPI:
    """The app as the stack builds it (a registry client, no capture), for tests that override its dependencies.

    Use it without `with TestClient(...)`: its lifespan does not run, so no poller asks a registry.
    """
    return create_app(_settings())


def test_every_prediction_is_captured_with_request_model_inputs_output_and_latency(tmp_path):
    uploads = Uploads()
    capture = PredictionCapture(uploads, tmp_path, "house_prices", segment_records=100, segment_seconds=60)
    with _client(FixedRegistry("house-prices", "http://unused"), capture) as client:
        client.post("/predict", json=RECORD, headers={"X-Request-ID": "one"})
        client.post("/predict", json=[RECORD, {**RECORD, "area": 1000.0}], headers={"X-Request-ID": "two"})
        client.post("/predict", json={**RECORD, "area": "bad"})  # refused: no prediction to capture
    # leaving the client runs the app's shutdown, which flushes
    rows = [json.loads(line) for body in uploads.values() for line in body.splitlines()]
    assert [(r["client_request_id"], r["row"], r["prediction"]) for r in rows] == [
        ("one", 0, 5_500_000.0),
        ("two", 0, 5_500_000.0),
        ("two", 1, 1_000_000.0),
    ]
    # the key is the service's: one per request, shared by the rows of a batch
    assert rows[1]["request_id"] == rows[2]["request_id"] != rows[0]["request_id"]
    assert rows[2]["inputs"] == {**RECORD, "area": 1000.0}
    assert {r["model_version"] for r in rows} == {"3"} and all(r["latency_ms"] >= 0 for r in rows)
    assert all(k.startswith("house_prices/predictions/date=") for k in uploads)


def test_without_a_production_model_predict_answers_503_and_health_says_why():
    with _client(NoRegistry("house-prices", "http://unused")) as client:
        health = client.get("/health").json()
        assert health["model_loaded"] is False
        assert "production" in health["detail"]
        assert health["worker"] > 0 and health["workers"] == 2  # which process answered, of how many
        resp = client.post("/predict", json=RECORD)
        assert resp.status_code == 503
        assert "No production model is served: no version of model 'house-prices'" in resp.json()["detail"]


def test_one_record_and_a_batch_get_predictions_with_model_version_and_request_id():
    with _client(FixedRegistry("house-prices", "http://unused")) as client:
        one = client.post("/predict", json=RECORD)
        assert one.status_code == 200, one.text
        assert one.json()["predictions"] == [5_500_000.0]
        assert one.json()["model_version"] == "3" and one.json()["request_id"]
        batch = client.post("/predict", json=[RECORD, {**RECORD, "area": 1000}], headers={"X-Request-ID": "abc-1"})
        assert batch.json()["predictions"] == [5_500_000.0, 1_000_000.0]
        assert batch.json()["client_request_id"] == "abc-1"
        assert batch.headers["X-Request-ID"] == batch.json()["request_id"] != "abc-1"
        assert "client_request_id" not in one.json()


def test_two_requests_with_the_same_client_id_are_two_keys_in_the_log(tmp_path):
    """Callers choose X-Request-ID, and two may send the same one: each request still gets its own key, so
    neither its log lines nor its actuals are merged with the other's."""
    uploads = Uploads()
    capture = PredictionCapture(uploads, tmp_path, "house_prices", segment_records=100, segment_seconds=60)
    with _client(FixedRegistry("house-prices", "http://unused"), capture) as client:
        first = client.post("/predict", json=RECORD, headers={"X-Request-ID": "same"}).json()
        second = client.post("/predict", json={**RECORD, "area": 1000.0}, headers={"X-Request-ID": "same"}).json()
    assert first["request_id"] != second["request_id"]
    rows = [json.loads(line) for body in uploads.values() for line in body.splitlines()]
    assert {(r["request_id"], r["client_request_id"], r["prediction"]) for r in rows} == {
        (first["request_id"], "same", 5_500_000.0),
        (second["request_id"], "same", 1_000_000.0),
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**RECORD, "area": "big"}, "area"),
        ({**RECORD, "area": -5}, "area"),
        ({**RECORD, "furnishingstatus": "palatial"}, "furnishingstatus"),
        ({k: v for k, v in RECORD.items() if k != "bedrooms"}, "bedrooms"),
        ({**RECORD, "colour": "red"}, "colour"),
        ({**RECORD, "bedrooms": 2.5}, "bedrooms"),
    ],
)
def test_invalid_input_is_a_422_naming_the_field(body, field):
    with _client(FixedRegistry("house-prices", "http://unused")) as client:
        resp = client.post("/predict", json=body)
        assert resp.status_code == 422
        assert any(field in map(str, err["loc"]) for err in resp.json()["detail"]), resp.json()


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"[]", 422),
        (b"not json", 400),
        (b"", 400),
        (b'{"area": NaN}', 422),
        (b"null", 422),
        (b"[" * 100_000 + b"]" * 100_000, 400),  # nested deeper than any parser's recursion limit
        (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, 400),
    ],
)
def test_malformed_bodies_are_4xx_not_500(raw, status):
    with _client(FixedRegistry("house-prices", "http://unused")) as client:
        resp = client.post("/predict", content=raw, headers={"Content-Type": "application/json"})
        assert resp.status_code == status, resp.text
        assert resp.status_code != 400 or resp.json()["detail"].startswith("the body is")


def test_nan_is_refused():
    with _client(FixedRegistry("house-prices", "http://unused")) as client:
        resp = client.post(
            "/predict", content=b'{"area": NaN}'.replace(b"NaN", b"1e999"), headers={"Content-Type": "application/json"}
        )
        assert resp.status_code == 422


def test_batches_are_capped():
    with _client(FixedRegistry("house-prices", "http://unused"), predictor_max_batch=3) as client:
        assert client.post("/predict", json=[RECORD] * 3).status_code == 200
        over = client.post("/predict", json=[RECORD] * 4)
        assert over.status_code == 413 and over.json() == {"detail": "a batch holds at most 3 records"}


def test_a_body_over_the_limit_is_refused_before_it_is_parsed():
    with _client(FixedRegistry("house-prices", "http://unused"), predictor_max_body_bytes=10_000) as client:
        assert client.post("/predict", json=[RECORD] * 3).status_code == 200
        big = json.dumps([RECORD] * 200).encode()  # ~60 kB, declared in Content-Length
        resp = client.post("/predict", content=big, headers={"Content-Type": "application/json"})
        assert resp.status_code == 413 and len(resp.content) < 200
        assert "PREDICTOR_MAX_BODY_BYTES" in resp.json()["detail"]

        def chunks():  # streamed, with no Content-Length: counted as it arrives
            for _ in range(200):
                yield json.dumps(RECORD).encode()

        streamed = client.post("/predict", content=chunks(), headers={"Content-Type": "application/json"})
        assert streamed.status_code == 413


def test_numbers_must_be_json_numbers():
    with _client(FixedRegistry("house-prices", "http://unused")) as client:
        for field, value in (("bedrooms", True), ("area", "5500"), ("parking", "1")):
            resp = client.post("/predict", json={**RECORD, field: value})
            assert resp.status_code == 422, (field, value)
            (error,) = resp.json()["detail"]
            assert error["loc"][-1] == field and "must be a JSON number" in error["msg"]
        assert client.post("/predict", json={**RECORD, "bedrooms": 3.0}).status_code == 200  # an integral number


def test_a_422_names_only_the_branch_that_applies_and_stays_small():
    with _client(FixedRegistry("house-prices", "http://unused")) as client:
        one = client.post("/predict", json={**RECORD, "area": "huge"}).json()["detail"]
        assert [e["loc"] for e in one] == [["body", "record", "area"]]  # no "Input should be a valid list"
        rows = client.post("/predict", json=[RECORD, {**RECORD, "stories": 99}]).json()["detail"]
        assert [e["loc"] for e in rows] == [["body", "batch", 1, "stories"]]  # the row and the field
        junk = [{"area": "x" * 300, "nested": {"deep": list(range(100))}}] * 2000
        resp = client.post("/predict", json=junk)
        assert resp.status_code == 422 and len(resp.content) < 10_000
        assert resp.json()["more_errors"] > 0 and "x" * 100 not in resp.text


def test_reload_with_a_non_ascii_authorization_is_401(app):
    app.dependency_overrides[deps.get_service_settings] = lambda: _settings(predictor_reload_token="s3cret")
    resp = TestClient(app).post("/reload", headers={"Authorization": "Bearer sécret".encode("latin-1")})
    assert resp.status_code == 401


def test_openapi_lists_every_status_the_routes_answer():
    with _client(FixedRegistry("house-prices", "http://unused")) as client:
        paths = client.get("/openapi.json").json()["paths"]
        assert {"200", "413", "422", "503"} <= set(paths["/predict"]["post"]["responses"])
        assert {"200", "401", "403"} <= set(paths["/reload"]["post"]["responses"])


@pytest.mark.parametrize("route", ["/predict", "/invocations"])
def test_caller_ids_over_128_characters_are_a_422_naming_the_header_and_nothing_is_captured(route):
    captured = Captured()
    body = RECORD if route == "/predict" else {"dataframe_records": [RECORD]}
    client = _client(_serving(), captured)  # not started: no shipper for this stand-in capture
    parameters = client.get("/openapi.json").json()["paths"][route]["post"]["parameters"]
    assert {p["name"]: p["schema"]["anyOf"][0]["maxLength"] for p in parameters} == {
        "x-request-id": 128,
        "x-client-id": 128,
    }
    for header in ("X-Request-ID", "X-Client-ID"):
        assert client.post(route, json=body, headers={header: "x" * 128}).status_code == 200
        resp = client.post(route, json=body, headers={header: "x" * 129})
        assert resp.status_code == 422, resp.text
        (error,) = resp.json()["detail"]
        assert error["loc"] == ["header", header.lower()] and "128 characters" in error["msg"]
    assert len(captured) == 2  # the two answered requests only


def test_the_master_preloads_what_the_served_model_types_import(monkeypatch):
    """Before it forks its workers, the service imports the serving modules of the model types behind
    production and staging, read from the registry's REST API; an unknown type or an unreachable registry
    preloads nothing."""
    import sys
    import types

    from mlops_sandbox import catalog
    from mlops_sandbox.serve import app as serve_app

    assert serve_app.preload_model_types({"linear", "mlp", "hist_gbt", "no-such-type"}) == []  # numpy enough
    # a model type that needs a library to predict: what is installed of it is imported
    needs = types.ModuleType("needs_a_library")
    needs.MODEL_TYPE = types.SimpleNamespace(serving_modules=("colorsys", "no_such_library"))
    monkeypatch.setitem(sys.modules, "needs_a_library", needs)
    monkeypatch.setitem(catalog.MODEL_TYPES, "needs-a-library", "needs_a_library")
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    assert serve_app.preload_model_types({"needs-a-library"}) == ["colorsys"] and "colorsys" in sys.modules
    unreachable = _settings(mlflow_tracking_uri="http://127.0.0.1:9")  # discard port: refused at once
    assert serve_app.registered_model_types(unreachable, wait=0) == set()

    class Answer:
        ok, status_code = True, 200

        def __init__(self, alias: str) -> None:
            self.alias = alias

        def json(self) -> dict:
            kind = {"production": "mlp", "staging": "hist_gbt"}[self.alias]
            tags = [{"key": "scenario", "value": "x"}, {"key": "model_type", "value": kind}]
            return {"model_version": {"tags": tags}}

    monkeypatch.setattr("requests.get", lambda url, params, timeout: Answer(params["alias"]))
    assert serve_app.registered_model_types(_settings(mlflow_tracking_uri="http://mlflow:5000")) == {"mlp", "hist_gbt"}

    class NotTheRegistry(Answer):  # a proxy's page: asked once per alias, not again until the wait is over
        def json(self) -> dict:
            raise ValueError("Expecting value: line 1 column 1 (char 0)")

    asked = []
    monkeypatch.setattr("requests.get", lambda url, params, timeout: asked.append(1) or NotTheRegistry(params["alias"]))
    assert serve_app.registered_model_types(_settings(mlflow_tracking_uri="http://mlflow:5000"), wait=30) == set()
    assert len(asked) == 2


def test_model_reports_version_and_lineage(app):
    app.dependency_overrides[deps.get_production] = _serving
    info = TestClient(app).get("/model").json()
    assert info["version"] == "3" and info["alias"] == "production" and info["run_id"] == "run-1"
    assert info["lineage"] == {"dvc_data_version": "abc"}


def test_reload_needs_the_token(app):
    app.dependency_overrides[deps.get_production] = _serving
    app.dependency_overrides[deps.get_service_settings] = lambda: _settings(predictor_reload_token="s3cret")
    client = TestClient(app)
    assert client.post("/reload").status_code == 401
    assert client.post("/reload", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = client.post("/reload", headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200 and ok.json()["model_version"] == "3"


def test_reload_is_refused_when_no_token_is_set(app):
    app.dependency_overrides[deps.get_service_settings] = lambda: _settings(predictor_reload_token="")
    resp = TestClient(app).post("/reload", headers={"Authorization": "Bearer "})
    assert resp.status_code == 403 and "PREDICTOR_RELOAD_TOKEN" in resp.json()["detail"]


def test_each_predicted_row_is_one_prediction_log_line_with_the_fields_monitoring_reads(app):
    captured = Captured()
    settings, reader = app.state.predictor.settings, app.state.predictor.reader
    predictor = deps.Predictor(settings, _serving(), captured, reader, DeclaredExperiment(), None)
    app.state.predictor = predictor
    resp = TestClient(app).post("/predict", json=[RECORD, {**RECORD, "area": 1000.0}], headers={"X-Request-ID": "r"})
    assert resp.status_code == 200, resp.text
    assert [list(row) for row in captured] == [
        ["request_id", "row", "timestamp", "model_name", "model_version", "variant", "client_request_id", "inputs"]
        + ["prediction", "latency_ms"]
    ] * 2
    first, second = captured
    assert (first["client_request_id"], first["row"], first["prediction"]) == ("r", 0, 5_500_000.0)
    assert first["request_id"] == second["request_id"] == resp.json()["request_id"]
    assert (second["row"], second["inputs"], second["prediction"]) == (1, {**RECORD, "area": 1000.0}, 1_000_000.0)
    assert first["timestamp"] == second["timestamp"] and first["timestamp"].endswith("+00:00")
    assert (first["model_name"], first["model_version"]) == ("house-prices", "3")


def test_openapi_documents_every_route_and_the_record_fields():
    with _client(NoRegistry("house-prices", "http://unused")) as client:
        spec = client.get("/openapi.json").json()
        assert {"/predict", "/health", "/model", "/reload", "/metrics"} <= set(spec["paths"])
        record = spec["components"]["schemas"]["HousePricesRecord"]
        assert set(record["required"]) == set(HOUSE_PRICES.feature_names)
        bedrooms = next(c for c in HOUSE_PRICES.features if c.name == "bedrooms")  # bounds as OpenAPI names them
        assert (record["properties"]["bedrooms"]["minimum"], record["properties"]["bedrooms"]["maximum"]) == (
            bedrooms.minimum,
            bedrooms.maximum,
        )
        predict = spec["paths"]["/predict"]["post"]
        assert {"400", "413", "422", "503"} <= set(predict["responses"])
        assert predict["requestBody"]["content"]["application/json"]["schema"]


def test_swagger_ui_and_redoc_load_their_assets_from_the_service_not_a_cdn():
    client = _client(NoRegistry("house-prices", "http://unused"))
    for page, asset in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        html = client.get(page)
        assert html.status_code == 200 and f"/docs-assets/{asset}" in html.text
        assert "https://" not in html.text  # nothing from the internet: no CDN, no web fonts
        js = client.get(f"/docs-assets/{asset}")
        assert js.status_code == 200 and len(js.content) > 100_000


def test_a_reload_signal_makes_the_poller_refresh_before_its_next_poll():
    """`/reload` in one worker touches the signal file; every worker's poller sees it within about a second."""

    class Counting(ProductionModel):
        refreshes = 0

        def refresh(self) -> bool:
            self.refreshes += 1
            return False

    async def refreshes_after_a_signal() -> int:
        production = Counting("house-prices", "http://unused")
        poller = asyncio.create_task(poll_registry(production, poll_seconds=3600))  # no second poll in this test

        async def until(count: int) -> None:
            for _ in range(100):
                if production.refreshes >= count:
                    return
                await asyncio.sleep(0.05)

        await until(1)  # the poll at start
        signal_reload()
        await until(2)
        poller.cancel()
        return production.refreshes

    assert asyncio.run(refreshes_after_a_signal()) >= 2


class Registry:
    """A registry stand-in: the version behind the alias (None: the alias is gone), or down."""

    def __init__(self) -> None:
        self.version: str | None = "3"
        self.down = False

    def get_model_version_by_alias(self, name: str, alias: str):
        from mlflow.exceptions import MlflowException

        if self.down:
            raise ConnectionError("MLflow is unreachable")
        if self.version is None:
            raise MlflowException(f"Registered model alias {alias} not found.")
        return SimpleNamespace(version=self.version, run_id="run-1", tags={})


def test_the_service_stops_serving_a_version_the_registry_withdrew_but_not_when_the_registry_is_down(monkeypatch):
    import mlflow.pyfunc

    registry = Registry()
    monkeypatch.setattr("mlops_sandbox.tracking.tracking_client", lambda uri: registry)

    def load_model(uri: str):
        if uri.endswith("/4"):
            raise OSError("model artifact not found")
        model = PricePerArea()
        model.metadata = SimpleNamespace(
            get_input_schema=lambda: SimpleNamespace(input_names=lambda: HOUSE_PRICES.feature_names)
        )
        return model

    monkeypatch.setattr(mlflow.pyfunc, "load_model", load_model)
    production = ProductionModel("house-prices", "http://unused", schema=HOUSE_PRICES)
    with TestClient(create_app(_settings(), production, None, DeclaredExperiment())) as client:
        assert production.refresh() is False and production.current.version == "3"  # the lifespan loaded it
        registry.down = True
        production.refresh()
        assert production.current.version == "3" and "unreachable" in production.last_error  # nothing withdrawn

        registry.down, registry.version = False, None  # the alias removed
        production.refresh()
        health = client.get("/health").json()
        assert health["model_loaded"] is False
        assert (
            health["detail"]
            == "no version of model 'house-prices' has the alias 'production'; stopped serving version 3"
        )
        refused = client.post("/predict", json=RECORD)
        assert refused.status_code == 503 and "stopped serving version 3" in refused.json()["detail"]

        registry.version = "3"
        assert production.refresh() and client.post("/predict", json=RECORD).status_code == 200
        registry.version = "4"  # moved to a version that cannot be loaded
        production.refresh()
        assert production.current is None and "version 4, which cannot be loaded" in production.last_error
        assert client.post("/predict", json=RECORD).status_code == 503


def test_a_direct_route_refuses_a_dependency_it_would_never_run():
    """/predict and /invocations are DirectRoutes: FastAPI calls them without solving parameters, so a
    dependency declared on one fails when the route is made, instead of being skipped on every request."""
    from fastapi import APIRouter, Depends

    from mlops_sandbox.serve.routes import DirectRoute

    router = APIRouter(route_class=DirectRoute)

    async def check() -> None:
        return None

    with pytest.raises(TypeError, match="without dependencies"):
        router.add_api_route("/checked", lambda request: None, methods=["POST"], dependencies=[Depends(check)])
