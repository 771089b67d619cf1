"""Logging a `TabularModel` to MLflow (seed steps 2 and 19): a pyfunc model with its signature and input example,
preprocessing included, and the files its model type saves beside it (the MLP's `.pth` and `.npz`).

The logged model is self-contained. Its `TabularModel` pickle names this library's classes (`TabularModel`, the
model types, the preprocessing's feature functions), so a copy of the library's Python files travels with it,
as the `library` artifact, and its requirements are the distributions it needs to load. The pyfunc class is
pickled by value, so MLflow unpickles it without the library; its `load_context` puts the model's copy on
`sys.path` only where the library cannot be imported, and last. So a client with only `mlflow` and the model's
own requirements (`mlflow.pyfunc.get_model_dependencies`) loads it (a user's notebook, `mlflow models serve
--env-manager virtualenv`, a cluster's MLflow runtime), and where the library is installed, as in the
project's containers, the installed library is the one used, whatever was imported first. (Without the
library, a process that loads models logged by several versions of it uses the first one's copy.)
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path

import joblib
import pandas as pd

from mlops_sandbox import __version__
from mlops_sandbox.train.models import TabularModel, model_input

try:
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover - mlflow is in the `ml` extra
    PythonModel = object  # type: ignore[assignment,misc]


class TabularPyfunc(PythonModel):
    """The MLflow pyfunc face of a `TabularModel`: raw records in, predictions out.

    Artifacts: `model`, the pickled `TabularModel`, with what its model type's `save` put in place of the fitted
    model; and the files that `save` wrote (the MLP's `state_dict` and `weights`). The model type's `load`
    restores it.
    """

    def load_context(self, context) -> None:
        import importlib.util

        library = context.artifacts.get("library")
        if library is not None and importlib.util.find_spec("mlops_sandbox") is None:
            sys.path.append(library)  # not installed here: the copy this model carries, after everything else
        model: TabularModel = joblib.load(context.artifacts["model"])
        model.fitted = model.kind.load(model.fitted, model.config, context.artifacts)
        self.model = model

    def predict(self, context, model_input: pd.DataFrame, params=None):
        return self.model.predict(model_input)


def pip_requirements(model: TabularModel) -> list[str]:
    """The pinned distributions the model loads with, without a local version label (`torch==2.13.0`, not
    `2.13.0+cpu`), so that a CPU or a CUDA build satisfies it, from whichever index the user has."""
    names = ("mlflow", "scikit-learn", *model.kind.requirements, "pandas", "numpy")
    return [f"{name}=={version(name).split('+')[0]}" for name in names]


def library_code(folder: Path) -> Path:
    """The model's `library` artifact, written into the empty `folder`: a copy of this library's Python files
    (no caches, no data) under `folder/mlops_sandbox`, and a note saying what they are.

    The note also gives the folder a file of its own: some S3 servers (the offline stand-in for MinIO that this
    project's CI runs) list a folder only when it holds an object directly, and a client downloading the model
    would skip a folder holding only `mlops_sandbox/` there."""
    package = Path(__file__).resolve().parents[1]

    def not_code(directory: str, names: list[str]) -> list[str]:
        return [n for n in names if n == "__pycache__" or not (n.endswith(".py") or Path(directory, n).is_dir())]

    shutil.copytree(package, folder / package.name, ignore=not_code)
    (folder / "ABOUT.txt").write_text(
        f"{package.name}/: the Python files of mlops-sandbox {__version__} that this model's pickle refers to\n"
        "(TabularModel, the model types, the feature functions). The model's pyfunc puts this folder last on\n"
        "sys.path when it loads, and only where the library cannot be imported.\n"
    )
    return folder


def save_artifacts(model: TabularModel, folder: Path) -> dict[str, str]:
    """Write `model` for the pyfunc into the empty `folder`: its model type's files under `folder/files`, then the
    pickle. Returns the pyfunc's artifacts (name -> path)."""
    saved, files = model.kind.save(model.fitted, folder / "files")
    joblib.dump(replace(model, fitted=saved), folder / "model.joblib")
    return {"model": str(folder / "model.joblib")} | {name: str(path) for name, path in files.items()}


def log_model(model: TabularModel, example: pd.DataFrame, tmp_dir: Path | None = None):
    """Log `model` in the active MLflow run as `model`, and its model type's files (the MLP's
    `pytorch/model.pth` and `mlp/weights.npz`) as run artifacts too.

    Returns the `ModelInfo`. Call inside `mlflow.start_run()`.
    """
    import mlflow
    from mlflow.models import infer_signature

    tmp = Path(tempfile.mkdtemp(prefix="model-", dir=tmp_dir))
    artifacts = save_artifacts(model, tmp) | {"library": str(library_code(tmp / "library"))}
    if (tmp / "files").is_dir():  # the model type's own files, as run artifacts too
        mlflow.log_artifacts(str(tmp / "files"))

    example = model_input(example, model.schema)
    signature = infer_signature(example, model.predict(example))
    import cloudpickle

    this_module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(this_module)  # the pyfunc class itself, so it unpickles without us
    try:
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=TabularPyfunc(),
            artifacts=artifacts,
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(model),
        )
    finally:
        cloudpickle.unregister_pickle_by_value(this_module)
