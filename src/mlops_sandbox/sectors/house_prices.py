"""House sale prices, with the schema of BridgeAI's regression model."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from mlops_sandbox.schema import YES_NO, Column, Schema
from mlops_sandbox.sectors import Sector, column, yes_with

SCHEMA = Schema(
    name="house_prices",
    description="Residential sale prices: BridgeAI's regression model schema.",
    features=(
        Column("area", "float", 300, 30000, description="floor area, square feet"),
        Column("bedrooms", "int", 1, 8),
        Column("bathrooms", "int", 1, 6),
        Column("stories", "int", 1, 5),
        Column("mainroad", "category", categories=YES_NO, description="on a main road"),
        Column("guestroom", "category", categories=YES_NO),
        Column("basement", "category", categories=YES_NO),
        Column("hotwaterheating", "category", categories=YES_NO),
        Column("airconditioning", "category", categories=YES_NO),
        Column("parking", "int", 0, 4, description="parking spaces"),
        Column("prefarea", "category", categories=YES_NO, description="in a preferred area"),
        Column("furnishingstatus", "category", categories=("furnished", "semi-furnished", "unfurnished")),
    ),
    target=Column("price", "float", 1e5, 1e8, description="sale price"),
)


class HousePrices(Sector):
    """House sale prices with the schema of BridgeAI's regression model.

    Marginals follow a typical mid-size-city housing data set (area ~ log-normal around 4,600 sq ft,
    mostly 2-4 bedrooms). Price is log-linear in some features and non-linear in others: diminishing
    returns on area, a sweet spot in bedrooms, air conditioning worth more on more stories, and a premium
    for large houses in preferred areas, so an MLP can beat a linear baseline.
    """

    schema = SCHEMA
    drift = (
        "covariate: bigger houses, more air conditioning and more in preferred areas; "
        "concept: the market re-prices location and size"
    )
    example = {
        "area": 5500.0,
        "bedrooms": 3,
        "bathrooms": 2,
        "stories": 2,
        "mainroad": "yes",
        "guestroom": "no",
        "basement": "yes",
        "hotwaterheating": "no",
        "airconditioning": "yes",
        "parking": 1,
        "prefarea": "no",
        "furnishingstatus": "semi-furnished",
    }
    derived_names = ("log_area", "area_per_bedroom", "bathrooms_per_bedroom")

    def features(
        self, rng: np.random.Generator, n: int, covariate: float = 0.0, when: datetime | None = None
    ) -> pd.DataFrame:
        area = np.exp(rng.normal(np.log(4600) + 0.45 * covariate, 0.38, n)).clip(1500, 16500)
        bedrooms = np.rint(1.2 + area / 2200 + rng.normal(0, 0.7, n)).clip(1, 6)
        bathrooms = np.rint(0.6 + 0.35 * bedrooms + rng.normal(0, 0.45, n)).clip(1, 4)
        stories = rng.choice([1, 2, 3, 4], size=n, p=[0.42, 0.44, 0.07, 0.07])
        parking = rng.choice([0, 1, 2, 3], size=n, p=[0.55, 0.23, 0.2, 0.02])
        furnishing_p = np.array([0.26, 0.42, 0.32]) + covariate * np.array([0.3, -0.05, -0.25])
        furnishing_p = np.clip(furnishing_p, 0.01, None)
        return pd.DataFrame(
            {
                "area": area.round(0),
                "bedrooms": bedrooms.astype(int),
                "bathrooms": bathrooms.astype(int),
                "stories": stories.astype(int),
                "mainroad": yes_with(rng, n, 0.86 - 0.3 * covariate),
                "guestroom": yes_with(rng, n, 0.18),
                "basement": yes_with(rng, n, 0.35),
                "hotwaterheating": yes_with(rng, n, 0.05),
                "airconditioning": yes_with(rng, n, 0.32 + 0.4 * covariate),
                "parking": parking.astype(int),
                "prefarea": yes_with(rng, n, 0.23 + 0.3 * covariate),
                "furnishingstatus": rng.choice(
                    ["furnished", "semi-furnished", "unfurnished"], size=n, p=furnishing_p / furnishing_p.sum()
                ),
            }
        )

    def target(self, x: pd.DataFrame, rng: np.random.Generator, concept: float = 0.0) -> np.ndarray:
        rel_area = np.log(x["area"].to_numpy() / 5000)
        yes_no = ("mainroad", "guestroom", "basement", "hotwaterheating", "airconditioning", "prefarea")
        yes = {c: (x[c].to_numpy() == "yes").astype(float) for c in yes_no}
        stories = x["stories"].to_numpy()
        bedrooms = x["bedrooms"].to_numpy()
        furnishing = x["furnishingstatus"].to_numpy()
        log_price = (
            15.2
            + 0.62 * rel_area
            - 0.22 * rel_area**2  # diminishing returns on size
            - 0.05 * (bedrooms - 3) ** 2  # a sweet spot in bedrooms
            + 0.12 * (x["bathrooms"].to_numpy() - 1)
            + 0.04 * stories
            + 0.05 * yes["airconditioning"] * stories  # cooling is worth more in taller houses
            + 0.10 * yes["mainroad"]
            + 0.05 * yes["guestroom"]
            + 0.06 * yes["basement"]
            + 0.10 * yes["hotwaterheating"]
            + 0.05 * np.minimum(x["parking"].to_numpy(), 2)
            + 0.08 * yes["prefarea"]
            + 0.18 * yes["prefarea"] * (rel_area > 0.2)  # large houses in preferred areas
            + np.select([furnishing == "furnished", furnishing == "unfurnished"], [0.08, -0.07], 0.0)
        )
        # Concept drift: the market re-prices location and size (same houses, different prices).
        log_price += concept * (0.25 - 0.35 * yes["prefarea"] + 0.5 * rel_area + 0.2 * yes["mainroad"])
        noise = rng.normal(0, 0.1, len(x))
        return np.round(np.exp(log_price + noise), -3)

    def derived(self, columns) -> dict[str, np.ndarray]:
        area, bedrooms = column(columns, "area"), np.maximum(column(columns, "bedrooms"), 1.0)
        return {
            "log_area": np.log(np.maximum(area, 1.0)),
            "area_per_bedroom": area / bedrooms,
            "bathrooms_per_bedroom": column(columns, "bathrooms") / bedrooms,
        }


SECTOR = HousePrices()
