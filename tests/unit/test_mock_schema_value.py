"""The mock upstream's schema-fitting values, checked by Pydantic against the models that made
the schemas, and against hand-written schemas."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

from costwarden.mock_upstream.schema_value import example_value


class Colour(StrEnum):
    RED = "red"
    BLUE = "blue"


class Address(BaseModel):
    street: str = Field(min_length=12)
    postcode: str | None
    country: Literal["FR", "DE"] = "FR"


class Person(BaseModel):
    name: str
    age: int = Field(ge=18, le=130)
    height_cm: float = Field(gt=100)
    colour: Colour
    tags: list[str] = Field(min_length=2)
    home: Address
    past: list[Address]
    born: datetime
    parent: Person | None = None
    scores: dict[str, int]
    flag: bool


@pytest.mark.parametrize("model", [Person, Address, Colour])
def test_values_fit_pydantic_schemas(model: Any) -> None:
    schema = model.model_json_schema() if isinstance(model, type) and issubclass(model, BaseModel) else {
        "enum": [c.value for c in model]}
    value = example_value(schema)
    if isinstance(model, type) and issubclass(model, BaseModel):
        model.model_validate(value)
    else:
        assert model(value)


def test_person_value_is_minimal_and_bounded() -> None:
    value = example_value(Person.model_json_schema())
    assert value["age"] == 18 and value["height_cm"] == 101
    assert len(value["tags"]) == 2 and len(value["home"]["street"]) == 12
    assert "parent" not in value  # not required: recursion stops
    assert value["home"]["postcode"] == "tok"  # anyOf [string, null]: the branch that is not null


@pytest.mark.parametrize(("schema", "expected"), [
    ({"type": "integer", "exclusiveMinimum": 5, "multipleOf": 4}, 8),
    ({"type": "integer", "maximum": -3}, -3),
    ({"type": "number", "minimum": 2.5}, 3),
    ({"type": ["null", "boolean"]}, False),
    ({"const": {"a": 1}}, {"a": 1}),
    ({"type": "string", "format": "email", "maxLength": 5}, "tok@e"),
    ({"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "minItems": 2}, [0, "tok"]),
    ({"type": "array", "items": {"type": "integer"}, "maxItems": 0}, []),
    ({"allOf": [{"properties": {"a": {"type": "integer"}}, "required": ["a"]},
                {"properties": {"b": {"type": "boolean"}}, "required": ["b"]}]}, {"a": 0, "b": False}),
    ({"$ref": "#/definitions/x", "definitions": {"x": {"type": "string", "enum": ["only"]}}}, "only"),
    ({}, "tok"),
])
def test_hand_written_schemas(schema: dict[str, Any], expected: Any) -> None:
    assert example_value(schema) == expected


def test_a_self_referencing_schema_ends() -> None:
    schema = {"$ref": "#/$defs/node", "$defs": {"node": {"type": "object", "required": ["children"], "properties": {
        "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}}}
    value = example_value(schema)
    depth = 0
    while value["children"]:
        value, depth = value["children"][0], depth + 1
    assert 0 < depth < 20
