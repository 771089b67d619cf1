"""Behavioural tests of every registered model type on every registered sector (Made-With-ML style).

Each model is fitted on simulated data spread over a year (so seasonal sectors show their seasons) and asked:
- invariance: a change that must not matter leaves its prediction alone (ids, event time and column layout,
  for every sector; and, per sector, a feature the generator ignores in that context);
- direction: a change the generator prices in moves the prediction the right way, all else equal;
- minimum quality: R² on the held-out split of the same data.

A sector's cases and bars are read from `CASES` and `MIN_R2` by its catalog name: a sector without cases is
skipped for invariance and direction (add them when you add the sector), and a sector or model type without
a measured bar must reach `DEFAULT_MIN_R2`. Changes are measured in held-out target standard deviations
(`std`), so one scale serves prices, minutes and megawatt-hours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops_sandbox import catalog
from mlops_sandbox.features import preprocess
from mlops_sandbox.ingest import validate
from mlops_sandbox.schema import get_schema
from mlops_sandbox.simulate import batch_times, generate_batch
from mlops_sandbox.train import TabularModel, evaluate, fit

pytestmark = pytest.mark.unit

MLP_EPOCHS = 30  # enough for the bars below on 1,900 rows; the pipeline trains 80
SHARE_THE_RIGHT_WAY = 0.9  # direction: the share of held-out records that must move the expected way
MIN_EFFECT = 0.1  # direction: the smallest mean move, in std (the weakest effect below is about 0.25 std)


@dataclass(frozen=True)
class Case:
    """Held-out records with `given` and `before` set, against the same records with `after` set instead."""

    name: str
    before: dict[str, Any]
    after: dict[str, Any]
    expect: str  # "up", "down", or "same": a mean |change| of at most `tolerance` std
    given: dict[str, Any] = field(default_factory=dict)
    tolerance: float = 0.0


CASES: dict[str, list[Case]] = {
    "house_prices": [
        Case("more area, higher price", {"area": 4000}, {"area": 7000}, "up"),
        Case("a second bathroom, higher price", {"bathrooms": 1}, {"bathrooms": 2}, "up"),
        Case("air conditioning, higher price", {"airconditioning": "no"}, {"airconditioning": "yes"}, "up"),
        Case("a preferred area, higher price", {"prefarea": "no"}, {"prefarea": "yes"}, "up"),
    ],
    "delivery_delay": [
        Case("more traffic on a long route", {"traffic_index": 2}, {"traffic_index": 8}, "up", {"distance_km": 80}),
        Case("snow, later", {"weather": "clear"}, {"weather": "snow"}, "up"),
        Case("a seasoned driver, earlier", {"driver_experience_years": 1}, {"driver_experience_years": 15}, "down"),
        # Weight slows bikes only, and the hour matters only through traffic, which stays as it is. The bar is
        # 0.16 std, about 2 minutes: half the generator's own noise (sd 4 minutes). Measured: up to 0.11 (MLP).
        Case("a van's load", {"weight_kg": 2}, {"weight_kg": 40}, "same", {"vehicle_type": "van"}, 0.16),
        Case("a truck's load", {"weight_kg": 2}, {"weight_kg": 40}, "same", {"vehicle_type": "truck"}, 0.16),
        Case("the hour, traffic unchanged", {"hour_of_day": 8}, {"hour_of_day": 14}, "same", tolerance=0.16),
    ],
    "energy_demand": [
        Case("more customers, more demand", {"customers_k": 10}, {"customers_k": 30}, "up"),
        Case("a colder winter day", {"temperature_c": 10}, {"temperature_c": 0}, "up", {"day_of_year": 20}),
        Case("a hotter summer day", {"temperature_c": 24}, {"temperature_c": 32}, "up", {"day_of_year": 200}),
        # Humidity only makes cooling worse, and at 5 °C nobody cools. Measured: up to 0.07 std (MLP).
        Case("humidity on a cold day", {"humidity_pct": 50}, {"humidity_pct": 90}, "same", {"temperature_c": 5}, 0.12),
    ],
}

# R² measured on the held-out split of this data (seed 7), and the range over seeds 7-10, then lowered to leave
# room for other library versions and platforms:
# house_prices   linear 0.81 (0.76-0.81), mlp 0.84 (0.84-0.84), hist_gbt 0.85 (0.84-0.85);
# delivery_delay linear 0.79 (0.78-0.80), mlp 0.85 (0.85-0.86), hist_gbt 0.85 (0.85-0.86);
# energy_demand  linear 0.90 (0.90-0.93), mlp 0.97 (0.97-0.99), hist_gbt 0.99 (0.95-0.99).
MIN_R2: dict[str, dict[str, float]] = {
    "house_prices": {"linear": 0.72, "mlp": 0.80, "hist_gbt": 0.80},
    "delivery_delay": {"linear": 0.74, "mlp": 0.80, "hist_gbt": 0.80},
    "energy_demand": {"linear": 0.85, "mlp": 0.92, "hist_gbt": 0.92},
}
DEFAULT_MIN_R2 = 0.5  # a sector or model type not measured yet: it must explain half the variance at least

SECTORS = sorted(catalog.SECTORS)
MODEL_TYPES = sorted(catalog.MODEL_TYPES)


@cache
def simulated(sector: str) -> pd.DataFrame:
    """2,400 validated records of `sector`: 24 batches of 100, 15 days and 7 hours apart, over a year."""
    schema = get_schema(sector)
    times = batch_times(datetime(2026, 1, 3, tzinfo=UTC), timedelta(days=15, hours=7), 24)
    raw = pd.concat([generate_batch(sector, 7, t, 100) for t in times]).astype(str)
    raw["source_key"] = "k"
    return preprocess(validate(raw, schema).valid, schema)


def held_out(sector: str) -> pd.DataFrame:
    table = simulated(sector)
    return table[table.split == "test"]


@cache
def fitted(sector: str, model_type: str) -> TabularModel:
    table = simulated(sector)
    return fit(table[table.split == "train"], get_schema(sector), model_type, epochs=MLP_EPOCHS)


def cases(kind: str, expect: set[str]) -> list:
    """(sector, case) for every registered sector's cases of this kind; a skip for a sector without any."""
    params = []
    for sector in SECTORS:
        chosen = [c for c in CASES.get(sector, []) if c.expect in expect]
        skip = pytest.mark.skip(reason=f"no {kind} cases for {sector} in CASES")
        params += [pytest.param(sector, c, id=f"{sector}: {c.name}") for c in chosen] or [
            pytest.param(sector, None, id=sector, marks=skip)
        ]
    return params


