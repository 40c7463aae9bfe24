"""Input token estimation: a conservative upper estimate, made before a call is forwarded.

Guarantee (the fallback rule, used whenever tiktoken's encoding file is not already on disk,
and always for non-OpenAI wires, whose tokenizers tiktoken does not know):

    estimate = 3 per request
             + 4 per message (a system prompt, an instruction text, a prompt string, an
               embedding input and a tool list each count as one message)
             + ceil(utf8_bytes / 3) per text
             + 1,600 per image
             + ceil(json_bytes / 3) per tool/function definition list or other non-text
               structured content (tool calls, tool inputs, files, audio)
             + 1 per token for prompts given as token ids

Since every text has at least as many UTF-8 bytes as characters, this is never below the
project's mock upstream count, ``3 + sum over messages(3 + ceil(chars / 4))``.

With tiktoken (OpenAI wires only), each text counts ``max(tiktoken tokens, ceil(chars / 4))``,
the same per-message and per-request overheads and structured content are added as above, and
the total gets a 5% margin, rounded up.

tiktoken downloads its encoding on first use, which fails or hangs on locked-down networks; it
is only used here when the file is already in the cache directory tiktoken reads (and its
checksum matches, since tiktoken re-downloads a corrupt file).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from costwarden.core.money import ceil_div
from costwarden.providers.jsontext import dumps

PER_REQUEST = 3
PER_MESSAGE = 4
PER_IMAGE = 1_600
TIKTOKEN_MARGIN_PERCENT = 105

# The encodings tiktoken fetches, with the checksums it verifies, in order of preference.
ENCODING_FILES = {
    "o200k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
    "cl100k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
}


def tiktoken_cache_dir(environ: Mapping[str, str]) -> str | None:
    """The directory tiktoken reads its encodings from, by tiktoken's own rule (None: no cache)."""
    if "TIKTOKEN_CACHE_DIR" in environ:
        directory = environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in environ:
        directory = environ["DATA_GYM_CACHE_DIR"]
    else:
        directory = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    return directory or None


def cached_encoding(environ: Mapping[str, str]) -> str | None:
    """The name of the first encoding whose intact file is already cached, without any download."""
    directory = tiktoken_cache_dir(environ)
    if directory is None:
        return None
    for name, (url, sha256) in ENCODING_FILES.items():
        path = os.path.join(directory, hashlib.sha1(url.encode()).hexdigest())
        try:
            with open(path, "rb") as file:
                intact = hashlib.sha256(file.read()).hexdigest() == sha256
        except OSError:
            continue
        if intact:
            return name
    return None


class Encoding(Protocol):
    """What the estimator needs of a tokenizer (a ``tiktoken.Encoding`` is one)."""

    def encode_ordinary(self, text: str) -> list[int]: ...


@dataclass(slots=True)
class InputTally:
    """A request's input sorted into the kinds the estimator prices differently."""

    texts: list[str] = field(default_factory=list)
    messages: int = 0
    images: int = 0
    structured_tokens: int = 0
    token_ids: int = 0

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


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


class TokenEstimator:
    """Counts a tally of input. ``use_tiktoken``: True requires the cached encoding, False never
    uses it, None (auto) uses it when its file is already on disk, checked on first use.
    ``encoding`` supplies a tokenizer already loaded (and implies using it)."""

    def __init__(self, use_tiktoken: bool | None = None, *, encoding: Encoding | None = None) -> None:
        self._resolved = use_tiktoken is False or encoding is not None
        self._encoding: Encoding | None = encoding
        if use_tiktoken and encoding is None:
            self._resolve()
            if self._encoding is None:
                raise ValueError("tiktoken was asked for but no encoding file is cached; "
                                 "it is never downloaded here (see TIKTOKEN_CACHE_DIR)")

    @property
    def uses_tiktoken(self) -> bool:
        """Whether OpenAI-wire texts are counted with tiktoken. In auto mode the first call looks
        for the file and loads the encoding (up to a second): make it at start-up."""
        return self._resolve() is not None

    def _resolve(self) -> Encoding | None:
        if not self._resolved:
            self._resolved = True
            # The same look-up tiktoken makes, so that what it loads is the file checked here.
            name = cached_encoding(os.environ)
            if name is not None:
                import tiktoken  # imported only when its file is known to be on disk

                self._encoding = tiktoken.get_encoding(name)
        return self._encoding

    def estimate(self, tally: InputTally, *, openai_tokenizer: bool = True) -> int:
        """The conservative input token estimate of ``tally`` (see the module docstring)."""
        fixed = (PER_REQUEST + PER_MESSAGE * tally.messages + PER_IMAGE * tally.images
                 + tally.structured_tokens + tally.token_ids)
        encoding = self._resolve() if openai_tokenizer else None
        if encoding is None:
            return fixed + sum(ceil_div(_utf8_len(text), 3) for text in tally.texts)
        texts = sum(max(len(encoding.encode_ordinary(text)), ceil_div(len(text), 4)) for text in tally.texts)
        return ceil_div((fixed + texts) * TIKTOKEN_MARGIN_PERCENT, 100)
