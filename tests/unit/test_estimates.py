"""Input estimates: the bundled tokenizers, lower bounds, hidden input, embeddings limits, and
usage that cannot be trusted."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Any

import pytest

from costwarden.errors import ContextLengthExceeded, InvalidRequest
from costwarden.providers import ENDPOINTS, TokenEstimator, Usage, build_endpoints
from costwarden.providers.taps import AnthropicTap, OpenAIChatTap
from costwarden.providers.tokens import LONGEST_TOKEN_BYTES, InputEstimate, bundled_counter, encoding_name

CHAT, EMBEDDINGS, RESPONSES, MESSAGES = (
    ENDPOINTS[p] for p in ("/v1/chat/completions", "/v1/embeddings", "/v1/responses", "/v1/messages"))
FALLBACK = build_endpoints(TokenEstimator(use_tokenizer=False))
DOCS = Path(__file__).resolve().parents[2] / "docs"
TokenEstimator().warm_up()


def english(size: int) -> str:
    """``size`` characters of English prose: the project's own documentation, repeated."""
    text = "\n\n".join(path.read_text(encoding="utf-8") for path in sorted(DOCS.glob("*.md")))
    return (text * (size // len(text) + 1))[:size]


def user(text: str, model: str = "gpt-4o-mini") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


# -- the tokenizer --------------------------------------------------------------------------------

def test_model_families_pick_their_encoding() -> None:
    for model in ("gpt-4o", "gpt-4o-mini-2024-07-18", "openai/gpt-4.1", "o3-mini", "gpt-5", "ft:gpt-4o-mini:acme::x"):
        assert encoding_name(model) == "o200k_base", model
    for model in ("gpt-4-turbo", "gpt-4-0613", "gpt-3.5-turbo", "text-embedding-3-small", "text-embedding-ada-002"):
        assert encoding_name(model) == "cl100k_base", model
    for model in ("claude-sonnet-4-5", "gemini-2.5-pro", "my-local-llm", "m"):
        assert encoding_name(model) is None, model


def _tiktoken_from_the_bundled_files(name: str, cache: Path) -> Any:
    """tiktoken itself, on the files bpe-openai ships: tiktoken checks them against the SHA-256
    it expects of OpenAI's published files, so equal counts mean the same encoding."""
    urls = {"o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
            "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"}
    spec = importlib.util.find_spec("bpe_openai")
    assert spec is not None and spec.submodule_search_locations
    data = Path(next(iter(spec.submodule_search_locations))) / "data" / f"{name}.tiktoken.gz"
    (cache / hashlib.sha1(urls[name].encode()).hexdigest()).write_bytes(gzip.decompress(data.read_bytes()))
    import tiktoken
    import tiktoken.registry

    tiktoken.registry.ENCODINGS.pop(name, None)
    return tiktoken.get_encoding(name)


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_bundled_counts_equal_tiktoken(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    reference = _tiktoken_from_the_bundled_files(name, tmp_path)
    count = bundled_counter(name)
    samples = [english(45_000), "", "hello world", "日本語のテキストと中文字符。" * 50, "def f(x):\n    return x ** 2\n" * 40,
               "🙂👍🏽 emoji, ümlaut, naïve café " * 30, " " * 300 + "x" * 700, "1234567890" * 50]
    for text in samples:
        assert count(text) == len(reference.encode_ordinary(text)), text[:40]


def test_a_495_kb_english_prompt_fits_gpt_4o_mini() -> None:
    """Refused before as 165,007 > 128,000 by the byte rule; its real count is far below."""
    body = user(english(495_000))
    estimate = CHAT.estimate(body)
    assert 100_000 < estimate.floor < 128_000
    assert not estimate.certainly_exceeds(128_000)
    assert estimate.reserve(128_000) <= 128_000
    byte_rule = FALLBACK["/v1/chat/completions"].estimate(body)
    assert byte_rule.tokens > 160_000  # what the byte rule alone would hold against the window
    assert not byte_rule.certainly_exceeds(128_000)  # and its lower bound does not refuse either


def test_lower_bounds() -> None:
    text = "word " * 200_000  # 1 MB, 200k tokens: certainly too long for gpt-4o-mini
    assert CHAT.estimate(user(text)).floor == 200_001  # the trailing space is a token of its own
    assert CHAT.estimate(user(text)).certainly_exceeds(128_000)
    # Without a known tokenizer nothing shorter than 128 bytes a token is certain.
    claude = MESSAGES.estimate({"model": "claude-sonnet-4-5", "max_tokens": 5, **user(text, "claude-sonnet-4-5")})
    assert claude.floor == -(-len(text) // LONGEST_TOKEN_BYTES)
    assert claude.tokens > 200_000 and not claude.certainly_exceeds(200_000)
    huge = MESSAGES.estimate({"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": "x" * 30_000_000}]})
    assert huge.certainly_exceeds(200_000)
    # Prompts given as token ids are counted exactly, in both bounds.
    assert ENDPOINTS["/v1/completions"].estimate({"model": "gpt-3.5-turbo-instruct", "prompt": [1] * 500}).floor == 500


def test_reserve_is_the_upper_estimate_capped_at_the_window() -> None:
    assert InputEstimate(tokens=150_000, floor=120_000).reserve(128_000) == 128_000
    assert InputEstimate(tokens=1_000, floor=900).reserve(128_000) == 1_000
    assert not InputEstimate(tokens=150_000, floor=120_000).certainly_exceeds(128_000)
    assert InputEstimate(tokens=150_000, floor=130_000).certainly_exceeds(128_000)


# -- hidden input ----------------------------------------------------------------------------------

IMAGE_URL = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
IMAGE_DATA = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}


@pytest.mark.parametrize(("path", "body", "hidden"), [
    ("/v1/responses", {"model": "gpt-4o", "input": "and then?", "previous_response_id": "resp_1"},
     ("previous_response_id",)),
    ("/v1/responses", {"model": "gpt-4o", "input": "hi", "conversation": "conv_1"}, ("conversation",)),
    ("/v1/responses", {"model": "gpt-4o", "prompt": {"id": "pmpt_1"}}, ("prompt",)),
    ("/v1/responses", {"model": "gpt-4o", "input": [{"role": "user", "content": [
        {"type": "input_file", "file_id": "file-1"}, {"type": "input_text", "text": "summarize"}]}]},
     ("input_file",)),
    ("/v1/responses", {"model": "gpt-4o", "input": [{"role": "user", "content": [
        {"type": "input_image", "image_url": "https://example.com/a.png"}]}]}, ("image_url",)),
    ("/v1/responses", {"model": "gpt-4o", "input": [{"role": "user", "content": [
        {"type": "input_image", "file_id": "file-2"}]}]}, ("image_file",)),
    ("/v1/responses", {"model": "gpt-4o", "input": "news?", "tools": [{"type": "web_search_preview"}]},
     ("tool:web_search_preview",)),
    ("/v1/chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": [IMAGE_URL]}]},
     ("image_url",)),
    ("/v1/chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": [
        {"type": "file", "file": {"file_id": "file-3"}}]}]}, ("file",)),
    ("/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 9, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]}]}, ("image:url",)),
    ("/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 9, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}]}]},
     ("document:url",)),
    ("/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 9, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "file", "file_id": "file_4"}}]}]}, ("document:file",)),
    ("/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 9, "messages": [{"role": "user", "content": "q"}],
                      "tools": [{"type": "web_search_20250305", "name": "web_search"}]},
     ("tool:web_search_20250305",)),
])
def test_hidden_input_reserves_the_whole_window(path: str, body: dict[str, Any], hidden: tuple[str, ...]) -> None:
    estimate = ENDPOINTS[path].estimate(body)
    assert estimate.hidden == hidden
    assert estimate.reserve(128_000) == 128_000
    assert not estimate.certainly_exceeds(128_000)


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": [IMAGE_DATA]}]}),
    ("/v1/chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],
                              "tools": [{"type": "function", "function": {"name": "f"}}]}),
    ("/v1/responses", {"model": "gpt-4o", "input": "hi", "tools": [{"type": "function", "name": "f"}]}),
    ("/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 9, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain text"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}]}),
])
def test_visible_input_is_not_hidden(path: str, body: dict[str, Any]) -> None:
    estimate = ENDPOINTS[path].estimate(body)
    assert estimate.hidden == ()
    assert estimate.reserve(128_000) == estimate.tokens < 5_000


