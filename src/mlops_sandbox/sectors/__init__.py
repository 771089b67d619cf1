"""Industry sectors of simulated data: one module each, registered in `mlops_sandbox.catalog.SECTORS`.

A sector module exposes `SECTOR`, a `Sector` with everything the loop needs to know about that industry:
- `schema`: the declared features and target (validation, the API's request model, the model signature);
- `features` and `target`: how the simulator draws records, with `covariate` shifting the feature
  distributions and `concept` changing the feature -> target relationship (0: no drift, 1: strong);
- `derived`: the engineered features computed inside the model (the same in training and serving);
- `example`: one valid record, shown in the API's Swagger UI;
- `drift`: what covariate and concept drift mean in this sector, in words.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from mlops_sandbox.schema import Schema


class Sector:
    """The base of every sector; a subclass sets the class attributes and the three methods."""

    schema: Schema
    example: dict[str, Any]
    derived_names: tuple[str, ...] = ()
    drift: str = ""

    def features(
        self, rng: np.random.Generator, n: int, covariate: float = 0.0, when: datetime | None = None
    ) -> pd.DataFrame:
        """`n` records' features, drawn with `rng`; `when` is the batch's simulated time (for seasons)."""
        raise NotImplementedError

    def target(self, x: pd.DataFrame, rng: np.random.Generator, concept: float = 0.0) -> np.ndarray:
        """The target of each record of `x`."""
        raise NotImplementedError

    def derived(self, columns: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Derived features from raw columns (a DataFrame or a mapping of name -> array), as float64 arrays,
        in the order of `derived_names`."""
        return {}


def column(columns: Mapping[str, Any], name: str) -> np.ndarray:
    """One raw column as float64 (what `Sector.derived` works on)."""
    return np.asarray(columns[name], dtype=float)


def yes_with(rng: np.random.Generator, n: int, p: np.ndarray | float) -> np.ndarray:
    """`"yes"` with probability `p` (per row or for all), else `"no"`."""
    return np.where(rng.random(n) < np.clip(p, 0, 1), "yes", "no")
