"""A fast, deterministic imitation of the OpenAI and Anthropic HTTP APIs (streaming included).

Endpoints: ``POST /v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``,
``/v1/responses``, ``/v1/messages`` (and ``/v1/messages/count_tokens``), ``GET /v1/models``
(Anthropic's shape when the request carries ``anthropic-version``). Any non-empty
``Authorization: Bearer`` or ``x-api-key`` is accepted; without one the answer is a 401 in that
provider's error shape. ``GET /mock/stats`` gives the totals served; ``POST /mock/reset`` zeroes them
and forgets the prompt caches and stored responses; ``POST /mock/clock`` with ``{"advance_s": N}``
moves the caches' clock N seconds forward.

Usage contract (the gateway's estimator and tests rely on it):

* ``ceil4(n) = ceil(n / 4)``; "chars" are Python ``str`` characters.
* Chat, responses and messages: input tokens = ``3 + sum(3 + ceil4(chars(block)))`` over the
  blocks: each message (chat ``messages``, Anthropic ``messages``, each Responses ``input`` item,
  or a string ``input`` as one message), plus the system prompt when given (Anthropic
  ``system``, Responses ``instructions``; chat system messages are ordinary messages), plus the
  ``tools`` list when non-empty, serialized as compact JSON (orjson: no whitespace, keys in the
  order given, non-ASCII kept). A block's text is its string content, or the concatenation of
  its parts' ``text`` strings and, recursively, their ``content`` (Anthropic ``tool_result``);
  a ``tool_use`` part counts its ``name`` plus its ``input`` as compact JSON; chat
  ``tool_calls`` and Responses ``function_call`` items count ``name`` plus ``arguments``;
  ``function_call_output`` counts its ``output``. Images and other media count nothing.
* Media parts (``image_url``, ``input_image``, ``file``, ``input_file``, ``input_audio``, Anthropic
  ``image`` and ``document``, at any depth) add ``media_tokens`` each: the directive, else the
  instance's setting (``create_app(media_tokens=...)``, 0 by default). ``count_input_tokens``
  counts text only.
* Stored input (``/v1/responses``): a request naming ``previous_response_id`` adds that response's
  context (its input plus output tokens); one in a ``conversation`` adds the conversation's context
  so far; the ``stored_tokens`` directive replaces either. An unknown ``previous_response_id`` (or
  one stored with ``store: false``) is a 400, as the real API answers.
* Completions and embeddings: ``max(1, ceil4(chars))`` per prompt / input string, summed; a
  token array counts its length (at least 1).
* Output tokens = ``min(wanted, limit)`` where ``wanted`` is 16 (or the ``output_tokens``
  directive) and ``limit`` the smallest of ``max_tokens`` / ``max_completion_tokens`` (chat),
  ``max_tokens`` (completions, messages), ``max_output_tokens`` (responses) given. Each output
  token is the text ``"tok "``; a stream sends one content event per token. When the limit cut
  the output, the finish reason is ``length`` / ``max_tokens`` / ``incomplete``.
* Structured output (module ``output``): a call offering function tools is answered with a call
  of the first (or the forced) tool, unless ``tool_choice`` forbids it or, under ``auto``, the
  conversation ends with a tool's result; otherwise ``json_object`` / ``json_schema`` response
  formats are answered with JSON that fits the schema (module ``schema_value``). Their output is
  the JSON text, one token per 4 characters (streamed as argument or text fragments); the
  ``output_tokens`` directive applies to plain text only.
* Chat ``n`` gives n identical choices; usage and ``/mock/stats`` count every choice's tokens.
* Anthropic extended thinking (``thinking: {type: enabled, budget_tokens}``, at least 1,024 and
  under ``max_tokens``) writes a thinking block of ``min(budget, 32)`` tokens (or the
  ``thinking_tokens`` directive) before the answer; they count as output tokens and against
  ``max_tokens``.
* ``service_tier`` is echoed as OpenAI does (``flex``, ``priority``, ``default``, ``scale``;
  ``auto`` runs as ``default``); Anthropic reports ``standard``.
* Prompt caching (module ``prompt_cache``): Anthropic's ``cache_control`` breakpoints (5 minutes,
  or ``"ttl": "1h"``) write and then read prefixes of at least 1,024 tokens (2,048 for haiku
  models); OpenAI caches prompts of at least 1,024 tokens automatically, reporting their longest
  previously seen prefix in steps of 128. The ``cached`` directive, when given, replaces both.
  OpenAI usage reports ``prompt_tokens`` (or ``input_tokens``) including the cached ones under
  ``*_tokens_details.cached_tokens``; Anthropic reports ``input_tokens`` excluding the reads and
  writes, ``cache_read_input_tokens``, ``cache_creation_input_tokens`` and its split in
  ``cache_creation``.
* ``/mock/stats`` counts input tokens including cached ones and cache writes (the whole prompt),
  with ``cached_input_tokens``, ``cache_write_5m_tokens`` and ``cache_write_1h_tokens`` beside
  them, per model too, for every request answered with usage. A stream cut short (``cut_after``,
  or the client leaving a paced stream) counts its input and only the output tokens actually sent.

Directives, for steering the mock through a gateway: a line ``#mock key=value ...`` in the
last user message's text (the last prompt / input string for completions and embeddings), or
request headers ``x-mock-<key>: value`` (which win). Values are non-negative integers; an unknown
key is a 400. Keys: ``output_tokens`` (capped by the output limit), ``cached``, ``input_tokens``
(replaces the counted input, media and stored input included), ``status`` (answer that 4xx/5xx
with the provider's error body and no usage), ``delay_ms`` (wait before answering), ``cut_after``
(stream N content events, then drop the connection without the final events),
``chunk_delay_ms`` (pause between stream events), ``stored_tokens``, ``media_tokens``,
``thinking_tokens`` (above).
The directive's own text is counted as input like any other text.
"""

from costwarden.mock_upstream.app import MockUpstream, create_app
from costwarden.mock_upstream.server import make_server, serve
from costwarden.mock_upstream.usage import count_input_tokens

__all__ = ["MockUpstream", "count_input_tokens", "create_app", "make_server", "serve"]
