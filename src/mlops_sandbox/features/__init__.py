"""Preprocessing and feature engineering.

`preprocess` turns validated rows into the feature table that DVC versions: the schema's columns, typed,
plus a deterministic train/test split. `engineer` adds derived features; it runs *inside* the logged model
(see `mlops_sandbox.train`), so the prediction service feeds the model raw records and cannot skew.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

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


def engineer(frame: pd.DataFrame, scenario: str) -> pd.DataFrame:
    """Derived features, computed the same way in training and in serving."""
    out = frame.copy()
    if scenario == "house_prices":
        area = out["area"].astype(float)
        out["log_area"] = np.log(area.clip(lower=1))
        out["area_per_bedroom"] = area / out["bedrooms"].astype(float).clip(lower=1)
        out["bathrooms_per_bedroom"] = out["bathrooms"].astype(float) / out["bedrooms"].astype(float).clip(lower=1)
    elif scenario == "delivery_delay":
        distance = out["distance_km"].astype(float)
        out["log_distance"] = np.log1p(distance)
        out["congestion_load"] = distance * out["traffic_index"].astype(float)
        out["stops_per_km"] = out["stops"].astype(float) / distance.clip(lower=0.5)
    return out


def engineered_names(scenario: str) -> list[str]:
    return {
        "house_prices": ["log_area", "area_per_bedroom", "bathrooms_per_bedroom"],
        "delivery_delay": ["log_distance", "congestion_load", "stops_per_km"],
    }.get(scenario, [])
