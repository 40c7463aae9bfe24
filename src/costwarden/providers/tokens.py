"""Input token estimation, made before a call is forwarded: an upper estimate to reserve, a
proven lower bound to refuse on, and whether part of the input is out of the gateway's sight.

Upper estimate (what admission reserves):

    estimate = 3 per request
             + 4 per message (a system prompt, an instruction text, a prompt string, an
               embedding input and a tool list each count as one message)
             + per text: max(tokenizer count, ceil(chars / 4)) for OpenAI models, whose
               tokenizers are known (o200k_base or cl100k_base by model family, bundled with
               the ``bpe-openai`` package, never downloaded); ceil(utf8_bytes / 3) for every
               other model (Anthropic, Google, unknown)
             + 1,600 per image the gateway can see (inline data)
             + ceil(json_bytes / 3) per tool/function definition list or other structured content
             + 1 per token for prompts given as token ids

Every text has at least as many UTF-8 bytes as characters, so this is never below the project's
mock upstream count, ``3 + sum over messages(3 + ceil(chars / 4))``.

Lower bound (what ``context_length_exceeded`` is decided on): the tokenizer count of the texts
where the tokenizer is known, ``ceil(utf8_bytes / 128)`` per text elsewhere (no token of
o200k_base or cl100k_base is longer than 128 bytes), plus prompts given as token ids. Overheads,
images and structured content add nothing: only what is certain counts.

Hidden input: a stored conversation, an uploaded file, an image or document fetched by URL, a
server-side tool's results. Its size is unknown here, so such a call is reserved at the model's
whole context window (``InputEstimate.reserve``).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from costwarden.core.money import ceil_div
from costwarden.providers.jsontext import dumps

PER_REQUEST = 3
PER_MESSAGE = 4
PER_IMAGE = 1_600
LONGEST_TOKEN_BYTES = 128  # the longest token of o200k_base and cl100k_base, in UTF-8 bytes
_KNOWN_MODELS = 4096  # model ids whose tokenizer is remembered
# Characters of texts whose token counts are remembered, per tokenizer: a system prompt or a tool
# description comes back with every call, and counting it anew cost more than the rest of the
# estimate. Past the bound the remembered counts are dropped and gathered again.
_REMEMBERED_CHARS = 4_000_000

TextCounter = Callable[[str], int]

# OpenAI model families by id prefix, most specific first ("gpt-4o" before "gpt-4").
_FAMILIES: tuple[tuple[str, str], ...] = (
    *((prefix, "o200k_base") for prefix in (
        "gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-", "gpt-oss", "codex-",
        "computer-use", "omni-moderation", "gpt-realtime", "gpt-audio")),
    *((prefix, "cl100k_base") for prefix in (
        "gpt-4", "gpt-3.5", "text-embedding-3", "text-embedding-ada-002", "davinci-002", "babbage-002")),
)


def encoding_name(model: str) -> str | None:
    """The OpenAI encoding of ``model`` (an id as sent: snapshots, ``openai/`` and ``ft:`` prefixes
    allowed), or None when the model is not an OpenAI model known to this table."""
    name = model.strip().lower().removeprefix("openai/").removeprefix("ft:")
    for prefix, encoding in _FAMILIES:
        if name.startswith(prefix):
            return encoding
    return None


@cache
def bundled_counter(encoding: str) -> TextCounter:
    """A token counter of ``encoding`` from the ``bpe-openai`` wheel, which ships the encoding
    files: nothing is downloaded. Its Rust ``count`` is used rather than ``encode_ordinary``: it
    builds no id list and has no length limit (the Python wrapper refuses 1M characters)."""
    return _bindings().tokenizer_for_encoding(encoding).count  # type: ignore[no-any-return]


@cache
def _bindings() -> Any:
    """bpe-openai's compiled module, loaded from its file. Importing the ``bpe_openai`` package
    instead would first decode every encoding it ships in Python (3.5 s here, unused by the
    compiled counter, which loads its own copy in 0.4 s)."""
    package = importlib.util.find_spec("bpe_openai")
    if package is None or not package.submodule_search_locations:
        raise ImportError("bpe-openai is not installed; it is a dependency of costwarden")
    for folder in package.submodule_search_locations:
        for name in sorted(os.listdir(folder)):
            if name.startswith("_bindings.") and name.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
                spec = importlib.util.spec_from_file_location("bpe_openai._bindings", os.path.join(folder, name))
                if spec is not None and spec.loader is not None:
                    module = importlib.util.module_from_spec(spec)
                    spec.loader.exec_module(module)
                    return module
    with warnings.catch_warnings():  # another layout: the package's own way (it uses a deprecated call)
        warnings.simplefilter("ignore", DeprecationWarning)
        return importlib.import_module("bpe_openai._bindings")


# Not frozen: every call makes one, and a frozen dataclass sets each field through
# object.__setattr__ (see core/events.py). Never changed once made; nothing hashes one.
@dataclass(slots=True)
class InputEstimate:
    """What admission knows of a call's input before it is sent."""

    tokens: int  # upper estimate of the input the gateway can see
    floor: int  # proven lower bound of the input that must fit the model's context window
    hidden: tuple[str, ...] = ()  # what the upstream adds that the gateway cannot see, e.g. "previous_response_id"
    per_input: bool = False  # the window bounds each input (embeddings), not their sum

    def reserve(self, context_window: int) -> int:
        """The input tokens to reserve for a model with ``context_window``: all of it when part
        of the input is hidden; otherwise the estimate, never above the window (a longer input is
        refused by the upstream, uncharged)."""
        if self.per_input:
            return self.tokens
        if self.hidden:
            return context_window  # visible and hidden input together fit the window, or are refused
        return min(self.tokens, context_window)

    def certainly_exceeds(self, context_window: int) -> bool:
        """Whether the input is surely longer than ``context_window`` (judged on the lower bound)."""
        return self.floor > context_window


