"""The prediction service against its own OpenAPI document, with schemathesis: generated and mutated requests
(valid records and batches, broken bodies, wrong types, content types and methods, odd headers) to every
documented operation, in process.

Every answer must be a status that the document lists for that operation (`status_code_conformance`), and no
answer may be a 5xx (`not_a_server_error`), except the documented 503 of a service that has no model. `/predict`
gets most of the cases, with a model served and a real capture; then every operation once more with no model.
"""

from collections import Counter

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance
from serving_stand_ins import DeclaredExperiment, FixedRegistry, NoRegistry, Uploads

from mlops_sandbox.config import Settings
from mlops_sandbox.schema import get_schema
from mlops_sandbox.serve.app import create_app
from mlops_sandbox.serve.capture import PredictionCapture
from mlops_sandbox.serve.model import ProductionModel

pytestmark = pytest.mark.unit

HOUSE_PRICES = get_schema("house_prices")
TOKEN = "s3cret"
# Cases in this module, at least: each test's fuzzing phase runs `max_examples` of them per operation, and the
# examples and coverage phases add their own (the document's examples; boundaries, missing fields, wrong types,
# content types and methods).
TOTAL_CASES = 10_000


def fuzz(max_examples: int) -> settings:
    """Hypothesis settings of a fuzz test: no deadline (slow CI cores), no example database in the tree. The
    app fixtures are meant to live for the whole test, across its examples (`function_scoped_fixture`)."""
    return settings(max_examples=max_examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))


def _settings() -> Settings:
    # "testserver": the Host that schemathesis sends to an ASGI app
    return Settings(
        _env_file=None,
        model_poll_seconds=3600,
        capture_enabled=False,
        predictor_reload_token=TOKEN,
        predictor_allowed_hosts="testserver",
    )


# The document the service publishes: it depends on the settings and the scenario, not on the model or capture.
DOCUMENT = create_app(_settings(), NoRegistry("house-prices", "http://unused"), None, DeclaredExperiment()).openapi()
# Loaded from the document rather than from an app (`from_asgi`), so that each test sends its cases to an app of
# its own, which a fixture builds with its own capture. (`schemathesis.pytest.from_fixture` would do that, but
# fails on pytest 9.2: it sets `Function._nodeid`, which pytest no longer has.)
schema = schemathesis.openapi.from_dict(DOCUMENT)


@pytest.fixture(scope="module")
def cases() -> Counter:
    """The cases each test sent, by answer: (test, method, path, status) -> count."""
    return Counter()


@pytest.fixture
def uploads() -> Uploads:
    return Uploads()


@pytest.fixture
def capture(tmp_path, uploads):
    """A real capture, to an in-memory bucket. Once the test's app has stopped (schemathesis ends its lifespan
    before the fixtures), every captured line is in the bucket."""
    capture = PredictionCapture(uploads, tmp_path / "spool", "house_prices", segment_records=500, segment_seconds=60)
    yield capture
    lines = [line for body in uploads.values() for line in body.splitlines()]
    assert len(lines) == capture.stats["captured"] == capture.stats["uploaded"]
    assert capture.stats["lost"] == capture.stats["torn"] == 0


def _app(production: ProductionModel, capture: PredictionCapture) -> FastAPI:
    production.refresh()  # before the first request; the app's poller would do it a moment after start
    app = create_app(_settings(), production, capture, DeclaredExperiment())
    assert app.openapi() == DOCUMENT
    return app


@pytest.fixture
def serving(capture) -> FastAPI:
    """The service with a model. schemathesis starts its lifespan (capture writer, registry poller) at the
    first request, and ends it when the test ends."""
    return _app(FixedRegistry("house-prices", "http://unused"), capture)


@pytest.fixture
def not_serving(capture) -> FastAPI:
    """The service before any model was promoted."""
    return _app(NoRegistry("house-prices", "http://unused"), capture)


def _call(case, app: FastAPI, cases: Counter, test: str, *, model_served: bool = True):
    """Send the case to the app and check the answer. With no model, 503 is the answer of the operations that
    need one: a 503 then passes where the document lists it, and any other 5xx fails."""
    checks = [not_a_server_error, status_code_conformance] if model_served else [status_code_conformance]
    response = case.call_and_validate(app=app, checks=checks)
    cases[(test, case.method, case.path, response.status_code)] += 1
    assert response.status_code < 500 or (response.status_code == 503 and not model_served), response.text
    return response


@schema.include(path="/predict").parametrize()
@fuzz(max_examples=8_200)
def test_predict_answers_every_request_with_a_documented_status(case, serving, capture, cases):
    captured = capture.stats["captured"]
    response = _call(case, serving, cases, "predict")
    if response.status_code != 200:
        assert capture.stats["captured"] == captured
        return
    answer = response.json()
    records = case.body if isinstance(case.body, list) else [case.body]
    assert answer["predictions"] == [record["area"] * 1000.0 for record in records]  # every row, in order
    assert response.headers["x-request-id"] == [answer["request_id"]]  # lowercase names, lists of values
    sent_id = response.request.headers.get("x-request-id")  # the caller's, kept beside the service's own key
    assert answer.get("client_request_id") == sent_id and answer["request_id"] != sent_id
    # answered, so on the spool: one log line per predicted row, before the answer
    assert capture.stats["captured"] - captured == len(records)


@schema.exclude(path="/predict").parametrize()
@fuzz(max_examples=800)
def test_the_other_operations_answer_with_documented_statuses(case, serving, cases):
    response = _call(case, serving, cases, "others")
    if case.path == "/reload" and case.method == "POST":
        assert response.status_code in (401, 422), response.text  # a generated Authorization is never the token


@schema.parametrize()
@fuzz(max_examples=400)
def test_without_a_model_every_operation_answers_with_a_documented_status(case, not_serving, cases):
    response = _call(case, not_serving, cases, "no model", model_served=False)
    if case.path == "/predict" and case.method == "POST":
        detail = response.json()["detail"]
        if response.status_code == 422:  # FastAPI checks the headers before the route asks for the model
            locations = [error["loc"] for error in detail]
            assert locations and all(
                loc in (["header", "x-request-id"], ["header", "x-client-id"]) for loc in locations
            )
        else:
            assert response.status_code == 503 and "No production model is served" in detail


def test_reload_needs_the_token_and_answers_as_documented(serving, cases):
    reload = schema["/reload"]["POST"]
    for authorization, status in ((f"Bearer {TOKEN}", 200), (f"Bearer {TOKEN}x", 401), ("", 401), (None, 401)):
        case = reload.Case(headers={} if authorization is None else {"Authorization": authorization})
        response = _call(case, serving, cases, "reload")
        assert response.status_code == status, response.text
        if status == 200:
            assert response.json() == {"reloaded": True, "model_version": "3", "detail": None}


def test_the_fuzz_tests_sent_at_least_10_000_cases(cases):
    by_test = Counter()
    for (test, *_), count in cases.items():
        by_test[test] += count
    if not {"predict", "others", "no model"} <= set(by_test):
        pytest.skip("counts the cases of this module's fuzz tests, which run before it: not all of them ran")
    print(f"cases sent: {sum(by_test.values())} {dict(by_test)}")
    assert sum(by_test.values()) >= TOTAL_CASES, by_test
