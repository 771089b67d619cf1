"""Training (seed step 18): a scikit-learn linear baseline or a PyTorch MLP, with preprocessing inside.

Both model types are a `TabularModel`: a fitted scikit-learn preprocessor (derived features, scaling,
one-hot encoding) in front of a regressor. The logged MLflow model wraps the whole thing, so the
prediction service sends raw records and gets back predictions made exactly as in evaluation.
"""

from mlops_sandbox.train.models import MODEL_TYPES, TabularModel, evaluate, fit

__all__ = ["MODEL_TYPES", "TabularModel", "evaluate", "fit"]
