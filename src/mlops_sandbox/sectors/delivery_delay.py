"""Transport: how late a parcel delivery arrives, in minutes."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from mlops_sandbox.schema import Column, Schema
from mlops_sandbox.sectors import Sector, column

SCHEMA = Schema(
    name="delivery_delay",
    description="Transport: minutes a parcel delivery arrives late.",
    features=(
        Column("distance_km", "float", 0.5, 400),
        Column("weight_kg", "float", 0.1, 1000),
        Column("stops", "int", 1, 60),
        Column("hour_of_day", "int", 0, 23),
        Column("traffic_index", "float", 0, 10),
        Column("driver_experience_years", "float", 0, 45),
        Column("vehicle_type", "category", categories=("bike", "van", "truck")),
        Column("weather", "category", categories=("clear", "rain", "snow", "fog")),
        Column("region", "category", categories=("urban", "suburban", "rural")),
    ),
    target=Column("delay_minutes", "float", -60, 1440, description="minutes late (negative: early)"),
)


class DeliveryDelay(Sector):
    """Transport: how late a parcel delivery arrives, in minutes.

    Delay grows super-linearly with traffic on long routes, weather hits bikes hardest, and experience
    helps with diminishing returns.
    """

    schema = SCHEMA
    drift = (
        "covariate: worse weather, longer routes and heavier traffic; "
        "concept: a new routing policy makes traffic and weather matter far more"
    )
    example = {
        "distance_km": 22.5,
        "weight_kg": 4.2,
        "stops": 9,
        "hour_of_day": 17,
        "traffic_index": 6.5,
        "driver_experience_years": 3.0,
        "vehicle_type": "van",
        "weather": "rain",
        "region": "urban",
    }
    derived_names = ("log_distance", "congestion_load", "stops_per_km")

    def features(
        self, rng: np.random.Generator, n: int, covariate: float = 0.0, when: datetime | None = None
    ) -> pd.DataFrame:
        hour = rng.integers(6, 23, n)
        rush = np.exp(-((hour - 8.5) ** 2) / 3) + np.exp(-((hour - 17.5) ** 2) / 4)
        weather_p = np.array([0.62, 0.25, 0.05, 0.08]) + covariate * np.array([-0.4, 0.1, 0.25, 0.05])
        weather_p = np.clip(weather_p, 0.01, None)
        return pd.DataFrame(
            {
                "distance_km": np.exp(rng.normal(np.log(18) + 0.5 * covariate, 0.8, n)).clip(0.5, 400).round(1),
                "weight_kg": np.exp(rng.normal(np.log(6), 1.1, n)).clip(0.1, 1000).round(2),
                "stops": (rng.poisson(8, n) + 1).clip(1, 60),
                "hour_of_day": hour,
                "traffic_index": (2 + 5 * rush + 2 * covariate + rng.normal(0, 1, n)).clip(0, 10).round(2),
                "driver_experience_years": rng.gamma(2.0, 3.5, n).clip(0, 45).round(1),
                "vehicle_type": rng.choice(["bike", "van", "truck"], size=n, p=[0.2, 0.6, 0.2]),
                "weather": rng.choice(["clear", "rain", "snow", "fog"], size=n, p=weather_p / weather_p.sum()),
                "region": rng.choice(["urban", "suburban", "rural"], size=n, p=[0.5, 0.3, 0.2]),
            }
        )

    def target(self, x: pd.DataFrame, rng: np.random.Generator, concept: float = 0.0) -> np.ndarray:
        weather_hit = x["weather"].map({"clear": 0.0, "rain": 8.0, "snow": 25.0, "fog": 10.0}).to_numpy()
        bike = (x["vehicle_type"] == "bike").to_numpy()
        truck = (x["vehicle_type"] == "truck").to_numpy()
        traffic = x["traffic_index"].to_numpy()
        distance = x["distance_km"].to_numpy()
        delay = (
            6.0
            + 0.12 * distance * (traffic / 5) ** 1.5
            + 1.1 * x["stops"].to_numpy()
            + weather_hit * (1 + bike)
            + 6.0 * truck * (x["region"] == "urban").to_numpy()
            - 9.0 * np.log1p(x["driver_experience_years"].to_numpy())
            + 0.02 * x["weight_kg"].to_numpy() * bike
        )
        # Concept drift: a new routing policy makes traffic and weather matter far more.
        delay += concept * (0.25 * distance * traffic / 5 + weather_hit)
        return np.round(delay + rng.normal(0, 4, len(x)), 1)

    def derived(self, columns) -> dict[str, np.ndarray]:
        distance = column(columns, "distance_km")
        return {
            "log_distance": np.log1p(distance),
            "congestion_load": distance * column(columns, "traffic_index"),
            "stops_per_km": column(columns, "stops") / np.maximum(distance, 0.5),
        }


SECTOR = DeliveryDelay()
