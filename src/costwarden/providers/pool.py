"""One pooled HTTP client for every upstream.

Requests go through ``http1``, a lean keep-alive HTTP/1.1 client. By measurement on the mock
upstream, small JSON POSTs cost about 30 us of client CPU each with it against about 100 us with
aiohttp, and about 700 us with httpx; aiohttp was used until the gateway's throughput on one
core came down to these microseconds.

A call is retried exactly once, and only when its connection failed before any byte of the
request was sent (refused, DNS, TLS handshake, connect timeout): anything later may have reached
the upstream, which could then charge twice.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from costwarden import __version__
from costwarden.core.policy import Upstream
from costwarden.errors import UpstreamError, UpstreamTimeout
from costwarden.providers.http1 import (
    CallFailed,
    ConnectFailed,
    Connection,
    ConnectionPool,
    Origin,
    ReadTimeout,
    decode_body,
    decoded_chunks,
)

CONNECT_TIMEOUT_S = 5.0
DEFAULT_ANTHROPIC_VERSION = "2023-06-01"
# Client headers that reach the upstream; everything else (the client's own key first) stays here.
FORWARDED = {"openai": ("openai-beta",), "anthropic": ("anthropic-version", "anthropic-beta")}
# Answer headers that described the bytes on the wire, not the (decoded) body handed out.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-encoding", "content-length"})


# Not frozen: every call makes one, and a frozen dataclass sets each field through
# object.__setattr__ (see core/events.py). Never changed once made; nothing hashes one (its headers are a dict).
@dataclass(slots=True)
class Reply:
    """A complete upstream answer. Header names are lower-case."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(slots=True)  # not frozen: see Reply
class StreamingReply:
    """An upstream answer whose body is still arriving."""

    status: int
    headers: Mapping[str, str]
    chunks: AsyncIterator[bytes]


@dataclass(frozen=True, slots=True)
class _Target:
    upstream: Upstream
    head: bytes  # the header lines every request to this upstream carries
    read_timeout_s: float


@dataclass(frozen=True, slots=True)
class _Route:
    origin: Origin
    request_line: bytes  # b"POST /v1/chat/completions HTTP/1.1\r\n"


def join_url(upstream: Upstream, path: str) -> str:
    """``/v1/chat/completions`` on an OpenAI-type base ending in /v1, or ``/v1/messages`` on a bare
    Anthropic-type base."""
    base = upstream.base_url.rstrip("/")
    if upstream.type == "openai" or base.endswith("/v1"):
        return base + path.removeprefix("/v1")
    return base + path


