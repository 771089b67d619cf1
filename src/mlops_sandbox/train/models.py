"""Model definitions, fitting and evaluation. No MLflow here: see `mlops_sandbox.train.logging`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from mlops_sandbox.features import derived, engineer, engineered_names
from mlops_sandbox.schema import Schema

MODEL_TYPES = ("linear", "mlp")


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
class MLPConfig:
    hidden: tuple[int, ...] = (64, 32)
    epochs: int = 80
    learning_rate: float = 3e-3
    batch_size: int = 256
    weight_decay: float = 1e-4
    seed: int = 0


def build_mlp(n_inputs: int, hidden: tuple[int, ...]):
    import torch.nn as nn

    layers: list[nn.Module] = []
    width = n_inputs
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


@dataclass
class TabularModel:
    """Preprocessor + regressor, with the target transform the regressor was trained on."""

    schema: Schema
    model_type: str
    preprocessor: Pipeline
    target_log: bool  # trained on log(target)
    target_mean: float
    target_std: float
    regressor: Any = None  # LinearRegression for "linear"
    net: Any = None  # torch.nn.Sequential for "mlp"
    mlp_config: MLPConfig = field(default_factory=MLPConfig)
    n_inputs: int = 0

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Predictions for a frame of raw records (the path training, evaluation and the pyfunc take)."""
        return self._regress(self.preprocessor.transform(model_input(frame, self.schema)).astype(np.float32))

    def predict_records(self, records: list[dict]) -> np.ndarray:
        """The same predictions for validated records, without pandas or scikit-learn on the way: the
        fitted scaling and encoding applied with numpy (the prediction service's hot path)."""
        return self._regress(self._transform_records(records))

    def _transform_records(self, records: list[dict]) -> np.ndarray:
        encode = self.preprocessor.named_steps["encode"]
        (_, scaler, numeric), (_, onehot, categorical) = encode.transformers_[:2]
        columns = {
            c: np.fromiter((r[c] for r in records), dtype=float, count=len(records))
            for c in self.schema.numeric_features
        }
        columns |= derived(columns, self.schema.name)
        x_num = (np.column_stack([columns[c] for c in numeric]) - scaler.mean_) / scaler.scale_
        blocks = [x_num]
        for column, categories in zip(categorical, onehot.categories_, strict=True):
            values = np.array([r[column] for r in records], dtype=object)
            blocks.append((values[:, None] == categories[None, :]).astype(float))
        return np.hstack(blocks).astype(np.float32)

    def _regress(self, x: np.ndarray) -> np.ndarray:
        if self.model_type == "linear":
            scaled = self.regressor.predict(x)
        else:
            import torch

            self.net.eval()
            with torch.inference_mode():
                scaled = self.net(torch.from_numpy(x)).numpy().ravel()
        raw = scaled * self.target_std + self.target_mean
        return np.exp(raw) if self.target_log else raw


def _fit_mlp(x: np.ndarray, y: np.ndarray, config: MLPConfig):
    import torch

    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    net = build_mlp(x.shape[1], config.hidden)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.float32)).unsqueeze(1)
    loss_fn = torch.nn.MSELoss()
    net.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(xt), generator=generator)
        for start in range(0, len(xt), config.batch_size):
            batch = order[start : start + config.batch_size]
            optimizer.zero_grad()
            loss = loss_fn(net(xt[batch]), yt[batch])
            loss.backward()
            optimizer.step()
        scheduler.step()
    net.eval()
    return net


def fit(train: pd.DataFrame, schema: Schema, model_type: str, mlp_config: MLPConfig | None = None) -> TabularModel:
    """Fit a model of `model_type` on the training rows.

    - `linear`: ordinary least squares on the raw target, the classic baseline;
    - `mlp`: a PyTorch MLP on the log target (for positive targets), which can learn the non-linear parts.
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(f"unknown model type {model_type!r}; choose one of {MODEL_TYPES}")
    if len(train) < 10:
        raise ValueError(f"too few training rows ({len(train)}); need at least 10")
    y = train[schema.target.name].to_numpy(dtype=float)
    preprocessor = build_preprocessor(schema)
    x = preprocessor.fit_transform(model_input(train, schema)).astype(np.float32)
    target_log = model_type == "mlp" and bool(np.all(y > 0))
    target = np.log(y) if target_log else y
    mean, std = float(target.mean()), float(target.std() or 1.0)
    scaled = (target - mean) / std
    model = TabularModel(schema, model_type, preprocessor, target_log, mean, std, n_inputs=x.shape[1])
    if model_type == "linear":
        model.regressor = LinearRegression().fit(x, scaled)
    else:
        model.mlp_config = mlp_config or MLPConfig()
        model.net = _fit_mlp(x, scaled, model.mlp_config)
    return model


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
