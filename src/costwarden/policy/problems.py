"""Problems found in a policy file, each with its YAML path and line.

Validation never stops at the first mistake: every stage adds to one ``Problems`` list, and the
loader refuses the file with all of them (``departments.HR.budgets[0].limit: must be > 0 (line
31)``). Pydantic's errors are translated here into the same shape and wording.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

Path = tuple[str | int, ...]
SpecT = TypeVar("SpecT", bound=BaseModel)


def format_path(path: Path) -> str:
    """``("departments", "HR", "budgets", 0)`` -> ``departments.HR.budgets[0]``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "(top level)"


def describe(value: object) -> str:
    """A short, YAML-flavoured description of a value for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal | int):
        return f"the number {value}"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


class Reported:
    """Stands in for a YAML value that was already reported (an unsupported tag, say), so that
    validators' complaints about it are not reported a second time."""

    def __repr__(self) -> str:
        return "<reported>"


REPORTED = Reported()


class FieldProblem(ValueError):
    """Raised by a model validator about one of its fields, so that the path names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class Problem:
    path: Path
    message: str
    line: int

    def __str__(self) -> str:
        return f"{format_path(self.path)}: {self.message} (line {self.line})"


class Problems:
    """Collects problems; looks lines up in the document's path -> line map."""

    def __init__(self, lines: Mapping[Path, int] | None = None) -> None:
        self._lines: Mapping[Path, int] = lines or {}
        self._items: list[Problem] = []

    def __bool__(self) -> bool:
        return bool(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def line_of(self, path: Path) -> int:
        """The line of ``path``, or of its closest ancestor present in the file."""
        for end in range(len(path), 0, -1):
            line = self._lines.get(path[:end])
            if line is not None:
                return line
        return 1

    def add(self, path: Path, message: str, line: int | None = None) -> None:
        self._items.append(Problem(path, message, line if line is not None else self.line_of(path)))

    def add_validation(self, error: ValidationError, prefix: Path, root: type[BaseModel]) -> None:
        """Translate every error pydantic found while validating ``root`` at ``prefix``."""
        for detail in error.errors():
            if isinstance(detail.get("input"), Reported):
                continue
            loc = tuple(part for part in detail["loc"] if part != "[key]")
            cause = (detail.get("ctx") or {}).get("error")
            if isinstance(cause, FieldProblem):
                loc = (*loc, cause.field)
            if detail["type"] == "extra_forbidden":
                allowed = ", ".join(allowed_keys(root, loc[:-1]))
                self.add(prefix + loc[:-1], f"unknown key {loc[-1]!r}; allowed keys: {allowed}",
                         self.line_of(prefix + loc))
            else:
                self.add(prefix + loc, _message(detail))

    def validate(self, spec: type[SpecT], value: object, prefix: Path) -> SpecT | None:
        """Validate ``value`` (found at ``prefix``) as ``spec``; None, with problems added, if invalid."""
        try:
            return spec.model_validate(value)
        except ValidationError as exc:
            self.add_validation(exc, prefix, spec)
            return None

    def messages(self) -> list[str]:
        """Every problem once, in file order."""
        unique = dict.fromkeys(sorted(self._items, key=lambda p: (p.line, format_path(p.path))))
        return [str(problem) for problem in unique]


def _message(detail: ErrorDetails) -> str:
    kind, value = detail["type"], detail.get("input")
    ctx = detail.get("ctx") or {}
    if kind == "missing":
        return "is required"
    if kind == "value_error":
        return str(ctx.get("error", detail["msg"]))
    if kind == "string_type":
        return f"must be text (got {describe(value)})"
    if kind == "bool_type":
        return f"must be true or false (got {describe(value)})"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be a mapping (got {describe(value)})"
    if kind in ("list_type", "tuple_type"):
        return f"must be a list (got {describe(value)})"
    if kind == "literal_error":
        return f"must be {ctx.get('expected', 'one of the allowed values')} (got {describe(value)})"
    return str(detail["msg"])


def allowed_keys(root: type[BaseModel], loc: Path) -> list[str]:
    """The field names of the schema model found at ``loc`` below ``root``."""
    current: Any = root
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return []
            current = field.annotation
        elif get_origin(current) in (list, dict):
            current = get_args(current)[-1]
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    """Strip ``Annotated[...]`` and ``X | None`` down to the inner type."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin is Union or origin is types.UnionType:
            members = [arg for arg in get_args(annotation) if arg is not type(None)]
            annotation = members[0]
        else:
            return annotation
