"""YAML text to plain Python values, keeping the line of every node.

The file is composed into a node tree (never constructed by PyYAML), then walked here so that:
numbers become exact ``Decimal`` values built from their source text (a YAML float never passes
through a binary float); mapping keys stay text (``NO:`` is a department, not ``False``); every
key and list item records its 1-based line under its path; duplicate keys are reported.
"""

from __future__ import annotations

import os
import pathlib
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from costwarden.policy.problems import REPORTED, Path, Problem

_TAG = "tag:yaml.org,2002:"
_INT, _FLOAT, _BOOL, _NULL, _MERGE = (_TAG + name for name in ("int", "float", "bool", "null", "merge"))
_TEXT_TAGS = {_TAG + "str", _TAG + "timestamp"}
_DECIMAL_INT = re.compile(r"[-+]?[0-9][0-9_]*")
# PyYAML (YAML 1.1) reads 1e-6 or 2E3 as text; plain scalars of that shape are numbers here.
_EXPONENT = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+")
_MAX_NODES = 200_000  # bounds alias expansion ("billion laughs")
# PyYAML composes and we convert recursively: without a bound, a hostile document of a few KB
# ([[[[...) exhausts the interpreter's stack. Real policies nest about 6 levels.
MAX_DEPTH = 64


class Number(Decimal):
    """A YAML number: an exact Decimal that remembers its source text (for codes like ``0041``)."""

    source: str


class YamlSyntaxError(Exception):
    """The text is not well-formed YAML."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(f"{message} (line {line})")
        self.message = message
        self.line = line


@dataclass
class Document:
    """Plain values (dict, list, str, Number, bool, None; REPORTED where a value was refused),
    the line of each path, and the problems found while reading."""

    data: Any
    lines: dict[Path, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


class _BoundedLoader(yaml.SafeLoader):
    """A SafeLoader that refuses nesting deeper than MAX_DEPTH before its recursion gets there."""

    _depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YamlSyntaxError(_too_deep(), int(self.peek_event().start_mark.line) + 1)  # type: ignore[no-untyped-call]
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _too_deep() -> str:
    return f"nesting deeper than {MAX_DEPTH} levels (a policy needs about 6)"


def parse_yaml(text: str) -> Document:
    """Compose ``text`` and convert it; raises YamlSyntaxError for malformed YAML."""
    try:
        root = yaml.compose(text, Loader=_BoundedLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "malformed YAML"
        raise YamlSyntaxError(problem, mark.line + 1 if mark else 1) from exc
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(str(exc), 1) from exc
    document = Document(data=None)
    if root is not None:
        document.data = _Converter(document).convert(root, ())
    return document


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


class _Converter:
    def __init__(self, document: Document) -> None:
        self._doc = document
        self._active: set[int] = set()
        self._count = 0

    def convert(self, node: Node, path: Path) -> Any:
        self._count += 1
        if self._count > _MAX_NODES:
            raise YamlSyntaxError("the document is too large (check its aliases)", _line(node))
        if len(path) > MAX_DEPTH:  # aliases nest one anchored tree inside another
            raise YamlSyntaxError(_too_deep(), _line(node))
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        if id(node) in self._active:
            self._problem(path, "an alias refers to itself", node)
            return REPORTED
        self._active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
            if isinstance(node, SequenceNode):
                return self._sequence(node, path)
            return None
        finally:
            self._active.discard(id(node))

    def _problem(self, path: Path, message: str, node: Node) -> None:
        self._doc.problems.append(Problem(path, message, _line(node)))

    def _mapping(self, node: MappingNode, path: Path) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for source in sources:
                    if not isinstance(source, MappingNode):
                        self._problem(path, "'<<' must merge a mapping", source)
                        continue
                    for key, value in (self.convert(source, path) or {}).items():
                        merged.setdefault(key, value)
        explicit: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                continue
            if not isinstance(key_node, ScalarNode):
                self._problem(path, "a key must be plain text, not a list or mapping", key_node)
                continue
            key = str(key_node.value)
            if key in explicit:
                self._problem((*path, key), f"duplicate key {key!r}", key_node)
                continue
            self._doc.lines[(*path, key)] = _line(key_node)
            explicit[key] = self.convert(value_node, (*path, key))
        return {**merged, **explicit}

    def _sequence(self, node: SequenceNode, path: Path) -> list[Any]:
        items = []
        for index, item in enumerate(node.value):
            self._doc.lines[(*path, index)] = _line(item)
            items.append(self.convert(item, (*path, index)))
        return items

    def _scalar(self, node: ScalarNode, path: Path) -> Any:
        text = str(node.value)
        tag = str(node.tag)
        if tag in (_INT, _FLOAT):
            return self._number(node, path, text)
        if tag == _BOOL:
            return text.lower() in ("true", "yes", "on", "y")
        if tag == _NULL:
            return None
        if tag in _TEXT_TAGS:
            if node.style is None and _EXPONENT.fullmatch(text):
                return _make_number(text, text)
            return text
        self._problem(path, f"unsupported YAML tag {tag}", node)
        return REPORTED

    def _number(self, node: ScalarNode, path: Path, text: str) -> Any:
        clean = text.replace("_", "")
        if clean.lower().lstrip("+-") in (".inf", ".nan"):
            self._problem(path, f"{text} is not a finite number", node)
            return REPORTED
        try:
            if node.tag == _INT and not _DECIMAL_INT.fullmatch(text):
                return _make_number(str(int(clean, 0)), text)  # 0x1F, 0o17, 0b101
            return _make_number(clean, text)
        except (ValueError, InvalidOperation):
            return text  # YAML 1.1 oddities such as sexagesimal 1:30 stay text


def _make_number(value: str, source: str) -> Number:
    number = Number(value)
    number.source = source
    return number


class UnreadableFile(Exception):
    """A configuration file that cannot be read as text; the message says why."""


def read_text(path: str | os.PathLike[str], what: str) -> str:
    """The UTF-8 text of a configuration file (a BOM is dropped), or UnreadableFile naming the problem."""
    name = os.fspath(path)
    try:
        return pathlib.Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UnreadableFile(f"file not found: {name}") from None
    except IsADirectoryError:
        raise UnreadableFile(f"{name} is a directory, not a {what}") from None
    except UnicodeDecodeError as exc:
        raise UnreadableFile(f"not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise UnreadableFile(f"cannot read {name}: {exc.strerror}") from None
