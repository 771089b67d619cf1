import pandas as pd
import pytest
from fastapi.testclient import TestClient

from mlops_sandbox.config import Settings
from mlops_sandbox.serve.app import create_app
from mlops_sandbox.serve.model import ProductionModel, ServedModel

pytestmark = pytest.mark.unit


class NoRegistry(ProductionModel):
    """A registry that has no production model and says so."""

    def refresh(self) -> bool:
        self.last_error = "no version of model 'house-prices' has the alias 'production' yet"
        return False


class DoubleArea:
    def predict(self, frame: pd.DataFrame):
        return frame["area"] * 2.0


class FixedRegistry(ProductionModel):
    def refresh(self) -> bool:
        self._current = ServedModel("house-prices", "3", "production", "run-1", {}, DoubleArea())
        return True


def _client(production: ProductionModel) -> TestClient:
    settings = Settings(_env_file=None, model_poll_seconds=3600)
    return TestClient(create_app(settings, production))


def test_without_a_production_model_predict_answers_503_and_health_says_why():
    with _client(NoRegistry("house-prices", "http://unused")) as client:
        health = client.get("/health").json()
        assert health["model_loaded"] is False
        assert "production" in health["detail"]
        resp = client.post("/predict", json={"records": [{"area": 1.0}]})
        assert resp.status_code == 503
        assert "No production model yet" in resp.json()["detail"]


def test_serves_the_loaded_version():
    with _client(FixedRegistry("house-prices", "http://unused")) as client:
        resp = client.post("/predict", json={"records": [{"area": 10.0}, {"area": 1.5}]})
        assert resp.status_code == 200
        body = resp.json()
        assert body["predictions"] == [20.0, 3.0]
        assert body["model_version"] == "3"
        assert body["request_id"]
        assert client.get("/health").json()["model_version"] == "3"


def test_empty_batch_is_a_422():
    with _client(FixedRegistry("house-prices", "http://unused")) as client:
        assert client.post("/predict", json={"records": []}).status_code == 422


def test_openapi_documents_predict():
    with _client(NoRegistry("house-prices", "http://unused")) as client:
        spec = client.get("/openapi.json").json()
        assert "/predict" in spec["paths"] and "/health" in spec["paths"]
