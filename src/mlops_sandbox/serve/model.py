"""Which model the service serves: the registry version behind the `production` alias, reloaded on change."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from mlops_sandbox.contracts import PRODUCTION
from mlops_sandbox.schema import Schema

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

    def predict(self, records: list[dict[str, Any]]) -> np.ndarray:
        """Predictions for records that the API already validated. A model of ours is called on its
        numpy path (`TabularModel.predict_records`, equal to its pyfunc's answers); any other pyfunc gets
        a DataFrame."""
        inner = _unwrap(self.pyfunc)
        if inner is not None and hasattr(inner, "predict_records"):
            return np.asarray(inner.predict_records(records), dtype=float)
        frame = pd.DataFrame.from_records(records)
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
    """Holds the served model and swaps it atomically when the alias moves to another version."""

    def __init__(self, model_name: str, tracking_uri: str, alias: str = PRODUCTION, schema: Schema | None = None):
        self.model_name = model_name
        self.tracking_uri = tracking_uri
        self.alias = alias
        self.schema = schema
        self._current: ServedModel | None = None
        self._lock = threading.Lock()
        self.last_error: str | None = None

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

        Errors (no registered model yet, MLflow down, a model for another schema) leave the current model in
        place and are kept in `last_error`, so the service stays up and says why.
        """
        import mlflow
        from mlflow.exceptions import MlflowException

        from mlops_sandbox.tracking import tracking_client

        with self._lock:
            try:
                client = tracking_client(self.tracking_uri)
                mv = client.get_model_version_by_alias(self.model_name, self.alias)
            except MlflowException as err:
                self.last_error = (
                    f"no version of model '{self.model_name}' has the alias '{self.alias}' yet"
                    if "RESOURCE_DOES_NOT_EXIST" in str(err.error_code) or "not found" in str(err).lower()
                    else f"registry lookup failed: {err}"
                )
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
                self.last_error = f"loading {uri} failed: {err}"
                log.exception("loading %s failed", uri)
                return False
            mismatch = self._check_signature(pyfunc)
            if mismatch:
                self.last_error = f"refusing to serve {uri}: {mismatch}"
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
            self.last_error = None
            log.info("now serving %s version %s", self.model_name, mv.version)
            return True