class UpstreamPool:
    """Keep-alive connections to every upstream, auth added, errors mapped to 502 / 504."""

    def __init__(self, upstreams: Mapping[str, Upstream], api_keys: Mapping[str, str], *,
                 pool_size: int = 512, keepalive_s: float = 4.0) -> None:
        # keepalive_s stays below the 5 s idle timeout of common servers (uvicorn, Node), so a
        # pooled connection is not reused just as the server closes it.
        self._targets = {name: _make_target(upstream, api_keys.get(name)) for name, upstream in upstreams.items()}
        self._connections = ConnectionPool(limit=pool_size, keepalive_s=keepalive_s,
                                           connect_timeout_s=CONNECT_TIMEOUT_S)
        self._routes: dict[tuple[str, str], _Route] = {}

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self._connections.aclose()

    async def post(self, upstream_name: str, path: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        """POST ``body`` and read the whole answer."""
        target = self._target(upstream_name)
        route = self._route(upstream_name, target, path)
        connection = await self._send(target, route, body, headers)
        try:
            status, raw = await connection.head()
            reply_headers, encoding = _reply_headers(raw)
            data = await connection.body()
            if encoding:
                data = decode_body({"content-encoding": encoding}, data)
        except (CallFailed, ReadTimeout) as exc:
            self._connections.discard(connection)
            raise _failure(target, exc) from exc
        except BaseException:
            self._connections.discard(connection)
            raise
        connection.finish()
        self._connections.release(route.origin, connection)
        return Reply(status, reply_headers, data)

    @asynccontextmanager
    async def stream(self, upstream_name: str, path: str, body: bytes,
                     headers: Mapping[str, str]) -> AsyncIterator[StreamingReply]:
        """POST ``body`` and hand out the answer's body as it arrives. Leaving the block early
        closes the upstream connection, which ends the upstream's generation."""
        target = self._target(upstream_name)
        route = self._route(upstream_name, target, path)
        connection = await self._send(target, route, body, headers)
        try:
            status, raw = await connection.head()
        except (CallFailed, ReadTimeout) as exc:
            self._connections.discard(connection)
            raise _failure(target, exc) from exc
        except BaseException:
            self._connections.discard(connection)
            raise
        reply_headers, encoding = _reply_headers(raw)
        chunks = _chunks(target, encoding, connection)
        try:
            yield StreamingReply(status, reply_headers, chunks)
        finally:
            await chunks.aclose()
            connection.finish()  # a body not read to its end leaves the connection broken
            self._connections.release(route.origin, connection)

    def _target(self, name: str) -> _Target:
        try:
            return self._targets[name]
        except KeyError:
            known = ", ".join(sorted(self._targets)) or "none"
            raise UpstreamError(f"No upstream named {name!r} is configured (known: {known}).") from None

    def _route(self, name: str, target: _Target, path: str) -> _Route:
        route = self._routes.get((name, path))
        if route is None:
            route = self._routes[(name, path)] = _make_route(join_url(target.upstream, path))
        return route

    async def _send(self, target: _Target, route: _Route, body: bytes, headers: Mapping[str, str]) -> Connection:
        request = b"".join((route.request_line, route.origin.host_header, target.head,
                            _forwarded(target.upstream.type, headers),
                            b"content-length: %d\r\n\r\n" % len(body), body))
        for attempt in (1, 2):
            try:
                connection = await self._connections.acquire(route.origin)
            except ConnectFailed as exc:
                # Nothing was sent on this connection: safe to try once more.
                if attempt == 2:
                    raise _failure(target, exc, attempts=attempt) from exc
                continue
            connection.send(request, target.read_timeout_s)
            return connection
        raise AssertionError("unreachable")


def _make_target(upstream: Upstream, api_key: str | None) -> _Target:
    if upstream.type not in FORWARDED:
        raise ValueError(f"upstream {upstream.name}: unknown type {upstream.type!r} (openai or anthropic)")
    lines = [f"user-agent: costwarden/{__version__}", "accept: */*", "content-type: application/json"]
    if api_key and upstream.type == "anthropic":
        lines.append(f"x-api-key: {_header_value(api_key)}")
    elif api_key:
        lines.append(f"authorization: Bearer {_header_value(api_key)}")
    head = "".join(f"{line}\r\n" for line in lines).encode("latin-1")
    return _Target(upstream, head, float(upstream.timeout_s))


def _make_route(url: str) -> _Route:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UpstreamError(f"Upstream URL {url!r} is not an http:// or https:// URL.")
    default = 443 if parts.scheme == "https" else 80
    port = parts.port or default
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname.encode("idna").decode("ascii")
    host_header = f"host: {host}\r\n" if port == default else f"host: {host}:{port}\r\n"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    origin = Origin(parts.scheme, parts.hostname, port, host_header.encode("ascii"))
    return _Route(origin, f"POST {target} HTTP/1.1\r\n".encode("latin-1"))


def _header_value(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError("an upstream API key must not contain line breaks")
    return value.strip()


def _forwarded(kind: str, client_headers: Mapping[str, str]) -> bytes:
    """The client headers this kind of upstream receives, as header lines."""
    wanted = FORWARDED[kind]
    found: dict[str, str] = {}
    for name, value in client_headers.items():
        key = name.lower()
        if key in wanted and value and key not in found and "\r" not in value and "\n" not in value:
            found[key] = value
    if kind == "anthropic":
        found.setdefault("anthropic-version", DEFAULT_ANTHROPIC_VERSION)
    if not found:
        return b""
    return "".join(f"{name}: {value}\r\n" for name, value in found.items()).encode("latin-1")


def _reply_headers(raw: list[tuple[bytes, bytes]]) -> tuple[dict[str, str], str]:
    """Answer headers by lower-case name (repeated ones joined), and the content-encoding."""
    headers: dict[str, str] = {}
    encoding = ""
    for name_bytes, value_bytes in raw:
        key = name_bytes.decode("latin-1").lower()
        value = value_bytes.decode("latin-1")
        if key in _HOP_BY_HOP:
            if key == "content-encoding":
                encoding = value
            continue
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers, encoding


async def _chunks(target: _Target, encoding: str, connection: Connection) -> AsyncGenerator[bytes, None]:
    try:
        async for data in decoded_chunks({"content-encoding": encoding}, connection):
            yield data
    except (CallFailed, ReadTimeout) as exc:
        raise _failure(target, exc) from exc


def _failure(target: _Target, exc: BaseException, *, attempts: int = 1) -> UpstreamError:
    upstream = target.upstream
    where = f"Upstream {upstream.name} ({upstream.base_url})"
    tries = " (tried twice)" if attempts > 1 else ""
    if isinstance(exc, ConnectFailed) and exc.timeout:
        return UpstreamTimeout(f"{where} did not accept a connection within {CONNECT_TIMEOUT_S:g} s{tries}.")
    if isinstance(exc, ReadTimeout):
        return UpstreamTimeout(f"{where} sent nothing for {upstream.timeout_s} s, its read timeout.")
    if isinstance(exc, ConnectFailed):
        return UpstreamError(f"{where} is unreachable: {exc.reason}{tries}.")
    return UpstreamError(f"{where} failed during the call: {exc}.")
