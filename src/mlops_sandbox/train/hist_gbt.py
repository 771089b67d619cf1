"""The `hist_gbt` model type: scikit-learn's histogram gradient-boosted trees, what practitioners reach for on
tabular data. Fitted on the log target (for positive targets) with early stopping off and a fixed seed, so the
same rows always give the same trees; the fitted estimator is pickled with the model (no skops)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from threadpoolctl import ThreadpoolController

from mlops_sandbox.train.models import ModelType


@dataclass
class HistGBTConfig:
    max_iter: int = 200
    learning_rate: float = 0.05
    max_leaf_nodes: int = 15
    min_samples_leaf: int = 20
    l2_regularization: float = 1.0
    seed: int = 0


@cache
def _openmp() -> ThreadpoolController:
    return ThreadpoolController()


class HistGBT(ModelType):
    """Fits and predicts on one OpenMP thread: on this project's small batches the threads gain little, and on
    a busy 2-core machine their spin-waiting made one-row predictions about 20 times slower."""

    name = "hist_gbt"
    description = "scikit-learn histogram gradient-boosted trees on the log target"
    target_log = True
    config_type = HistGBTConfig

    def fit(self, x: np.ndarray, y: np.ndarray, config: HistGBTConfig) -> HistGradientBoostingRegressor:
        regressor = HistGradientBoostingRegressor(
            max_iter=config.max_iter,
            learning_rate=config.learning_rate,
            max_leaf_nodes=config.max_leaf_nodes,
            min_samples_leaf=config.min_samples_leaf,
            l2_regularization=config.l2_regularization,
            early_stopping=False,
            random_state=config.seed,
        )
        with _openmp().limit(limits=1, user_api="openmp"):
            return regressor.fit(x, y)

    def predict(self, fitted: HistGradientBoostingRegressor, x: np.ndarray) -> np.ndarray:
        with _openmp().limit(limits=1, user_api="openmp"):
            return fitted.predict(x)


MODEL_TYPE = HistGBT()
