"""Peak memory of one large upstream call through the pooled client, in a process of its own.

``python body_probe.py URL MODE MB`` prints one JSON line: ``bytes`` received (or sent, for the
``request`` mode), ``growth_kb`` (the process's peak RSS after the call minus its peak before it)
and ``body_kb``. Modes: ``unary`` (a whole answer of MB MiB), ``stream`` (a streamed answer of
MB MiB, consumed as it arrives), ``request`` (a request body of MB MiB). A process of its own,
because peak RSS only ever grows: measured in the test process it would show earlier tests.
"""

from __future__ import annotations

import asyncio
import json
import sys
from decimal import Decimal
from pathlib import Path

import orjson

from costwarden.core.kinds import UpstreamType
from costwarden.core.policy import Upstream
from costwarden.providers import UpstreamPool

MIB = 1024 * 1024
STREAM_FRAME_FLOOR = 150  # bytes per streamed token event are at least this


def chat(text: str, *, tokens: int, stream: bool) -> bytes:
    """A chat request for ``tokens`` output tokens."""
    body = {"model": "gpt-4o-mini", "stream": stream,
            "messages": [{"role": "user", "content": f"{text}\n#mock output_tokens={tokens}"}]}
    return orjson.dumps(body)


def request_for(mode: str, mib: int) -> bytes:
    """The request of a mode and size: the answer's size is set by its output tokens."""
    if mode == "unary":
        return chat("big", tokens=mib * MIB // 4, stream=False)  # each output token is 4 characters
    if mode == "stream":
        return chat("big", tokens=mib * MIB // STREAM_FRAME_FLOOR, stream=True)
    return chat("x" * (mib * MIB), tokens=1, stream=False)


async def call(pool: UpstreamPool, body: bytes, *, stream: bool) -> int:
    """Make one call; the bytes of its answer."""
    if not stream:
        reply = await pool.post("mock", "/v1/chat/completions", body, {})
        assert reply.status == 200, reply.body[:200]
        return len(reply.body)
    received = 0
    tail = b""
    async with pool.stream("mock", "/v1/chat/completions", body, {}) as streaming:
        assert streaming.status == 200
        async for chunk in streaming.chunks:
            received += len(chunk)
            tail = (tail + chunk)[-64:]
    assert tail.endswith(b"data: [DONE]\n\n")
    return received


def peak_kb() -> int:
    """The process's peak resident set so far, in KiB: Linux's VmHWM. (``ru_maxrss`` would do but
    for keeping, across exec, the peak of the process that started this one.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


async def probe(url: str, mode: str, mib: int) -> dict[str, int]:
    upstream = Upstream(name="mock", type=UpstreamType.OPENAI, base_url=url + "/v1", timeout_s=Decimal(120))
    pool = UpstreamPool({"mock": upstream}, {"mock": "sk-test"})
    try:
        await call(pool, chat("warm", tokens=4, stream=False), stream=False)  # every code path once
        await call(pool, chat("warm", tokens=4, stream=True), stream=True)
        body = request_for(mode, mib)  # the caller's own request is not the client's memory
        before = peak_kb()
        received = await call(pool, body, stream=mode == "stream")
        after = peak_kb()
    finally:
        await pool.aclose()
    moved = len(body) if mode == "request" else received
    return {"bytes": moved, "body_kb": moved // 1024, "growth_kb": after - before}


def main() -> None:
    url, mode, mib = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print(json.dumps(asyncio.run(probe(url, mode, mib))))


if __name__ == "__main__":
    main()
