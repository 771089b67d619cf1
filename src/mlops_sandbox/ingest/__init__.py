"""Ingest raw batches from the raw-data bucket, and validate them against the declared schema.

Rows that break a rule are quarantined with the rule, the column and the offending value: none is dropped
silently.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlops_sandbox.contracts import raw_batch_keys, raw_batch_name, raw_batches_prefix
from mlops_sandbox.schema import Schema
from mlops_sandbox.storage import list_keys


def list_batches(client, bucket: str, scenario: str, until: str | None = None, last: int | None = None) -> list[str]:
    """Keys of the scenario's raw CSV batches, oldest first; `until` (a batch key) bounds them, `last` keeps
    only the newest N."""
    keys = raw_batch_keys(list_keys(client, bucket, raw_batches_prefix(scenario)))
    if until is not None:
        keys = [k for k in keys if raw_batch_name(k) <= raw_batch_name(until)]
    if last is not None:
        if last < 1:
            raise ValueError("last must be at least 1")
        keys = keys[-last:]
    return keys


def read_batches(client, bucket: str, keys: list[str]) -> pd.DataFrame:
    """Concatenate raw batches, each row tagged with the key it came from (`source_key`)."""
    if not keys:
        raise ValueError(f"no raw batches to ingest in s3://{bucket}; simulate some first")
    frames = []
    for key in keys:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        frame = pd.read_csv(io.BytesIO(body), dtype=str, keep_default_na=False, na_values=[""])
        frame["source_key"] = key
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


@dataclass(frozen=True)
class ValidationResult:
    valid: pd.DataFrame
    quarantined: pd.DataFrame  # one row per broken rule: record_id, source_key, rule, column, value

    def report(self) -> dict:
        rules = self.quarantined.groupby(["rule", "column"]).size() if len(self.quarantined) else pd.Series()
        return {
            "valid_rows": int(len(self.valid)),
            "quarantined_rows": int(self.quarantined["row"].nunique()) if len(self.quarantined) else 0,
            "violations": [{"rule": rule, "column": column, "count": int(n)} for (rule, column), n in rules.items()],
        }


def validate(raw: pd.DataFrame, schema: Schema) -> ValidationResult:
    """Check every row against `schema`. Returns typed valid rows and the violations of the others.

    Rules: `missing_column`, `missing_value`, `not_a_number`, `not_an_integer`, `below_minimum`,
    `above_maximum`, `unknown_category`, `duplicate_id`.
    """
    frame = raw.reset_index(drop=True)
    violations: list[dict] = []

    def flag(mask: pd.Series, rule: str, column: str) -> None:
        for row in np.flatnonzero(mask.to_numpy()):
            violations.append({"row": int(row), "rule": rule, "column": column, "value": raw_value(row, column)})

    def raw_value(row: int, column: str) -> str:
        value = frame.at[row, column] if column in frame.columns else None
        return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)

    typed = pd.DataFrame(index=frame.index)
    for column in (*schema.features, schema.target):
        if column.name not in frame.columns:
            violations += [
                {"row": int(r), "rule": "missing_column", "column": column.name, "value": ""} for r in frame.index
            ]
            continue
        values = frame[column.name]
        missing = values.isna() | (values.astype(str).str.strip() == "")
        flag(missing, "missing_value", column.name)
        if column.kind == "category":
            known = values.isin(column.categories)
            flag(~missing & ~known, "unknown_category", column.name)
            typed[column.name] = values.where(known)
            continue
        numbers = pd.to_numeric(values, errors="coerce")
        flag(~missing & numbers.isna(), "not_a_number", column.name)
        if column.kind == "int":
            flag(numbers.notna() & (numbers != numbers.round()), "not_an_integer", column.name)
        if column.minimum is not None:
            flag(numbers < column.minimum, "below_minimum", column.name)
        if column.maximum is not None:
            flag(numbers > column.maximum, "above_maximum", column.name)
        typed[column.name] = numbers
    if schema.id_column in frame.columns:
        flag(frame[schema.id_column].duplicated(keep="first"), "duplicate_id", schema.id_column)

    bad_rows = sorted({v["row"] for v in violations})
    keep = ~frame.index.isin(bad_rows)
    carry = [c for c in (schema.id_column, schema.time_column, "source_key") if c in frame.columns]
    valid = pd.concat([frame.loc[keep, carry], typed.loc[keep]], axis=1).reset_index(drop=True)
    for column in (*schema.features, schema.target):
        if column.name in valid.columns:
            valid[column.name] = valid[column.name].astype(
                {"float": "float64", "int": "int64", "category": "object"}[column.kind]
            )
    quarantined = pd.DataFrame(violations, columns=["row", "rule", "column", "value"])
    for extra in ("record_id", "source_key"):
        source = schema.id_column if extra == "record_id" else extra
        quarantined[extra] = frame.loc[quarantined["row"], source].to_numpy() if source in frame.columns else ""
    return ValidationResult(valid=valid, quarantined=quarantined)
