"""Request models generated from the scenario's declared schema, so the API and the model signature agree."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from mlops_sandbox import catalog
from mlops_sandbox.schema import Column, Schema

# One example record per sector, shown in the Swagger UI (each sector declares its own).
EXAMPLES: dict[str, dict[str, Any]] = {name: catalog.sector(name).example for name in catalog.SECTORS}


def _a_number(value: Any) -> Any:
    """JSON numbers only: pydantic's lax mode would take `true` as 1 and `"5500"` as 5500."""
    if isinstance(value, bool | str):
        raise ValueError(f"must be a JSON number, not {type(value).__name__}")
    return value


NUMBER = BeforeValidator(_a_number)


def _field_type(column: Column):
    bounds = {"ge": column.minimum, "le": column.maximum, "description": column.description or None}
    if column.kind == "category":
        return Annotated[Literal[column.categories], Field(description=column.description or None)]  # type: ignore[valid-type]
    # NUMBER after Field: in the other order, pydantic writes the bounds into the JSON schema as "ge"/"le",
    # which OpenAPI does not know, instead of "minimum"/"maximum"
    if column.kind == "int":
        return Annotated[int, Field(**bounds), NUMBER]
    return Annotated[float, Field(allow_inf_nan=False, **bounds), NUMBER]


def record_model(schema: Schema) -> type[BaseModel]:
    """A pydantic model of one input record: every feature required, typed and bounded; nothing else."""
    fields = {column.name: (_field_type(column), ...) for column in schema.features}
    config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLES.get(schema.name, {})]})
    return create_model(f"{schema.name.title().replace('_', '')}Record", __config__=config, **fields)