def change(sector: str, model_type: str, case: Case) -> np.ndarray:
    """How far each held-out record's prediction moves from `before` to `after`, in std."""
    model, rows = fitted(sector, model_type), held_out(sector).assign(**case.given)
    moved = model.predict(rows.assign(**case.after)) - model.predict(rows.assign(**case.before))
    return moved / rows[model.schema.target.name].std()


@pytest.mark.parametrize("model_type", MODEL_TYPES)
@pytest.mark.parametrize("sector", SECTORS)
def test_ids_event_time_and_column_layout_do_not_matter(sector, model_type):
    model, rows = fitted(sector, model_type), held_out(sector)
    schema = model.schema
    other = rows.assign(
        **{schema.id_column: "someone-else", schema.time_column: "2030-06-01T00:00:00+00:00", "unused": 1.0}
    )
    other = other[list(reversed(other.columns))]
    np.testing.assert_array_equal(model.predict(other), model.predict(rows))


@pytest.mark.parametrize("model_type", MODEL_TYPES)
@pytest.mark.parametrize(("sector", "case"), cases("invariance", {"same"}))
def test_invariance(sector, case, model_type):
    moved = change(sector, model_type, case)
    assert np.abs(moved).mean() <= case.tolerance, f"{case.name}: mean |change| {np.abs(moved).mean():.3f} std"


@pytest.mark.parametrize("model_type", MODEL_TYPES)
@pytest.mark.parametrize(("sector", "case"), cases("direction", {"up", "down"}))
def test_direction(sector, case, model_type):
    moved = change(sector, model_type, case) * (1 if case.expect == "up" else -1)
    assert moved.mean() >= MIN_EFFECT, f"{case.name}: mean change {moved.mean():+.3f} std"
    assert (moved > 0).mean() >= SHARE_THE_RIGHT_WAY, f"{case.name}: {(moved > 0).mean():.0%} the right way"


@pytest.mark.parametrize("model_type", MODEL_TYPES)
@pytest.mark.parametrize("sector", SECTORS)
def test_minimum_quality_on_held_out_data(sector, model_type):
    r2 = evaluate(fitted(sector, model_type).predict, held_out(sector), get_schema(sector))["r2"]
    assert r2 >= MIN_R2.get(sector, {}).get(model_type, DEFAULT_MIN_R2)
