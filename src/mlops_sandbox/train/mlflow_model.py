"""Logging a `TabularModel` to MLflow (seed steps 2 and 19): params, metrics, the `.pth`, and a pyfunc model
with its signature and input example, preprocessing included."""

from __future__ import annotations

import copy
import tempfile
from importlib.metadata import version
from pathlib import Path

import joblib
import pandas as pd

from mlops_sandbox.train.models import TabularModel, build_mlp, model_input

try:
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover - mlflow is in the `ml` extra
    PythonModel = object  # type: ignore[assignment,misc]


class TabularPyfunc(PythonModel):
    """The MLflow pyfunc face of a `TabularModel`: raw records in, predictions out."""

    def load_context(self, context) -> None:
        model: TabularModel = joblib.load(context.artifacts["model"])
        if model.model_type == "mlp":
            import torch

            net = build_mlp(model.n_inputs, model.mlp_config.hidden)
            net.load_state_dict(torch.load(context.artifacts["state_dict"], weights_only=True))
            net.eval()
            model.net = net
        self.model = model

    def predict(self, context, model_input: pd.DataFrame, params=None):
        return self.model.predict(model_input)


def pip_requirements() -> list[str]:
    return [f"{name}=={version(name)}" for name in ("mlflow", "scikit-learn", "torch", "pandas", "numpy")]


def log_model(model: TabularModel, example: pd.DataFrame, tmp_dir: Path | None = None):
    """Log `model` in the active MLflow run as `model`, and its `.pth` state dict as a run artifact.

    Returns the `ModelInfo`. Call inside `mlflow.start_run()`.
    """
    import mlflow
    from mlflow.models import infer_signature

    tmp = Path(tmp_dir or tempfile.mkdtemp(prefix="model-"))
    artifacts: dict[str, str] = {}
    to_pickle = copy.copy(model)
    if model.model_type == "mlp":
        import torch

        pth = tmp / "model.pth"
        torch.save(model.net.state_dict(), pth)
        mlflow.log_artifact(str(pth), artifact_path="pytorch")
        artifacts["state_dict"] = str(pth)
        to_pickle.net = None  # the weights travel as the .pth, not inside the pickle
    joblib.dump(to_pickle, tmp / "model.joblib")
    artifacts["model"] = str(tmp / "model.joblib")

    example = model_input(example, model.schema)
    signature = infer_signature(example, model.predict(example))
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=TabularPyfunc(),
        artifacts=artifacts,
        signature=signature,
        input_example=example,
        pip_requirements=pip_requirements(),
    )
