"""The counter scripts' transport over TLS (``rediss://``): it verifies the server against the
URL's certificate authority, and refuses a server it cannot verify."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from costwarden.counters.script_calls import ScriptCalls
from service_fixtures import free_port, missing_service, stop, wait_until

pytestmark = pytest.mark.service
ECHO = "return {KEYS[1], ARGV[1]}"


@pytest.fixture
def tls_redis() -> Iterator[tuple[int, Path]]:
    """A Redis server that speaks TLS only, with a certificate for ``localhost`` signed by a
    certificate authority of this test's own; yields its port and the authority's certificate."""
    binary, openssl = shutil.which("redis-server"), shutil.which("openssl")
    if binary is None or openssl is None:
        missing_service("redis-server" if binary is None else "openssl")
    base = Path(tempfile.mkdtemp(prefix="costwarden-redis-tls-"))
    try:
        _certificates(openssl, base)
        port, log = free_port(), base / "redis.log"
        with open(log, "wb") as out:
            server = subprocess.Popen(
                [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(base), "--tls-cert-file", str(base / "server.crt"),
                 "--tls-key-file", str(base / "server.key"), "--tls-ca-cert-file", str(base / "ca.crt"),
                 "--tls-auth-clients", "no"], stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: _speaks_tls(port, base / "ca.crt"), "redis-server (TLS)", server, log)
            yield port, base / "ca.crt"
        finally:
            stop(server)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _certificates(openssl: str, base: Path) -> None:
    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=base, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=costwarden test authority")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (base / "names.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out",
        "server.crt", "-days", "2", "-extfile", "names.cnf")
    (base / "server.key").chmod(0o644)  # readable by the server whatever user it runs as


def _speaks_tls(port: int, authority: Path) -> bool:
    context = ssl.create_default_context(cafile=str(authority))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as raw, \
                context.wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


async def test_scripts_run_over_tls_against_the_urls_authority(tls_redis: tuple[int, Path]) -> None:
    port, authority = tls_redis
    client = Redis.from_url(f"rediss://localhost:{port}/2?ssl_ca_certs={authority}", decode_responses=True)
    calls = ScriptCalls(client)
    try:
        assert await calls.run(client.register_script(ECHO), ["k"], ["a"]) == ["k", "a"]
    finally:
        await calls.close()
        await client.aclose()


async def test_a_server_the_authority_did_not_sign_is_refused(tls_redis: tuple[int, Path]) -> None:
    port, _ = tls_redis
    client = Redis.from_url(f"rediss://localhost:{port}/2", decode_responses=True)  # the system's authorities
    calls = ScriptCalls(client)
    try:
        with pytest.raises(RedisConnectionError, match="certificate verify failed"):
            await calls.run(client.register_script(ECHO), ["k"], ["a"])
    finally:
        await calls.close()
        await client.aclose()
