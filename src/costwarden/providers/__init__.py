"""The upstream side of the gateway: each endpoint's wire format, token estimation, streaming
usage capture, and one pooled HTTP client for every upstream.

``ENDPOINTS`` maps each proxied path to its ``Endpoint``; they share one ``TokenEstimator``, which
counts OpenAI models with their bundled tokenizers (loaded on first use, or by ``warm_up()``).
``build_endpoints`` makes a set with another estimator.
"""

from __future__ import annotations

from costwarden.providers.anthropic import Messages
from costwarden.providers.base import Endpoint, Prepared
from costwarden.providers.openai import ChatCompletions, Completions, Embeddings, Responses
from costwarden.providers.pool import Reply, StreamingReply, UpstreamPool
from costwarden.providers.taps import StreamTap, UsageExtra
from costwarden.providers.tokens import InputEstimate, InputTally, TokenEstimator
from costwarden.providers.usage import Usage


def build_endpoints(estimator: TokenEstimator) -> dict[str, Endpoint]:
    """One instance of every endpoint, keyed by path, sharing ``estimator``."""
    endpoints: list[Endpoint] = [
        ChatCompletions(estimator),
        Completions(estimator),
        Embeddings(estimator),
        Responses(estimator),
        Messages(estimator),
    ]
    return {endpoint.path: endpoint for endpoint in endpoints}


ENDPOINTS: dict[str, Endpoint] = build_endpoints(TokenEstimator())

__all__ = [
    "ENDPOINTS",
    "Endpoint",
    "InputEstimate",
    "InputTally",
    "Prepared",
    "Reply",
    "StreamTap",
    "StreamingReply",
    "TokenEstimator",
    "UpstreamPool",
    "Usage",
    "UsageExtra",
    "build_endpoints",
]
