"""Energy: a distribution feeder's electricity demand for one day, known only the day after (delayed target).

Each record is one feeder (the network segment behind one substation transformer) on the batch's day. Its
weather follows the season of the batch's simulated date, so a model trained in winter meets summer: drift
happens here without anyone injecting it.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from mlops_sandbox.schema import YES_NO, Column, Schema
from mlops_sandbox.sectors import Sector, column, yes_with

SCHEMA = Schema(
    name="energy_demand",
    description="Energy: a distribution feeder's electricity demand for one day, in MWh.",
    features=(
        Column("temperature_c", "float", -40, 50, description="daily mean outdoor temperature, °C"),
        Column("humidity_pct", "float", 0, 100, description="daily mean relative humidity, %"),
        Column("day_of_year", "int", 1, 366),
        Column("day_of_week", "int", 0, 6, description="0 Monday ... 6 Sunday"),
        Column("is_holiday", "category", categories=YES_NO, description="a public holiday"),
        Column("customers_k", "float", 0.2, 300, description="customers on the feeder, thousands"),
        Column("industrial_share", "float", 0, 1, description="share of the feeder's load that is industrial"),
        Column("solar_capacity_mw", "float", 0, 500, description="rooftop solar behind the meters, MW"),
        Column("feeder_type", "category", categories=("residential", "commercial", "mixed")),
    ),
    target=Column("demand_mwh", "float", 0, 100_000, description="energy delivered that day, MWh"),
)

HEATING_BASE_C = 15.5  # below this daily mean temperature, homes heat (heating degree days)
COOLING_BASE_C = 22.0  # above it, they cool (cooling degree days)


def _season(day_of_year: np.ndarray) -> np.ndarray:
    """-1 in mid-January, +1 in mid-July (northern hemisphere)."""
    return -np.cos(2 * np.pi * (day_of_year - 15) / 365.25)


class EnergyDemand(Sector):
    """Daily demand of a distribution feeder.

    Marginals of a temperate northern grid: daily mean temperatures from about -5 °C in January to 24 °C in
    July, feeders of a few to a hundred thousand customers (log-normal around 15k) using about 25 kWh per
    customer a day. Demand is U-shaped in temperature (heating below 15.5 °C, cooling above 22 °C, which
    humidity makes worse), lower at weekends and on holidays where the load is commercial or industrial,
    higher on short winter days (lighting), and lower where rooftop solar covers part of it on sunny days.
    """

    schema = SCHEMA
    drift = (
        "natural: the seasons move temperature, daylight and solar output through the year; "
        "covariate: a warmer climate and more rooftop solar; "
        "concept: heat pumps and electric cars make each heating degree and each customer cost more energy"
    )
    example = {
        "temperature_c": 4.5,
        "humidity_pct": 78.0,
        "day_of_year": 20,
        "day_of_week": 2,
        "is_holiday": "no",
        "customers_k": 14.0,
        "industrial_share": 0.2,
        "solar_capacity_mw": 6.5,
        "feeder_type": "mixed",
    }
    derived_names = ("heating_degrees", "cooling_degrees", "log_customers", "weekend")

    def features(
        self, rng: np.random.Generator, n: int, covariate: float = 0.0, when: datetime | None = None
    ) -> pd.DataFrame:
        when = when or datetime(2026, 1, 15)
        day_of_year = np.full(n, when.timetuple().tm_yday)
        season = _season(day_of_year)
        # every feeder sees the day's weather, shifted by its own local climate
        temperature = 9.5 + 14.5 * season + 2.5 * covariate + rng.normal(0, 3.0, n)
        humidity = 68 - 8 * season + 4 * covariate + rng.normal(0, 10, n)
        feeder_type = rng.choice(["residential", "commercial", "mixed"], size=n, p=[0.55, 0.15, 0.30])
        industrial = np.where(feeder_type == "residential", rng.beta(1.2, 12, n), rng.beta(2.5, 4, n))
        customers = np.exp(rng.normal(np.log(15), 0.8, n)).clip(0.2, 300)
        solar_per_k = rng.gamma(2.0, 0.25, n) * (1 + 1.5 * covariate)  # MW per thousand customers
        return pd.DataFrame(
            {
                "temperature_c": temperature.clip(-40, 50).round(1),
                "humidity_pct": humidity.clip(5, 100).round(0),
                "day_of_year": day_of_year.astype(int),
                "day_of_week": np.full(n, when.weekday()),
                "is_holiday": yes_with(rng, n, 0.03),
                "customers_k": customers.round(2),
                "industrial_share": industrial.clip(0, 0.95).round(3),
                "solar_capacity_mw": (customers * solar_per_k).clip(0, 500).round(2),
                "feeder_type": feeder_type,
            }
        )

    def target(self, x: pd.DataFrame, rng: np.random.Generator, concept: float = 0.0) -> np.ndarray:
        temperature = x["temperature_c"].to_numpy(dtype=float)
        customers = x["customers_k"].to_numpy(dtype=float)
        industrial = x["industrial_share"].to_numpy(dtype=float)
        season = _season(x["day_of_year"].to_numpy(dtype=float))
        off_day = (x["day_of_week"].to_numpy() >= 5) | (x["is_holiday"].to_numpy() == "yes")
        business = np.where(x["feeder_type"].to_numpy() == "residential", 0.15, 0.6) + industrial
        heating = np.maximum(HEATING_BASE_C - temperature, 0)
        cooling = np.maximum(temperature - COOLING_BASE_C, 0)
        humid = 1 + 0.015 * (x["humidity_pct"].to_numpy(dtype=float) - 60)
        per_customer = (  # MWh per thousand customers
            22.0
            + 0.75 * heating * (1 + 0.8 * concept)  # electrified heating: more energy per heating degree
            + 1.6 * cooling * humid
            + 2.0 * (1 - season)  # lighting on short days
            + 6.0 * concept  # electric cars charging at home
        )
        demand = customers * per_customer * (1 + 0.9 * industrial) * np.where(off_day, 1 - 0.35 * business, 1.0)
        solar = x["solar_capacity_mw"].to_numpy(dtype=float) * (2.2 + 1.6 * season)  # MWh a day from rooftops
        demand = np.maximum(demand - 0.8 * solar, 0.05 * demand)
        return np.round(demand * np.exp(rng.normal(0, 0.04, len(x))), 1)

    def derived(self, columns) -> dict[str, np.ndarray]:
        temperature = column(columns, "temperature_c")
        return {
            "heating_degrees": np.maximum(HEATING_BASE_C - temperature, 0),
            "cooling_degrees": np.maximum(temperature - COOLING_BASE_C, 0),
            "log_customers": np.log(np.maximum(column(columns, "customers_k"), 0.01)),
            "weekend": (column(columns, "day_of_week") >= 5).astype(float),
        }


SECTOR = EnergyDemand()
