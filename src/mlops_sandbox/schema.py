"""Declared data schemas: the contract shared by the simulator, validation, training and the prediction API.

Each sector declares its own schema (`mlops_sandbox.sectors.<name>.SCHEMA`) with these classes."""

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


def get_schema(name: str) -> Schema:
    """The schema of a scenario (a sector registered in `mlops_sandbox.catalog`), or a clear error naming the
    ones that exist."""
    from mlops_sandbox import catalog

    return catalog.sector(name).schema
