"""Which model the service serves: the registry version behind the `production` alias, reloaded on change."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

PRODUCTION_ALIAS = "production"


@dataclass(frozen=True)
class ServedModel:
    """A loaded model version and where it came from."""

    name: str
    version: str
    alias: str
    run_id: str | None
    tags: dict[str, str]
    pyfunc: Any = field(repr=False)
    loaded_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "alias": self.alias,
            "run_id": self.run_id,
            "tags": self.tags,
            "loaded_at": self.loaded_at,
        }


class ProductionModel:
    """Holds the served model and swaps it atomically when the alias moves to another version."""

    def __init__(self, model_name: str, tracking_uri: str, alias: str = PRODUCTION_ALIAS):
        self.model_name = model_name
        self.tracking_uri = tracking_uri
        self.alias = alias
        self._current: ServedModel | None = None
        self._lock = threading.Lock()
        self.last_error: str | None = None

    @property
    def current(self) -> ServedModel | None:
        return self._current

    def refresh(self) -> bool:
        """Look the alias up and load its version if it changed. Returns True when a new model was loaded.

        Errors (no registered model yet, MLflow down) leave the current model in place and are kept in
        `last_error`, so the service stays up and says why it has nothing to serve.
        """
        import mlflow
        from mlflow.exceptions import MlflowException

        with self._lock:
            client = mlflow.MlflowClient(tracking_uri=self.tracking_uri)
            try:
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
                mlflow.set_tracking_uri(self.tracking_uri)
                pyfunc = mlflow.pyfunc.load_model(uri)
            except Exception as err:  # noqa: BLE001
                self.last_error = f"loading {uri} failed: {err}"
                log.exception("loading %s failed", uri)
                return False
            self._current = ServedModel(
                name=self.model_name,
                version=str(mv.version),
                alias=self.alias,
                run_id=mv.run_id,
                tags=dict(mv.tags or {}),
                pyfunc=pyfunc,
            )
            self.last_error = None
            log.info("now serving %s version %s", self.model_name, mv.version)
            return True