# -- embeddings ------------------------------------------------------------------------------------

def embed(inputs: Any, model: str = "text-embedding-3-small") -> InputEstimate:
    body = {"model": model, "input": inputs}
    EMBEDDINGS.validate(body)
    return EMBEDDINGS.estimate(body)


def test_embedding_limits_are_per_input_and_per_request() -> None:
    many = embed(["hello world"] * 2_048)
    assert many.floor == 2 and many.per_input and many.reserve(8_191) == many.tokens > 8_191
    chunky = embed([english(20_000)] * 25)  # about 4,800 tokens each, 120k in all
    assert 4_000 < chunky.floor < 8_192 and chunky.tokens > 100_000
    with pytest.raises(InvalidRequest, match="at most 2,048 can be embedded"):
        embed(["hello"] * 2_049)
    with pytest.raises(ContextLengthExceeded, match=r"input\[1\]: has 9,001 tokens; .* at most 8,192 tokens per "
                                                    r"input\. Split this text") as refused:
        embed(["short", "word " * 9_000])
    assert refused.value.param == "input[1]"
    with pytest.raises(InvalidRequest, match="at least 320,040 tokens in all; one request embeds at most 300,000"):
        embed(["word " * 8_000] * 40)
    assert embed([1] * 8_000).floor == 8_000  # one input of token ids


