import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import joblib
import numpy as np
import pandas as pd
import pytest

from mlops_sandbox import catalog
from mlops_sandbox.features import preprocess
from mlops_sandbox.ingest import validate
from mlops_sandbox.schema import get_schema
from mlops_sandbox.simulate import batch_times, generate_batch
from mlops_sandbox.train import TabularModel, evaluate, fit
from mlops_sandbox.train.mlflow_model import TabularPyfunc, save_artifacts
from mlops_sandbox.train.mlp import MLPConfig
from mlops_sandbox.train.models import model_input

HOUSE_PRICES = get_schema("house_prices")
MODEL_TYPES = sorted(catalog.MODEL_TYPES)

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def table():
    times = batch_times(datetime(2026, 1, 1, tzinfo=UTC), timedelta(hours=1), 6)
    raw = pd.concat([generate_batch("house_prices", 11, t, 400) for t in times]).astype(str)
    raw["source_key"] = "k"
    return preprocess(validate(raw, HOUSE_PRICES).valid, HOUSE_PRICES)


def test_mlp_beats_the_linear_baseline_on_held_out_data(table):
    train, test = table[table.split == "train"], table[table.split == "test"]
    linear = evaluate(fit(train, HOUSE_PRICES, "linear").predict, test, HOUSE_PRICES)
    mlp = evaluate(fit(train, HOUSE_PRICES, "mlp", MLPConfig(epochs=60)).predict, test, HOUSE_PRICES)
    assert mlp["rmse"] < linear["rmse"]
    assert mlp["r2"] > 0.75 and linear["r2"] > 0.5


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_training_is_reproducible(table, model_type):
    train = table[table.split == "train"]
    a = fit(train, HOUSE_PRICES, model_type, epochs=5, seed=3).predict(train.head(20))
    b = fit(train, HOUSE_PRICES, model_type, epochs=5, seed=3).predict(train.head(20))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_model_takes_raw_records_and_ignores_unknown_categories(table, model_type):
    model = fit(table[table.split == "train"], HOUSE_PRICES, model_type, epochs=2)
    rows = table.head(3).copy()
    rows.loc[rows.index[0], "furnishingstatus"] = "never-seen"
    assert np.isfinite(model.predict(rows)).all()


def test_bad_arguments_are_refused(table):
    with pytest.raises(ValueError, match=r"unknown model type 'xgboost'; known: \[.*'linear', 'mlp'"):
        fit(table, HOUSE_PRICES, "xgboost")
    with pytest.raises(ValueError, match="too few"):
        fit(table.head(5), HOUSE_PRICES, "linear")
    with pytest.raises(ValueError, match="missing feature"):
        fit(table[table.split == "train"], HOUSE_PRICES, "linear").predict(table.drop(columns=["area"]))


def test_options_go_to_the_model_types_that_have_them(table):
    train = table[table.split == "train"]
    assert fit(train, HOUSE_PRICES, "mlp", MLPConfig(epochs=2), seed=4).params() == {
        "hidden": "64x32",
        "epochs": 2,
        "learning_rate": 3e-3,
        "batch_size": 256,
        "weight_decay": 1e-4,
        "seed": 4,
    }
    # one config for whichever type (as the pipeline passes it): a linear fit has no options, trees no epochs
    assert fit(train, HOUSE_PRICES, "linear", MLPConfig(epochs=2), epochs=2).params() == {}
    trees = fit(train, HOUSE_PRICES, "hist_gbt", MLPConfig(epochs=2), epochs=2, seed=1).params()
    assert trees["max_iter"] == 200 and trees["seed"] == 1 and "epochs" not in trees


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_record_path_predicts_exactly_what_the_frame_path_predicts(table, model_type):
    model = fit(table[table.split == "train"], HOUSE_PRICES, model_type, epochs=3)
    rows = table[table.split == "test"].head(50).copy()
    rows.loc[rows.index[0], "furnishingstatus"] = "never-seen"  # unknown category: all-zero one-hot in both
    records = rows[HOUSE_PRICES.feature_names].to_dict(orient="records")
    np.testing.assert_array_equal(model.predict_records(records), model.predict(rows))


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_the_pyfunc_restores_every_model_type_from_its_artifacts(table, model_type, tmp_path):
    model = fit(table[table.split == "train"], HOUSE_PRICES, model_type, epochs=3)
    pyfunc = TabularPyfunc()
    pyfunc.load_context(SimpleNamespace(artifacts=save_artifacts(model, tmp_path)))
    rows = table[table.split == "test"]
    np.testing.assert_array_equal(pyfunc.predict(None, rows), model.predict(rows))


