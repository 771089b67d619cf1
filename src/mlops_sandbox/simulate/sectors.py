"""Industry sectors: how features are distributed and how the target depends on them.

Each sector draws features (with `covariate` shifting their distribution) and a target (with `concept`
changing the feature -> target relationship). 0 means no drift; 1 is a strong drift.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlops_sandbox.schema import DELIVERY_DELAY, HOUSE_PRICES, Schema


def _yes(rng: np.random.Generator, n: int, p: np.ndarray | float) -> np.ndarray:
    return np.where(rng.random(n) < np.clip(p, 0, 1), "yes", "no")


class HousePrices:
    """House sale prices with the schema of BridgeAI's regression model.

    Marginals follow a typical mid-size-city housing data set (area ~ log-normal around 4,600 sq ft,
    mostly 2-4 bedrooms). Price is log-linear in some features and non-linear in others: diminishing
    returns on area, a sweet spot in bedrooms, air conditioning worth more on more stories, and a premium
    for large houses in preferred areas, so an MLP can beat a linear baseline.
    """

    schema: Schema = HOUSE_PRICES

    def features(self, rng: np.random.Generator, n: int, covariate: float = 0.0) -> pd.DataFrame:
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
                "mainroad": _yes(rng, n, 0.86 - 0.3 * covariate),
                "guestroom": _yes(rng, n, 0.18),
                "basement": _yes(rng, n, 0.35),
                "hotwaterheating": _yes(rng, n, 0.05),
                "airconditioning": _yes(rng, n, 0.32 + 0.4 * covariate),
                "parking": parking.astype(int),
                "prefarea": _yes(rng, n, 0.23 + 0.3 * covariate),
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


class DeliveryDelay:
    """Transport: how late a parcel delivery arrives, in minutes.

    Delay grows super-linearly with traffic on long routes, weather hits bikes hardest, and experience
    helps with diminishing returns.
    """

    schema: Schema = DELIVERY_DELAY

    def features(self, rng: np.random.Generator, n: int, covariate: float = 0.0) -> pd.DataFrame:
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


SECTORS = {"house_prices": HousePrices(), "delivery_delay": DeliveryDelay()}