# -- usage that cannot be trusted ---------------------------------------------------------------------

@pytest.mark.parametrize("bad", [-5, "12", 3.5, True, [1], {"n": 1}])
def test_malformed_usage_is_flagged(bad: object) -> None:
    assert CHAT.usage_from_response({"usage": {"prompt_tokens": bad, "completion_tokens": 4}}).malformed  # type: ignore[union-attr]
    assert CHAT.usage_from_response(  # type: ignore[union-attr]
        {"usage": {"prompt_tokens": 5, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": bad}}}
    ).malformed
    assert RESPONSES.usage_from_response({"usage": {"input_tokens": 9, "output_tokens": bad}}).malformed  # type: ignore[union-attr]
    assert MESSAGES.usage_from_response(  # type: ignore[union-attr]
        {"usage": {"input_tokens": 9, "cache_read_input_tokens": bad, "output_tokens": 1}}).malformed


def test_missing_counts_are_not_malformed() -> None:
    assert CHAT.usage_from_response({"usage": {"prompt_tokens": 7}}) == Usage(7, 0, 0)
    assert CHAT.usage_from_response({"usage": {"prompt_tokens": 7, "prompt_tokens_details": None}}) == Usage(7, 0, 0)
    assert MESSAGES.usage_from_response({"usage": {"input_tokens": 7, "output_tokens": 0,
                                                   "cache_read_input_tokens": None}}) == Usage(7, 0, 0)


def test_streams_flag_malformed_usage() -> None:
    tap = OpenAIChatTap(client_wants_usage=True, usage_extra=lambda usage: {})
    tap.feed(b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
             b'data: {"choices":[],"usage":{"prompt_tokens":-3,"completion_tokens":"2"}}\n\ndata: [DONE]\n\n')
    assert tap.usage is not None and tap.usage.malformed
    anthropic = AnthropicTap(usage_extra=lambda usage: {})
    anthropic.feed(b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":5}}}\n\n'
                   b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":-1}}\n\n')
    assert anthropic.usage is not None and anthropic.usage.malformed
    clean = AnthropicTap(usage_extra=lambda usage: {})
    clean.feed(b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":5}}}\n\n')
    assert clean.usage == Usage(5, 0, 0)


def test_module_loads_the_compiled_counter_only() -> None:
    """The fast path loads bpe-openai's compiled module without its Python package (see tokens)."""
    spec = importlib.util.find_spec("bpe_openai")
    assert spec is not None and spec.submodule_search_locations
    assert any(name.startswith("_bindings.") for folder in spec.submodule_search_locations
               for name in os.listdir(folder))
    assert bundled_counter("o200k_base")("hello world") == 2
