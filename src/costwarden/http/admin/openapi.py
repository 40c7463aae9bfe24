"""The OpenAPI 3.1 document of the admin API, built from the operations' declarations."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from costwarden import __version__
from costwarden.http.admin.api import Operation
from costwarden.http.admin.schemas import ErrorBody, NoBody

REF = "#/components/schemas/{model}"
_PATH_PARAM = re.compile(r"{([^}:]+)")
_ERRORS = {"400": "Bad request: a parameter, body or policy is invalid.",
           "401": "Missing, unknown or revoked admin token.",
           "403": "The token's role may not do this (or not for this department).",
           "404": "No such item."}


def openapi_document(operations: Sequence[Operation[Any, Any]], prefix: str) -> dict[str, Any]:
    """The document; paths are relative to the one server, ``prefix``."""
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorBody, "serialization")]
    models += [(op.response, "serialization") for op in operations]
    models += [(op.body, "validation") for op in operations if op.body is not NoBody]
    refs, schemas = models_json_schema(models, ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, refs)
    return {
        "openapi": "3.1.0",
        "info": {"title": "costwarden admin API", "version": __version__,
                 "description": "Budgets, spend, usage events, alerts, keys, tokens and policy of a costwarden "
                                "gateway. Authenticate with `Authorization: Bearer <admin token>`. Errors use "
                                "OpenAI's shape `{\"error\": {\"message\", \"type\", \"param\", \"code\"}}`."},
        "servers": [{"url": prefix}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {"schemas": schemas.get("$defs", {}),
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "An admin token (tok-...) or the bootstrap "
                                                                     "token of COSTWARDEN_ADMIN_TOKEN."}}},
    }


def _operation(op: Operation[Any, Any], refs: Mapping[tuple[Any, JsonSchemaMode], Any]) -> dict[str, Any]:
    roles = ", ".join(op.roles)
    described: dict[str, Any] = {
        "operationId": f"{op.method.lower()}{_camel(op.path)}",
        "summary": op.summary,
        "description": f"{op.description}\n\nRoles: {roles}.".strip(),
        "x-roles": list(op.roles),
        "parameters": _path_parameters(op.path) + _query_parameters(op.query),
        "responses": {str(op.status): {"description": "OK" if op.status == 200 else "Created",
                                       "content": {"application/json": {"schema": refs[(op.response, "serialization")]},
                                                   **{kind: {"schema": {"type": "string"}} for kind in op.downloads}}}},
    }
    if op.body is not NoBody:
        described["requestBody"] = {"required": False,
                                    "content": {"application/json": {"schema": refs[(op.body, "validation")]}}}
    elif op.raw_body is not None:
        described["requestBody"] = {"required": False, "content": {op.raw_body: {"schema": {"type": "string"}}}}
    error = {"application/json": {"schema": {"$ref": REF.format(model="ErrorBody")}}}
    codes = ["400", "401", "403"] + (["404"] if "{" in op.path else [])
    described["responses"].update({code: {"description": _ERRORS[code], "content": error} for code in codes})
    return described


def _path_parameters(path: str) -> list[dict[str, Any]]:
    return [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PATH_PARAM.findall(path)]


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF)
    required = set(schema.get("required", ()))
    parameters = []
    for name, spec in schema.get("properties", {}).items():
        spec = {k: v for k, v in spec.items() if k != "title"}
        description = spec.pop("description", None)
        parameter = {"name": name, "in": "query", "required": name in required, "schema": spec}
        if description:
            parameter["description"] = description
        parameters.append(parameter)
    return parameters


def _camel(path: str) -> str:
    words = re.findall(r"[A-Za-z0-9]+", path.replace("{", "by_").replace("}", ""))
    return "".join(word[:1].upper() + word[1:] for word in words)
