"""The only place that names concrete adapters: builds a Runtime from Settings."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

from costwarden import errors
from costwarden.alerts import AlertDispatcher, SmtpSettings
from costwarden.app.auth import AdminIdentity, KeyDirectory, KeyIdentity, TokenDirectory, key_hash
from costwarden.app.metrics import Metrics
from costwarden.app.observer import CallObserver
from costwarden.app.runtime import Runtime
from costwarden.app.service import GatewayService
from costwarden.app.settings import Settings
from costwarden.core.policy import Policy
from costwarden.counters import open_store
from costwarden.engine.admission import Admission, utc_now
from costwarden.engine.rebuild import rebuild_counters
from costwarden.ledger import Ledger
from costwarden.policy import load_policy, parse_policy
from costwarden.providers import ENDPOINTS, UpstreamPool

log = logging.getLogger(__name__)
SWEEP_S = 30.0
LOADED_MARK = "costwarden|counters-loaded"


async def resolve_policy(settings: Settings, ledger: Ledger) -> Policy:
    """``--policy P`` when given, else the policy most recently loaded by a server on this database."""
    if settings.policy_path:
        return load_policy(settings.policy_path)
    stored = await ledger.latest_policy_version()
    if stored is None:
        raise errors.PolicyError(["no --policy given and this database has no stored policy yet"],
                                 source="costwarden")
    return parse_policy(stored.yaml, source=f"stored policy version {stored.id}")


def upstream_keys(policy: Policy, environ: Mapping[str, str]) -> dict[str, str]:
    keys = {}
    for name, upstream in policy.upstreams.items():
        key = environ.get(upstream.api_key_env or "", "")
        if not key:
            log.warning("upstream %s: %s is not set; its calls will be refused upstream", name, upstream.api_key_env)
        keys[name] = key
    return keys


async def start_runtime(settings: Settings, policy: Policy | None = None,
                        clock: Callable[[], datetime] = utc_now) -> Runtime:
    ledger = await Ledger.open(settings.db_url)
    try:
        policy = policy or await resolve_policy(settings, ledger)
        version = await ledger.store_policy(policy.source)
        store = open_store(settings.redis_url)
        await store.ping()
        admission = Admission(policy, store, clock)
        now = clock()
        # With shared counters other replicas may have calls in flight: only rows older than any
        # reservation can live are certainly orphaned.
        older_than = now - timedelta(seconds=admission.reservation_ttl_s) if settings.redis_url else None
        interrupted = await ledger.recover_interrupted(now, older_than=older_than)
        if interrupted:
            log.warning("settled %d calls interrupted by the last stop at their estimates", len(interrupted))
        if await store.claim(LOADED_MARK, now.timestamp() + 10 * 365 * 86400, now.timestamp()):
            cells = await rebuild_counters(policy, store, ledger, now)
            log.info("rebuilt %d counter cells from the ledger", cells)
        keys = KeyDirectory(lambda: _load_keys(ledger), settings.key_refresh_s)
        await keys.start()
        tokens = TokenDirectory(lambda: _load_tokens(ledger, settings.admin_token), settings.key_refresh_s)
        await tokens.start()
        estimator = ENDPOINTS["/v1/chat/completions"].estimator
        log.info("input tokens estimated with %s", "tiktoken" if estimator.uses_tiktoken else
                 "the conservative byte rule (no tiktoken encoding on disk)")
        metrics = Metrics()
        pool = UpstreamPool(policy.upstreams, upstream_keys(policy, settings.environ))
        alerts = AlertDispatcher(ledger, SmtpSettings.from_env(settings.environ))
        await alerts.start()
        observer = CallObserver(metrics, alerts, admission)
        service = GatewayService(admission, ledger, pool, observer, clock)
        # Everything built so far lives as long as the process: take it out of the collector's
        # generations, so that full collections under load stay short (p99 latency).
        gc.collect()
        gc.freeze()
        return Runtime(settings, admission, ledger, pool, keys, service, metrics, observer, tokens, version)
    except BaseException:
        await ledger.close()
        raise


async def stop_runtime(runtime: Runtime) -> None:
    await runtime.keys.stop()
    await runtime.tokens.stop()
    await runtime.observer.stop()
    for pool in (*runtime.retired_pools, runtime.pool):
        await pool.aclose()
    await runtime.admission.store.close()
    await runtime.ledger.close()


async def _load_keys(ledger: Ledger) -> dict[str, KeyIdentity]:
    return {record.secret_hash: KeyIdentity(record.id, record.department, record.team, record.user)
            for record in await ledger.list_keys() if record.active}


async def _load_tokens(ledger: Ledger, bootstrap: str | None) -> dict[str, AdminIdentity]:
    tokens = {digest: AdminIdentity(record.id, record.role, record.department)
              for digest, record in (await ledger.load_tokens()).items()}
    if bootstrap:
        tokens[key_hash(bootstrap)] = AdminIdentity("bootstrap", "admin")
    return tokens


@asynccontextmanager
async def running(settings: Settings, policy: Policy | None = None,
                  clock: Callable[[], datetime] = utc_now) -> AsyncIterator[Runtime]:
    """Start a runtime with its background sweeps; stop it on exit."""
    runtime = await start_runtime(settings, policy, clock)
    sweeper = asyncio.create_task(_sweep(runtime), name="reservation-sweep")
    try:
        yield runtime
    finally:
        sweeper.cancel()
        await asyncio.gather(sweeper, return_exceptions=True)
        await stop_runtime(runtime)


async def _sweep(runtime: Runtime) -> None:
    while True:
        await asyncio.sleep(SWEEP_S)
        try:
            stale = await runtime.admission.store.expire(runtime.admission.clock().timestamp())
        except errors.StorageError:
            log.warning("reservation sweep failed", exc_info=True)
            continue
        if stale:
            log.warning("settled %d stale reservations at their estimates", len(stale))