def test_versions_registered_before_model_types_were_modules_still_load(table, tmp_path):
    """They pickled `TabularModel` with `regressor` (linear) or `net` (MLP: None, its weights in the logged
    `state_dict`) and `mlp_config`, and named `mlops_sandbox.train.models.MLPConfig`."""
    import torch

    from mlops_sandbox.train import mlp, models

    assert (models.MLPConfig, models.build_mlp) == (mlp.MLPConfig, mlp.build_mlp)
    train, rows = table[table.split == "train"], table[table.split == "test"]
    for model_type in ("linear", "mlp"):
        model = fit(train, HOUSE_PRICES, model_type, epochs=3)
        state = {k: v for k, v in vars(model).items() if k not in {"fitted", "config"}}
        state |= {"regressor": None, "net": None, "mlp_config": model.config or MLPConfig()}
        artifacts = {"model": str(tmp_path / f"{model_type}.joblib")}
        if model_type == "mlp":
            artifacts["state_dict"] = str(tmp_path / "model.pth")
            # a .pth of torch tensors, and no .npz, as the MLP was logged then
            state_dict = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in model.fitted.state_dict().items()}
            torch.save(state_dict, artifacts["state_dict"])
        else:
            state["regressor"] = model.fitted
        legacy = object.__new__(TabularModel)
        legacy.__dict__.update(state)
        joblib.dump(legacy, artifacts["model"])
        pyfunc = TabularPyfunc()
        pyfunc.load_context(SimpleNamespace(artifacts=artifacts))
        np.testing.assert_array_equal(pyfunc.predict(None, rows), model.predict(rows))
        assert not {"regressor", "net", "mlp_config"} & set(vars(pyfunc.model))


LOAD_WITHOUT_THE_LIBRARY = """
import importlib.util, json, sys
src = sys.argv[1]
sys.path = [p for p in sys.path if p != src]  # the editable install's path entry: the library is gone
assert importlib.util.find_spec("mlops_sandbox") is None
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[2])
rows = pd.read_json(sys.argv[3], orient="split")
rows = rows.astype({c.name: c.type.to_pandas() for c in model.metadata.get_input_schema().inputs})
module = sys.modules["mlops_sandbox.train.models"]
print(json.dumps({"predictions": model.predict(rows).tolist(), "library": module.__file__}))
"""
LOAD_FIRST_WHERE_THE_LIBRARY_IS_INSTALLED = """
import json, sys
import mlflow
assert "mlops_sandbox" not in sys.modules
mlflow.pyfunc.load_model(sys.argv[1])  # before anything imports the library, as a notebook may
import mlops_sandbox.serve
library = sys.modules["mlops_sandbox.train.models"].__file__
print(json.dumps({"library": library, "serve": mlops_sandbox.serve.__file__}))
"""

LOAD_WITHOUT_TORCH = """
import importlib.abc, json, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError("torch is not installed here")

sys.meta_path.insert(0, NoTorch())  # any import of torch now fails
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
rows = pd.read_json(sys.argv[2], orient="split")
rows = rows.astype({c.name: c.type.to_pandas() for c in model.metadata.get_input_schema().inputs})
print(json.dumps({"predictions": model.predict(rows).tolist(), "torch": "torch" in sys.modules}))
"""


