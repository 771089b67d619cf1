"""Logging a `TabularModel` to MLflow (seed steps 2 and 19): a pyfunc model with its signature and input example,
preprocessing included, and the files its model type saves beside it (the MLP's `.pth`)."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path

import joblib
import pandas as pd

from mlops_sandbox.train.models import TabularModel, model_input

try:
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover - mlflow is in the `ml` extra
    PythonModel = object  # type: ignore[assignment,misc]


class TabularPyfunc(PythonModel):
    """The MLflow pyfunc face of a `TabularModel`: raw records in, predictions out.

    Artifacts: `model`, the pickled `TabularModel`, with what its model type's `save` put in place of the fitted
    model; and the files that `save` wrote (the MLP's `state_dict`). The model type's `load` restores it.
    """

    def load_context(self, context) -> None:
        model: TabularModel = joblib.load(context.artifacts["model"])
        model.fitted = model.kind.load(model.fitted, model.config, context.artifacts)
        self.model = model

    def predict(self, context, model_input: pd.DataFrame, params=None):
        return self.model.predict(model_input)


def pip_requirements(model: TabularModel) -> list[str]:
    names = ("mlflow", "scikit-learn", *model.kind.requirements, "pandas", "numpy")
    return [f"{name}=={version(name)}" for name in names]


def save_artifacts(model: TabularModel, folder: Path) -> dict[str, str]:
    """Write `model` for the pyfunc into the empty `folder`: its model type's files under `folder/files`, then the
    pickle. Returns the pyfunc's artifacts (name -> path)."""
    saved, files = model.kind.save(model.fitted, folder / "files")
    joblib.dump(replace(model, fitted=saved), folder / "model.joblib")
    return {"model": str(folder / "model.joblib")} | {name: str(path) for name, path in files.items()}


def log_model(model: TabularModel, example: pd.DataFrame, tmp_dir: Path | None = None):
    """Log `model` in the active MLflow run as `model`, and its model type's files (the MLP's
    `pytorch/model.pth`) as run artifacts too.

    Returns the `ModelInfo`. Call inside `mlflow.start_run()`.
    """
    import mlflow
    from mlflow.models import infer_signature

    tmp = Path(tempfile.mkdtemp(prefix="model-", dir=tmp_dir))
    artifacts = save_artifacts(model, tmp)
    if (tmp / "files").is_dir():  # the model type's own files, as run artifacts too
        mlflow.log_artifacts(str(tmp / "files"))

    example = model_input(example, model.schema)
    signature = infer_signature(example, model.predict(example))
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=TabularPyfunc(),
        artifacts=artifacts,
        signature=signature,
        input_example=example,
        pip_requirements=pip_requirements(model),
    )
