"""The one place where sectors and model types are registered: one line each.

A **sector** (a simulated industry: its schema, generator, derived features, drift behaviour and API example)
is one module under `mlops_sandbox/sectors/`, exposing `SECTOR`. A **model type** (how it is fitted, predicts
and is saved to MLflow) is one module under `mlops_sandbox/train/`, exposing `MODEL_TYPE`. Add the module, then
its line here: the CLI choices, the DAGs' param enums, the API's examples and the docs all read these names.

This module imports nothing else, so the Airflow DAGs read the names without the ML libraries; the modules are
imported only when asked for.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

SECTORS: dict[str, str] = {
    "house_prices": "mlops_sandbox.sectors.house_prices",
    "delivery_delay": "mlops_sandbox.sectors.delivery_delay",
    "energy_demand": "mlops_sandbox.sectors.energy_demand",
}
MODEL_TYPES: dict[str, str] = {
    "linear": "mlops_sandbox.train.linear",
    "mlp": "mlops_sandbox.train.mlp",
    "hist_gbt": "mlops_sandbox.train.hist_gbt",
}
DEFAULT_SECTOR = "house_prices"
DEFAULT_MODEL_TYPE = "mlp"


def _load(registry: dict[str, str], name: str, what: str, attribute: str) -> Any:
    if name not in registry:
        raise ValueError(f"unknown {what} {name!r}; known: {sorted(registry)}")
    return getattr(import_module(registry[name]), attribute)


def sector(name: str) -> Any:
    """The registered sector `name` (its module's `SECTOR`), or a clear error naming the known ones."""
    return _load(SECTORS, name, "scenario", "SECTOR")


def model_type(name: str) -> Any:
    """The registered model type `name` (its module's `MODEL_TYPE`), or a clear error naming the known ones."""
    return _load(MODEL_TYPES, name, "model type", "MODEL_TYPE")
