"""Training (seed step 18): a model type fitted behind the preprocessing, and how it travels in MLflow.

Every model is a `TabularModel`: a fitted scikit-learn preprocessor (derived features, scaling, one-hot
encoding) in front of its model type's regressor. A model type is one module here exposing `MODEL_TYPE` (a
`ModelType`: fit, predict, save and load), registered in `mlops_sandbox.catalog.MODEL_TYPES`
(`mlops-sandbox catalog` lists them).

The logged MLflow model wraps the whole thing, so the prediction service sends raw records and gets back
predictions made exactly as in evaluation.
"""

from mlops_sandbox.train.models import ModelType, TabularModel, evaluate, fit

__all__ = ["ModelType", "TabularModel", "evaluate", "fit"]