@dataclass(slots=True)
class InputTally:
    """A request's input sorted into the kinds the estimator prices differently."""

    texts: list[str] = field(default_factory=list)
    messages: int = 0
    images: int = 0
    structured_tokens: int = 0
    token_ids: int = 0
    hidden: list[str] = field(default_factory=list)

    def text(self, value: object) -> None:
        """A text; a non-string value is counted as structured content."""
        if isinstance(value, str):
            self.texts.append(value)
        elif value is not None:
            self.structured(value)

    def message(self) -> None:
        self.messages += 1

    def image(self) -> None:
        self.images += 1

    def structured(self, value: object) -> None:
        """Non-text content, counted by its compact JSON bytes / 3."""
        if value is not None:
            self.structured_tokens += ceil_div(len(dumps(value)), 3)

    def tokens(self, ids: list[object]) -> None:
        """A prompt given as token ids: each counts one token."""
        self.token_ids += len(ids)

    def hide(self, what: str) -> None:
        """Input the upstream adds that is not in the request (``what`` names it, e.g. "file_id")."""
        if what not in self.hidden:
            self.hidden.append(what)


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


class TokenEstimator:
    """Estimates a tally of input for a model. ``use_tokenizer=False`` applies the byte rule to
    every model; ``counter`` replaces the bundled tokenizers (every OpenAI model then uses it)."""

    def __init__(self, use_tokenizer: bool = True, *, counter: TextCounter | None = None) -> None:
        self._use_tokenizer = use_tokenizer
        self._counter = counter
        # counter_for's answers by model id: a call's model is looked up once per process, not
        # matched against the family table on every call (bounded: ids come from clients too)
        self._counters: dict[str, TextCounter | None] = {}
        self._counts: dict[TextCounter, _Counts] = {}  # texts' counts by tokenizer (``_REMEMBERED_CHARS``)

    @property
    def uses_tokenizer(self) -> bool:
        """Whether OpenAI models' texts are counted with their real tokenizer."""
        return self._use_tokenizer

    def warm_up(self) -> None:
        """Load the bundled encodings now (about a second), rather than on the first call."""
        if self._use_tokenizer and self._counter is None:
            for _, encoding in _FAMILIES:
                bundled_counter(encoding)

    def counter_for(self, model: str | None) -> TextCounter | None:
        """The tokenizer that counts ``model``'s texts, None where the byte rule applies."""
        if not self._use_tokenizer or model is None:
            return None
        try:
            return self._counters[model]
        except KeyError:
            pass
        encoding = encoding_name(model)
        counter = None if encoding is None else self._counter or bundled_counter(encoding)
        if len(self._counters) < _KNOWN_MODELS:
            self._counters[model] = counter
        return counter

    def estimate(self, tally: InputTally, *, model: str | None) -> InputEstimate:
        """The estimate of ``tally`` for ``model`` (see the module docstring)."""
        fixed = (PER_REQUEST + PER_MESSAGE * tally.messages + PER_IMAGE * tally.images
                 + tally.structured_tokens + tally.token_ids)
        counter = self.counter_for(model)
        if counter is None:
            sizes = [_utf8_len(text) for text in tally.texts]
            upper = sum(ceil_div(size, 3) for size in sizes)
            floor = sum(ceil_div(size, LONGEST_TOKEN_BYTES) for size in sizes)
        else:
            counts = self._counts.get(counter)
            if counts is None:
                counts = self._counts[counter] = _Counts(counter)
            upper = floor = 0
            for text in tally.texts:
                count = counts.count(text)
                upper += max(count, ceil_div(len(text), 4))
                floor += count
        return InputEstimate(fixed + upper, floor + tally.token_ids, tuple(tally.hidden))


class _Counts:
    """A tokenizer's counts of the texts it has seen, up to ``_REMEMBERED_CHARS`` characters."""

    __slots__ = ("_chars", "_counter", "_known")

    def __init__(self, counter: TextCounter) -> None:
        self._counter = counter
        self._known: dict[str, int] = {}
        self._chars = 0

    def count(self, text: str) -> int:
        known = self._known.get(text)
        if known is not None:
            return known
        count = self._counter(text)
        if len(text) > _REMEMBERED_CHARS:
            return count
        self._chars += len(text)
        if self._chars > _REMEMBERED_CHARS:
            self._known.clear()
            self._chars = len(text)
        self._known[text] = count
        return count
