"""What every model type shares: the `ModelType` interface, the preprocessing in front of it, the fitted
`TabularModel`, `fit` and `evaluate`. No MLflow here (see `mlops_sandbox.train.mlflow_model`), and no model type
either: each is one module beside this one (`linear`, `mlp`, `hist_gbt`), registered in
`mlops_sandbox.catalog.MODEL_TYPES`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from mlops_sandbox import catalog
from mlops_sandbox.features import derived, engineer, engineered_names
from mlops_sandbox.schema import Schema


class ModelType:
    """A model type: how a regressor is fitted on the preprocessed matrix, how it predicts, and how it travels
    in the logged MLflow model.

    A model type module exposes `MODEL_TYPE`, an instance of a subclass that sets `name` and `description` and
    implements `fit`. The defaults suit a picklable scikit-learn estimator; override `save`/`load` for a model
    that travels in its own files (the MLP's `.pth` and `.npz`).

    - `fit(x, y, config)` gets float32 features (scaled numbers, one-hot categories) and the standardised
      target (of log(target) when `target_log` and every target is positive) and returns the fitted model;
    - `predict(fitted, x)` returns the standardised target for each row;
    - `config_type` is the dataclass of the type's options (None: it has none); `configure` builds one;
    - `params(config)` are the options as MLflow run params;
    - `save(fitted, folder)` returns what is pickled in the fitted model's place, and the files it wrote under
      `folder` (artifact name -> path), which are logged beside the model; `load(saved, config, artifacts)` gets
      the fitted model back from them (`artifacts`: artifact name -> local path).
    """

    name: str
    description: str
    target_log: bool = False  # fit on log(target) when every target is positive
    config_type: type | None = None
    requirements: tuple[str, ...] = ()  # distributions the logged model needs beyond scikit-learn
    # modules a fitted model imports to predict: the prediction service imports them before it forks its workers
    # when production or staging is of this type, so that the workers share them instead of each importing them
    serving_modules: tuple[str, ...] = ()

    def configure(self, config: Any = None, *, epochs: int | None = None, seed: int | None = None) -> Any:
        """The options to fit with: `config` if it is this type's, else the defaults, with `epochs` and `seed`
        where the type has them (a linear fit has neither: it is closed-form)."""
        if self.config_type is None:
            return None
        chosen = config if isinstance(config, self.config_type) else self.config_type()
        given = {"epochs": epochs, "seed": seed}
        return replace(chosen, **{f.name: given[f.name] for f in fields(chosen) if given.get(f.name) is not None})

    def fit(self, x: np.ndarray, y: np.ndarray, config: Any) -> Any:
        raise NotImplementedError

    def predict(self, fitted: Any, x: np.ndarray) -> np.ndarray:
        return fitted.predict(x)

    def params(self, config: Any) -> dict[str, Any]:
        if config is None:
            return {}
        return {k: "x".join(map(str, v)) if isinstance(v, tuple) else v for k, v in asdict(config).items()}

    def save(self, fitted: Any, folder: Path) -> tuple[Any, dict[str, Path]]:
        return fitted, {}

    def load(self, saved: Any, config: Any, artifacts: Mapping[str, str]) -> Any:
        return saved


def build_preprocessor(schema: Schema) -> Pipeline:
    numeric = [*schema.numeric_features, *engineered_names(schema.name)]
    return Pipeline(
        [
            ("engineer", FunctionTransformer(engineer, kw_args={"scenario": schema.name})),
            (
                "encode",
                ColumnTransformer(
                    [
                        ("numeric", StandardScaler(), numeric),
                        (
                            "categorical",
                            OneHotEncoder(
                                categories=[list(schema.column(c).categories) for c in schema.categorical_features],
                                handle_unknown="ignore",
                                sparse_output=False,
                            ),
                            schema.categorical_features,
                        ),
                    ]
                ),
            ),
        ]
    )


def model_input(frame: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """The model's input columns with the dtypes of its signature (float for numbers, str for categories)."""
    missing = [c for c in schema.feature_names if c not in frame.columns]
    if missing:
        raise ValueError(f"missing feature columns: {missing}")
    out = frame[schema.feature_names].copy()
    for column in schema.numeric_features:
        out[column] = out[column].astype("float64")
    for column in schema.categorical_features:
        out[column] = out[column].astype(str)
    return out


@dataclass
class TabularModel:
    """Preprocessor + the model type's fitted model, with the target transform it was trained on.

    Logged MLflow models pickle this class by its path (`mlops_sandbox.train.models.TabularModel`): keep it here.
    """

    schema: Schema
    model_type: str
    preprocessor: Pipeline
    target_log: bool  # trained on log(target)
    target_mean: float
    target_std: float
    fitted: Any = None  # what the model type's `fit` returned
    config: Any = None  # the model type's options it was fitted with (None: it has none)
    n_inputs: int = 0

    @property
    def kind(self) -> ModelType:
        """The registered model type (`mlops_sandbox.catalog.MODEL_TYPES`) this model is."""
        return catalog.model_type(self.model_type)

    def params(self) -> dict[str, Any]:
        """The model type's options, as MLflow run params."""
        return self.kind.params(self.config)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Predictions for a frame of raw records (the path training, evaluation and the pyfunc take)."""
        return self._regress(self.preprocessor.transform(model_input(frame, self.schema)).astype(np.float32))

    def predict_records(self, records: list[dict]) -> np.ndarray:
        """The same predictions for validated records, as dicts (see `predict_columns`)."""
        return self.predict_columns({c: [r[c] for r in records] for c in self.schema.feature_names})

    def predict_columns(self, columns: Mapping[str, Sequence]) -> np.ndarray:
        """The same predictions for validated columns (feature name -> its values, one per row), without pandas
        or scikit-learn on the way: the fitted scaling and encoding applied with numpy. The prediction
        service's hot path, for one row and for a batch."""
        return self._regress(self._transform_columns(columns))

    def _transform_columns(self, columns: Mapping[str, Sequence]) -> np.ndarray:
        numeric, mean, scale, one_hot = self._encoding()
        values = {c: np.asarray(columns[c], dtype=float) for c in self.schema.numeric_features}
        values |= derived(values, self.schema.name)
        n, width = len(values[numeric[0]]), len(numeric) + sum(len(index) for _, index in one_hot)
        x = np.zeros((n, width + 1))  # the last column takes the categories the encoder did not know, then goes
        x[:, : len(numeric)] = (np.column_stack([values[c] for c in numeric]) - mean) / scale
        if one_hot:
            hot = [[index.get(label, width) for label in columns[column]] for column, index in one_hot]
            x[np.arange(n), np.array(hot)] = 1.0
        return x[:, :width].astype(np.float32)

    def _encoding(self) -> tuple[list[str], np.ndarray, np.ndarray, list[tuple[str, dict[str, int]]]]:
        """The fitted scaling and one-hot encoding, as plain lookups: the numeric columns with their means and
        scales, then each category column with its categories' places in the encoded matrix. Made once."""
        if getattr(self, "_encoding_cache", None) is None:
            encode = self.preprocessor.named_steps["encode"]
            (_, scaler, numeric), (_, onehot, categorical) = encode.transformers_[:2]
            one_hot, offset = [], len(numeric)
            for column, categories in zip(categorical, onehot.categories_, strict=True):
                one_hot.append((column, {str(c): offset + i for i, c in enumerate(categories)}))
                offset += len(categories)
            self._encoding_cache = (list(numeric), scaler.mean_, scaler.scale_, one_hot)
        return self._encoding_cache

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_encoding_cache"}  # made again where it is used

    def _regress(self, x: np.ndarray) -> np.ndarray:
        raw = self.kind.predict(self.fitted, x) * self.target_std + self.target_mean
        return np.exp(raw) if self.target_log else raw

    def __setstate__(self, state: dict) -> None:
        if "fitted" not in state:
            # Pickled before model types were modules: a linear model kept its estimator in `regressor`; an MLP
            # kept `net` (None in the pickle: its weights are the logged state dict) and its `mlp_config`.
            regressor, net, mlp_config = (state.pop(k, None) for k in ("regressor", "net", "mlp_config"))
            state["fitted"] = net if regressor is None else regressor
            state["config"] = mlp_config if regressor is None else None
        self.__dict__.update(state)


def fit(
    train: pd.DataFrame,
    schema: Schema,
    model_type: str,
    config: Any = None,
    *,
    epochs: int | None = None,
    seed: int | None = None,
) -> TabularModel:
    """Fit a model of the registered `model_type` (`mlops_sandbox.catalog.MODEL_TYPES`) on the training rows.

    `config` is the type's options (e.g. `MLPConfig`); one made for another type is not this type's, so the
    type's defaults are used. `epochs` and `seed` replace the config's where the type has them.
    """
    kind = catalog.model_type(model_type)  # a clear error naming the known ones
    if len(train) < 10:
        raise ValueError(f"too few training rows ({len(train)}); need at least 10")
    options = kind.configure(config, epochs=epochs, seed=seed)
    y = train[schema.target.name].to_numpy(dtype=float)
    preprocessor = build_preprocessor(schema)
    x = preprocessor.fit_transform(model_input(train, schema)).astype(np.float32)
    target_log = kind.target_log and bool(np.all(y > 0))
    target = np.log(y) if target_log else y
    mean, std = float(target.mean()), float(target.std() or 1.0)
    fitted = kind.fit(x, (target - mean) / std, options)
    return TabularModel(schema, model_type, preprocessor, target_log, mean, std, fitted, options, x.shape[1])


def evaluate(predict, frame: pd.DataFrame, schema: Schema) -> dict[str, float]:
    """RMSE, MAE, R² (and MAPE for positive targets) of `predict(frame)` against the frame's target."""
    if frame.empty:
        raise ValueError("no rows to evaluate on")
    y = frame[schema.target.name].to_numpy(dtype=float)
    pred = np.asarray(predict(frame), dtype=float).ravel()
    metrics = {
        "rmse": float(np.sqrt(mean_squared_error(y, pred))),
        "mae": float(mean_absolute_error(y, pred)),
        "r2": float(r2_score(y, pred)),
    }
    if np.all(y > 0):
        metrics["mape"] = float(np.mean(np.abs(pred - y) / y))
    return metrics


def __getattr__(name: str) -> Any:
    # Versions registered before model types were modules pickled `mlops_sandbox.train.models.MLPConfig`.
    if name in {"MLPConfig", "build_mlp"}:
        from mlops_sandbox.train import mlp

        return getattr(mlp, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
