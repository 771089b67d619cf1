"""Preprocessing and feature engineering.

`preprocess` turns validated rows into the feature table that DVC versions: the schema's columns, typed,
plus a deterministic train/test split. `engineer` adds derived features; it runs *inside* the logged model
(see `mlops_sandbox.train`), so the prediction service feeds the model raw records and cannot skew.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from mlops_sandbox import catalog
from mlops_sandbox.schema import Schema


def split_of(record_id: str, test_share: float = 0.2) -> str:
    """`train` or `test`, fixed by the record id's hash: a record never changes side between runs."""
    bucket = int(hashlib.sha256(record_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if bucket < test_share else "train"


def preprocess(valid: pd.DataFrame, schema: Schema, test_share: float = 0.2) -> pd.DataFrame:
    """The feature table: id, event time, source batch, features, target and `split`, sorted by id."""
    if valid.empty:
        raise ValueError("no valid rows to preprocess")
    if not 0 < test_share < 1:
        raise ValueError("test_share must be between 0 and 1")
    columns = [schema.id_column, schema.time_column, "source_key", *schema.feature_names, schema.target.name]
    table = valid[[c for c in columns if c in valid.columns]].copy()
    for column in schema.categorical_features:
        table[column] = table[column].astype(str)
    table["split"] = [split_of(str(r), test_share) for r in table[schema.id_column]]
    return table.sort_values(schema.id_column).reset_index(drop=True)


def derived(columns, scenario: str) -> dict[str, np.ndarray]:
    """The sector's derived features from raw columns (a DataFrame or a mapping of name -> array)."""
    return catalog.sector(scenario).derived(columns)


def engineer(frame: pd.DataFrame, scenario: str) -> pd.DataFrame:
    """The frame with its derived features added; computed the same way in training and in serving.

    Logged models call this by name (`mlops_sandbox.features.engineer`), so it keeps its name and signature.
    """
    return frame.assign(**derived(frame, scenario))


def engineered_names(scenario: str) -> list[str]:
    return list(catalog.sector(scenario).derived_names)
