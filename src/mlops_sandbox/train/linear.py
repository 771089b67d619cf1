"""The `linear` model type: scikit-learn ordinary least squares on the raw target, the classic baseline."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.linear_model import LinearRegression

from mlops_sandbox.train.models import ModelType


class Linear(ModelType):
    name = "linear"
    description = "scikit-learn linear regression on the raw target: the classic baseline"

    def fit(self, x: np.ndarray, y: np.ndarray, config: Any) -> LinearRegression:
        return LinearRegression().fit(x, y)


MODEL_TYPE = Linear()
