"""Stand-ins for the prediction service's tests (test_serve_app, test_predictor_fuzz): a model that is not ours,
registries with and without a production version, an in-memory bucket."""

import pandas as pd

from mlops_sandbox.schema import get_schema
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
