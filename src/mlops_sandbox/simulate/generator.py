"""Batches over a simulated clock, drift scenarios, and publishing to the raw-data bucket."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from mlops_sandbox import catalog, contracts

DRIFT_KINDS = ("covariate", "concept", "quality")


@dataclass(frozen=True)
class Drift:
    """A drift scenario: from `start` on (simulated clock), with `strength` (0 none, 1 strong).

    - covariate: feature distributions shift (bigger houses, longer routes);
    - concept: the feature -> target relationship changes;
    - quality: a share of rows get data-quality faults: missing values, out-of-range numbers, unknown
      categories.
    """

    kind: str
    start: datetime
    strength: float

    def __post_init__(self) -> None:
        if self.kind not in DRIFT_KINDS:
            raise ValueError(f"unknown drift kind {self.kind!r}; known: {DRIFT_KINDS}")
        if not 0 <= self.strength <= 5:
            raise ValueError(f"drift strength must be within [0, 5], got {self.strength}")
        if self.start.tzinfo is None:
            raise ValueError("drift start must be timezone-aware (UTC)")

    def at(self, when: datetime) -> float:
        """The strength in force at `when`: 0 before the start."""
        return self.strength if when >= self.start else 0.0


def parse_time(text: str) -> datetime:
    """An ISO-8601 time; naive times are taken as UTC."""
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def parse_drift(spec: str) -> Drift:
    """`KIND,START,STRENGTH`, e.g. `covariate,2026-01-02T00:00Z,0.8`."""
    parts = spec.split(",")
    if len(parts) != 3:
        raise ValueError(f"drift must be KIND,START,STRENGTH (e.g. concept,2026-01-02T00:00Z,1.0), got {spec!r}")
    kind, start, strength = parts
    return Drift(kind.strip(), parse_time(start.strip()), float(strength))


def batch_times(start: datetime, every: timedelta, count: int) -> list[datetime]:
    """The simulated clock: `count` ticks from `start`, `every` apart."""
    if count < 1:
        raise ValueError("count must be at least 1")
    return [start + i * every for i in range(count)]


def _strength(drifts: Iterable[Drift], kind: str, when: datetime) -> float:
    return sum(d.at(when) for d in drifts if d.kind == kind)


def _inject_quality_faults(frame: pd.DataFrame, scenario: str, rng: np.random.Generator, share: float) -> None:
    schema = catalog.sector(scenario).schema
    n_faulty = int(round(min(share, 1.0) * 0.3 * len(frame)))
    rows = rng.choice(len(frame), size=n_faulty, replace=False)
    numeric, categorical = schema.numeric_features, schema.categorical_features
    for row in rows:
        fault = rng.choice(["missing", "out_of_range", "unknown_category"])
        if fault == "missing":
            frame.loc[row, rng.choice(schema.feature_names)] = np.nan
        elif fault == "out_of_range":
            column = schema.column(str(rng.choice(numeric)))
            frame.loc[row, column.name] = -abs(column.maximum or 1.0) if rng.random() < 0.5 else column.maximum * 10
        else:
            frame.loc[row, str(rng.choice(categorical))] = "unknown"


def generate_batch(
    scenario: str,
    seed: int,
    when: datetime,
    rows: int,
    drifts: Sequence[Drift] = (),
) -> pd.DataFrame:
    """One batch of `rows` records at simulated time `when`: features, target, record id and event time.

    Deterministic: the same (scenario, seed, when, rows, drifts) always gives the same frame.
    """
    if rows < 1:
        raise ValueError("rows must be at least 1")
    if when.tzinfo is None:
        raise ValueError("the batch time must be timezone-aware (UTC)")
    sector = catalog.sector(scenario)  # a clear error for an unknown scenario
    rng = np.random.default_rng([seed, int(when.timestamp())])
    frame = sector.features(rng, rows, covariate=_strength(drifts, "covariate", when), when=when)
    frame[sector.schema.target.name] = sector.target(frame, rng, concept=_strength(drifts, "concept", when))
    quality = _strength(drifts, "quality", when)
    if quality > 0:
        frame = frame.astype({c: "float64" for c in sector.schema.numeric_features}).astype(
            {c: "object" for c in sector.schema.categorical_features}
        )
        _inject_quality_faults(frame, scenario, rng, quality)
    frame.insert(0, sector.schema.time_column, when.astimezone(UTC).isoformat())
    stamp = contracts.key_time(when)
    frame.insert(0, sector.schema.id_column, [f"{scenario}-{seed}-{stamp}-{i:05d}" for i in range(rows)])
    return frame


def batch_key(scenario: str, when: datetime) -> str:
    """Where a batch lives in the raw-data bucket (`contracts.raw_batch_key`)."""
    return contracts.raw_batch_key(scenario, when)


def next_clock(client, bucket: str, scenario: str, not_before: datetime) -> datetime:
    """The first hour after the newest batch already in the bucket (or `not_before`, if later), so that new
    batches are the newest ones a training run takes."""
    from mlops_sandbox.storage import list_keys

    keys = contracts.raw_batch_keys(list_keys(client, bucket, contracts.raw_batches_prefix(scenario)))
    if not keys:
        return not_before
    return max(not_before, contracts.raw_batch_time(keys[-1]) + timedelta(hours=1))


def publish_batch(frame: pd.DataFrame, scenario: str, when: datetime, client, bucket: str) -> str:
    """Write a batch to the raw-data bucket as CSV (the same time always maps to the same key)."""
    key = batch_key(scenario, when)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    client.put_object(Bucket=bucket, Key=key, Body=buffer.getvalue().encode(), ContentType="text/csv")
    return key


def land_batches(
    client,
    bucket: str,
    scenario: str,
    batches: int,
    rows: int,
    seed: int = 42,
    start: datetime | str | None = None,
    every: timedelta = timedelta(hours=1),
    drifts: Sequence[Drift] = (),
) -> list[str]:
    """Generate `batches` batches of `rows` records, `every` apart on the simulated clock, into the bucket.

    `start`: the first batch's time; None for this hour; `"next"` for the hour after the newest batch
    already in the bucket (so a training run on the newest batches takes exactly these). Returns the keys.
    """
    if batches < 1 or rows < 1:
        raise ValueError("batches and rows must be at least 1")
    this_hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    if start == "next":
        start = next_clock(client, bucket, scenario, this_hour)
    elif isinstance(start, str):
        raise ValueError(f"start must be a time or 'next', got {start!r}")
    return [
        publish_batch(generate_batch(scenario, seed, when, rows, drifts), scenario, when, client, bucket)
        for when in batch_times(start or this_hour, every, batches)
    ]
