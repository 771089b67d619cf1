"""Declared data schemas: the contract shared by the simulator, validation, training and the prediction API."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Column:
    """One input column. Numbers have a range; categories a closed set of values."""

    name: str
    kind: str  # "float" | "int" | "category"
    minimum: float | None = None
    maximum: float | None = None
    categories: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in {"float", "int", "category"}:
            raise ValueError(f"{self.name}: unknown kind {self.kind!r}")
        if self.kind == "category" and not self.categories:
            raise ValueError(f"{self.name}: a category column needs its categories")


@dataclass(frozen=True)
class Schema:
    """The features and target of one scenario."""

    name: str
    features: tuple[Column, ...]
    target: Column
    id_column: str = "record_id"
    time_column: str = "event_time"
    description: str = ""
    _by_name: dict[str, Column] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {c.name: c for c in (*self.features, self.target)})

    @property
    def feature_names(self) -> list[str]:
        return [c.name for c in self.features]

    @property
    def numeric_features(self) -> list[str]:
        return [c.name for c in self.features if c.kind in {"float", "int"}]

    @property
    def categorical_features(self) -> list[str]:
        return [c.name for c in self.features if c.kind == "category"]

    def column(self, name: str) -> Column:
        return self._by_name[name]


YES_NO = ("yes", "no")

HOUSE_PRICES = Schema(
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

DELIVERY_DELAY = Schema(
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

SCHEMAS: dict[str, Schema] = {s.name: s for s in (HOUSE_PRICES, DELIVERY_DELAY)}


def get_schema(name: str) -> Schema:
    """The schema of a scenario, or a clear error naming the ones that exist."""
    try:
        return SCHEMAS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; known: {sorted(SCHEMAS)}") from None
