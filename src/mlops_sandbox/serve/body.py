"""Reading a `/predict` body: one record or a batch, parsed and checked as columns.

The fast path decodes the JSON bytes straight into msgspec structs generated from the scenario's schema (types,
bounds and categories checked while parsing, in C), then turns them into columns, one list per feature: the
same code for one row and for 10,000. When msgspec refuses a body, the pydantic model of the same schema
(`serve.schema.record_model`, the one in the OpenAPI document) validates it again, to name every bad field and
row in the 422, exactly as FastAPI would. So a good body never goes through pydantic, and a bad body gets
pydantic's complete answer.
"""

from __future__ import annotations

import json
from operator import attrgetter, itemgetter
from typing import Annotated, Any, Literal

import msgspec
from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import Discriminator, Field, Tag, TypeAdapter, ValidationError

from mlops_sandbox.schema import Column, Schema
from mlops_sandbox.serve.schema import record_model


def _struct_field(column: Column):
    # msgspec is strict: a float field takes a JSON integer, but not true, "5500", NaN or Infinity
    if column.kind == "category":
        return Literal[column.categories]  # type: ignore[valid-type]
    return Annotated[int if column.kind == "int" else float, msgspec.Meta(ge=column.minimum, le=column.maximum)]


def record_struct(schema: Schema) -> type[msgspec.Struct]:
    """A msgspec struct of one input record: every feature required, typed and bounded; nothing else."""
    return msgspec.defstruct(
        f"{schema.name.title().replace('_', '')}Row",
        [(column.name, _struct_field(column)) for column in schema.features],
        forbid_unknown_fields=True,
    )


def one_or_many(body: Any) -> str:
    """Which branch of the body to validate: a list is a batch, anything else one record. Only that branch's
    errors are reported (not also "Input should be a valid list" for a bad single record)."""
    return "batch" if isinstance(body, list) else "record"


def too_many(limit: int | None) -> str:
    """What a batch over `PREDICTOR_MAX_BATCH` is told (413), on `/predict` and on `/invocations`."""
    return f"a batch holds at most {limit} records"


def over_the_cap(errors: list[dict]) -> dict | None:
    """The error saying that a batch is longer than its cap, among a body's validation errors (None: none)."""
    return next((e for e in errors if e["type"] == "too_long" and tuple(e["loc"]) == ("body", "batch")), None)


class Rows:
    """A validated body: its records (to capture) and its columns (to predict), in the same row order."""

    __slots__ = ("records", "columns")

    def __init__(self, records: list[Any], columns: dict[str, list]) -> None:
        self.records, self.columns = records, columns

    def __len__(self) -> int:
        return len(self.records)


class BodyReader:
    """Reads `/predict` bodies for one scenario: one record, or a list of 1 to `max_batch` of them."""

    def __init__(self, schema: Schema, max_batch: int) -> None:
        self.features = schema.feature_names
        self.record = record_model(schema)
        row = record_struct(schema)
        self._fast = msgspec.json.Decoder(row | Annotated[list[row], msgspec.Meta(min_length=1, max_length=max_batch)])
        batch = Annotated[list[self.record], Field(min_length=1, max_length=max_batch)]  # type: ignore[valid-type]
        self.body_type = Annotated[
            Annotated[self.record, Tag("record")] | Annotated[batch, Tag("batch")],  # type: ignore[valid-type]
            Discriminator(one_or_many),
        ]
        self._full = TypeAdapter(self.body_type)
        self._by_attr = [(f, attrgetter(f)) for f in self.features]
        self._by_key = [(f, itemgetter(f)) for f in self.features]

    def read(self, body: bytes) -> Rows:
        """The rows of a body, or: 400 for a body that is not JSON, RequestValidationError (422, or 413 for
        a batch over its cap) naming every bad field and row."""
        try:
            parsed = self._fast.decode(body)
        except msgspec.DecodeError:
            return self._read_slowly(body)
        records = parsed if isinstance(parsed, list) else [parsed]
        return Rows(records, {feature: list(map(get, records)) for feature, get in self._by_attr})

    def _read_slowly(self, body: bytes) -> Rows:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as err:
            raise HTTPException(status_code=400, detail=f"the body is not valid JSON: {err}") from None
        except RecursionError:  # thousands of nested arrays or objects: no record is anything like that
            raise HTTPException(status_code=400, detail="the body is JSON nested too deeply to be records") from None
        return self.validate(data)

    def validate(self, data: Any) -> Rows:
        """The rows of a decoded body (one record, or a list of them), or RequestValidationError as `read`."""
        try:
            valid = self._full.validate_python(data)
        except ValidationError as err:
            raise RequestValidationError(
                [{**e, "loc": ("body", *e["loc"])} for e in err.errors(include_url=False)]
            ) from None
        # what msgspec refused and pydantic takes (an int field sent as 3.0): pydantic's values
        records = [r.model_dump() for r in (valid if isinstance(valid, list) else [valid])]
        return Rows(records, {feature: list(map(get, records)) for feature, get in self._by_key})

    def openapi(self, components: dict[str, Any]) -> dict[str, Any]:
        """The request body of `/predict` for the OpenAPI document; its models are added to `components`."""
        schema = self._full.json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        example = self.record.model_json_schema()["examples"][0]
        return {
            "required": True,
            "content": {
                "application/json": {
                    "schema": schema,
                    "examples": {"one record": {"value": example}, "a batch": {"value": [example] * 2}},
                }
            },
        }
