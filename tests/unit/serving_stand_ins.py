"""Stand-ins for the prediction service's tests (test_serve_app, test_predictor_fuzz): a model that is not ours,
registries with and without a production version, an in-memory bucket."""

import pandas as pd

from mlops_sandbox.schema import get_schema
from mlops_sandbox.serve.experiment import Experiment
from mlops_sandbox.serve.model import ProductionModel, ServedModel

HOUSE_PRICES = get_schema("house_prices")


class PricePerArea:
    """Stands in for a pyfunc that is not ours: 1,000 per square foot, for any record the schema takes; checks
    that it gets the signature's columns and dtypes."""

    def unwrap_python_model(self):
        raise TypeError("not a PythonModel")

    def predict(self, frame: pd.DataFrame):
        assert list(frame.columns) == HOUSE_PRICES.feature_names
        assert all(frame[column].dtype == "float64" for column in HOUSE_PRICES.numeric_features)
        return frame["area"] * 1000.0


class FixedRegistry(ProductionModel):
    """A registry whose production version is 3, a PricePerArea."""

    def refresh(self) -> bool:
        self._current = ServedModel(
            "house-prices", "3", "production", "run-1", {"dvc_data_version": "abc"}, PricePerArea(), HOUSE_PRICES
        )
        return True


class NoRegistry(ProductionModel):
    """A registry that has no production model and says so."""

    def refresh(self) -> bool:
        self.last_error = "no version of model 'house-prices' has the alias 'production' yet"
        return False


class Uploads(dict):
    """An in-memory bucket: key -> body."""

    def __call__(self, key: str, body: bytes) -> None:
        self[key] = body


class Candidate(ProductionModel):
    """The `staging` version: 4, a PricePerArea times `factor` (None: a version that cannot be loaded)."""

    def __init__(self, factor: float | None = 1.1):
        super().__init__("house-prices", "http://unused", "staging", HOUSE_PRICES)
        self.factor = factor

    def refresh(self) -> bool:
        if self.factor is None:
            self._withdraw("'staging' points to version 4, which cannot be loaded: no such artifact")
            return False
        self._current = ServedModel("house-prices", "4", "staging", "run-2", {}, Scaled(self.factor), HOUSE_PRICES)
        return True


class Scaled(PricePerArea):
    def __init__(self, factor: float):
        self.factor = factor

    def predict(self, frame: pd.DataFrame):
        if self.factor < 0:
            raise RuntimeError("the candidate broke")
        return super().predict(frame) * self.factor


class DeclaredExperiment(Experiment):
    """The experiment that the registered model's tags `tags` declare (none by default), with `candidate` as
    the `staging` version."""

    def __init__(self, tags: dict[str, str] | None = None, candidate: ProductionModel | None = None):
        super().__init__("house-prices", "http://unused", HOUSE_PRICES)
        self.tags = tags or {}
        self.holder = candidate or Candidate()

    def declared_tags(self) -> dict[str, str]:
        return self.tags