@pytest.fixture
def local_mlflow(tmp_path):
    """MLflow on a local store under tmp_path, for one test; the tracking URI is set back after it."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = mlflow.create_experiment("self-contained", artifact_location=(tmp_path / "artifacts").as_uri())
    try:
        yield experiment
    finally:
        mlflow.set_tracking_uri(previous)


def _python(script: str, *args: str, home: Path) -> dict:
    import json
    import subprocess
    import sys

    import mlflow

    done = subprocess.run(
        [sys.executable, "-I", "-c", script, *args],
        env={"PATH": os.environ["PATH"], "HOME": str(home), "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_a_logged_model_loads_where_the_library_is_not_installed(table, model_type, tmp_path, local_mlflow):
    """The pickle names this library's classes; the model carries a copy of them (the `library` artifact) and
    declares what it needs, without a local version label."""
    import mlflow

    from mlops_sandbox.train.mlflow_model import log_model

    model = fit(table[table.split == "train"], HOUSE_PRICES, model_type, epochs=3)
    rows = table[table.split == "test"].head(20)
    with mlflow.start_run(experiment_id=local_mlflow):
        info = log_model(model, rows.head(5), tmp_dir=tmp_path)
    # the library's code, as logged: before anything imports from it
    logged = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "model")))
    library = logged / "artifacts" / "library"
    assert (library / "ABOUT.txt").is_file() and (library / "mlops_sandbox" / "train" / "models.py").is_file()
    assert not list(library.rglob("__pycache__")) and not (logged / "code").exists()
    pins = Path(mlflow.pyfunc.get_model_dependencies(info.model_uri)).read_text().split()
    assert "mlflow==" + mlflow.__version__ in pins and not [p for p in pins if "+" in p]
    if model_type == "mlp":
        assert [p for p in pins if p.startswith("torch==")]

    source = str(Path(catalog.__file__).resolve().parents[1])
    (tmp_path / "rows.json").write_text(rows.to_json(orient="split"))
    loaded = _python(LOAD_WITHOUT_THE_LIBRARY, source, info.model_uri, str(tmp_path / "rows.json"), home=tmp_path)
    assert "/library/mlops_sandbox/" in loaded["library"] and not loaded["library"].startswith(source)
    np.testing.assert_allclose(loaded["predictions"], model.predict(rows), rtol=1e-6)


def test_where_the_library_is_installed_a_model_loaded_first_does_not_replace_it(table, tmp_path, local_mlflow):
    """A notebook in the project's image that loads a model before importing the library still imports the
    installed library, not the model's copy (which may be older)."""
    import mlflow

    from mlops_sandbox.train.mlflow_model import log_model

    model = fit(table[table.split == "train"], HOUSE_PRICES, "linear")
    with mlflow.start_run(experiment_id=local_mlflow):
        info = log_model(model, table.head(5), tmp_dir=tmp_path)
    installed = str(Path(catalog.__file__).resolve().parents[1])
    loaded = _python(LOAD_FIRST_WHERE_THE_LIBRARY_IS_INSTALLED, info.model_uri, home=tmp_path)
    assert loaded["library"].startswith(installed) and loaded["serve"].startswith(installed)


def test_the_prediction_service_takes_a_logged_models_numpy_path(table, tmp_path, local_mlflow):
    """The pyfunc class is pickled by value (a class of its own once loaded), and the service still finds the
    `TabularModel` inside and predicts with `predict_columns`, equal to the pyfunc's answers."""
    import mlflow

    from mlops_sandbox.serve.model import _unwrap
    from mlops_sandbox.train.mlflow_model import log_model

    model = fit(table[table.split == "train"], HOUSE_PRICES, "linear")
    rows = table[table.split == "test"].head(20)
    with mlflow.start_run(experiment_id=local_mlflow):
        info = log_model(model, rows.head(5), tmp_dir=tmp_path)
    pyfunc = mlflow.pyfunc.load_model(info.model_uri)
    inner = _unwrap(pyfunc)
    assert isinstance(inner, TabularModel)
    columns = {c: rows[c].tolist() for c in HOUSE_PRICES.feature_names}
    np.testing.assert_allclose(inner.predict_columns(columns), pyfunc.predict(model_input(rows, HOUSE_PRICES)))


def test_a_logged_mlp_predicts_without_torch_and_its_pth_is_the_same_network(table, tmp_path, local_mlflow):
    """Torch trains the MLP; the logged model predicts with NumPy (its `mlp/weights.npz`), in a process where
    torch cannot be imported, with the predictions of the fitted model. Its `pytorch/model.pth` loads into
    `build_mlp`'s network, which computes the same outputs in torch."""
    import mlflow
    import torch

    from mlops_sandbox.train.mlflow_model import log_model
    from mlops_sandbox.train.mlp import build_mlp

    model = fit(table[table.split == "train"], HOUSE_PRICES, "mlp", epochs=3)
    rows = table[table.split == "test"].head(50)
    with mlflow.start_run(experiment_id=local_mlflow) as run:
        info = log_model(model, rows.head(5), tmp_dir=tmp_path)
    (tmp_path / "rows.json").write_text(rows.to_json(orient="split"))
    loaded = _python(LOAD_WITHOUT_TORCH, info.model_uri, str(tmp_path / "rows.json"), home=tmp_path)
    np.testing.assert_allclose(loaded["predictions"], model.predict(rows), rtol=1e-6)
    assert loaded["torch"] is False

    pth = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="pytorch/model.pth")
    state = torch.load(pth, weights_only=True)
    net = build_mlp(state["0.weight"].shape[1], model.config.hidden)
    net.load_state_dict(state)
    x = model.preprocessor.transform(model_input(rows, HOUSE_PRICES)).astype(np.float32)
    with torch.inference_mode():
        in_torch = net(torch.from_numpy(x)).numpy().ravel()
    np.testing.assert_allclose(model.kind.predict(model.fitted, x), in_torch, rtol=1e-5, atol=1e-6)
