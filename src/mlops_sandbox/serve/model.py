"""Which model the service serves: the registry version behind the `production` alias, reloaded on change."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from mlops_sandbox.contracts import PRODUCTION
from mlops_sandbox.schema import Schema
from mlops_sandbox.serve import metrics

log = logging.getLogger(__name__)

LINEAGE_PREFIXES = ("dvc_", "raw_batch", "pipeline_run_id", "scenario", "model_type", "mlflow_run_id")


@dataclass(frozen=True)
class ServedModel:
    """A loaded model version and where it came from."""

    name: str
    version: str
    alias: str
    run_id: str | None
    tags: dict[str, str]
    pyfunc: Any = field(repr=False)
    schema: Schema | None = field(default=None, repr=False)
    loaded_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    columnar: Any = field(default=None, init=False, repr=False, compare=False)  # the numpy path, found once

    def __post_init__(self) -> None:
        inner = _unwrap(self.pyfunc)
        if inner is not None and hasattr(inner, "predict_columns"):
            object.__setattr__(self, "columnar", inner.predict_columns)

    def predict(self, columns: Mapping[str, Sequence]) -> np.ndarray:
        """Predictions for columns (feature -> values) that the API already validated. A model of ours is
        called on its numpy path (`TabularModel.predict_columns`, equal to its pyfunc's answers); any other
        pyfunc gets a DataFrame with its signature's dtypes."""
        if self.columnar is not None:
            return np.asarray(self.columnar(columns), dtype=float)
        frame = pd.DataFrame(dict(columns))
        if self.schema is not None:
            from mlops_sandbox.train.models import model_input

            frame = model_input(frame, self.schema)
        return np.asarray(self.pyfunc.predict(frame), dtype=float)

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "alias": self.alias,
            "run_id": self.run_id,
            "lineage": {k: v for k, v in self.tags.items() if k.startswith(LINEAGE_PREFIXES)},
            "loaded_at": self.loaded_at,
        }


def _unwrap(pyfunc: Any):
    try:
        wrapped = pyfunc.unwrap_python_model()
    except Exception:  # noqa: BLE001 - not a PythonModel: go through pyfunc.predict
        return None
    return getattr(wrapped, "model", None)


class ProductionModel:
    """Holds the served model and swaps it atomically when the alias moves to another version. (An experiment
    holds its candidate, the `staging` version, in another one: `serve.experiment`.)"""

    def __init__(
        self,
        model_name: str,
        tracking_uri: str,
        alias: str = PRODUCTION,
        schema: Schema | None = None,
        gauge=metrics.MODEL_VERSION,
    ):
        self.model_name = model_name
        self.gauge = gauge  # the metric that shows the version held
        self.tracking_uri = tracking_uri
        self.alias = alias
        self.schema = schema
        self._current: ServedModel | None = None
        self._lock = threading.Lock()
        self.last_error: str | None = None
        self._withdrawn: str | None = None  # the version served last, when the registry withdrew it

    @property
    def current(self) -> ServedModel | None:
        return self._current

    def _check_signature(self, pyfunc: Any) -> str | None:
        if self.schema is None:
            return None
        inputs = pyfunc.metadata.get_input_schema()
        if inputs is None:
            return "the model has no input signature"
        names = set(inputs.input_names())
        if names != set(self.schema.feature_names):
            return f"the model's inputs {sorted(names)} do not match scenario '{self.schema.name}'"
        return None

    def refresh(self) -> bool:
        """Look the alias up and load its version if it changed. Returns True when a new model was loaded.

        The registry decides what is served. When it says the alias is gone (removed, or the model deleted), or
        the alias points to a version that cannot be loaded or does not fit the scenario, the service stops
        serving the version it had: `current` becomes None, /predict answers 503 and /health says why. When
        the registry cannot be asked (MLflow down), the current model stays: nothing was withdrawn.
        """
        import mlflow
        from mlflow.exceptions import MlflowException

        from mlops_sandbox.tracking import tracking_client

        with self._lock:
            try:
                client = tracking_client(self.tracking_uri)
                mv = client.get_model_version_by_alias(self.model_name, self.alias)
            except MlflowException as err:
                if "RESOURCE_DOES_NOT_EXIST" in str(err.error_code) or "not found" in str(err).lower():
                    served = self._current is not None or self._withdrawn is not None
                    missing = f"no version of model '{self.model_name}' has the alias '{self.alias}'"
                    self._withdraw(missing if served else f"{missing} yet")
                else:
                    self.last_error = f"registry lookup failed: {err}"
                return False
            except Exception as err:  # noqa: BLE001 - MLflow unreachable: keep serving what we have
                self.last_error = f"registry lookup failed: {err}"
                return False
            if self._current is not None and self._current.version == str(mv.version):
                self.last_error = None
                return False
            uri = f"models:/{self.model_name}/{mv.version}"
            try:
                pyfunc = mlflow.pyfunc.load_model(uri)
            except Exception as err:  # noqa: BLE001
                log.exception("loading %s failed", uri)
                self._withdraw(f"'{self.alias}' points to version {mv.version}, which cannot be loaded: {err}")
                return False
            mismatch = self._check_signature(pyfunc)
            if mismatch:
                self._withdraw(f"refusing to serve {uri}: {mismatch}")
                return False
            self._current = ServedModel(
                name=self.model_name,
                version=str(mv.version),
                alias=self.alias,
                run_id=mv.run_id,
                tags=dict(mv.tags or {}),
                pyfunc=pyfunc,
                schema=self.schema,
            )
            self.last_error = self._withdrawn = None
            self.gauge.labels(self.model_name).set(int(mv.version))
            log.info("now serving %s version %s", self.model_name, mv.version)
            return True

    def release(self) -> None:
        """Hold nothing, and say nothing is wrong: the model is no longer asked for (an experiment ended)."""
        if self._current is not None:
            log.info("released %s version %s ('%s')", self.model_name, self._current.version, self.alias)
        self._current = self.last_error = self._withdrawn = None
        self.gauge.labels(self.model_name).set(0)

    def _withdraw(self, reason: str) -> None:
        """Stop serving: the registry no longer backs the version held (if any)."""
        if self._current is not None:
            self._withdrawn = self._current.version
            log.warning("%s: stopped serving version %s", reason, self._withdrawn)
        if self._withdrawn is not None:
            reason += f"; stopped serving version {self._withdrawn}"
        self._current = None
        self.last_error = reason
        self.gauge.labels(self.model_name).set(0)
