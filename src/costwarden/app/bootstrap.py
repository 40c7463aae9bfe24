"""The only place that names concrete adapters: builds a Runtime from Settings.

Every adapter can be handed in instead (a store, a ledger, an upstream client factory, an alert
sink, a clock), which is how tests drive the real service over fakes or over servers they run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime, timedelta

from costwarden import errors
from costwarden.alerts import AlertDispatcher, SmtpSettings
from costwarden.app.auth import AdminIdentity, KeyDirectory, KeyIdentity, TokenDirectory
from costwarden.app.generation import UpstreamFactory, generation_of
from costwarden.app.loops import LoopWatch
from costwarden.app.metrics import Metrics
from costwarden.app.observer import AlertSink, CallObserver
from costwarden.app.reload import backfill_metadata, follow_policy, record_metadata
from costwarden.app.runtime import Runtime
from costwarden.app.service import GatewayService
from costwarden.app.settings import Settings
from costwarden.app.tripwire import Tripwire
from costwarden.app.upkeep import CounterUpkeep, UpkeepTimes, ensure_built
from costwarden.app.watch import AlertWatch
from costwarden.clock import utc_now
from costwarden.core.audit import SERVER_ROLE, Actor, AuditAction, policy_entries
from costwarden.core.kinds import Role
from costwarden.core.policy import Policy
from costwarden.counters import CounterStore, open_store
from costwarden.engine.admission import Admission
from costwarden.ledger import Ledger, PolicyVersion
from costwarden.ledger.credentials import hash_secret
from costwarden.policy import env_names, load_policy, parse_policy
from costwarden.providers import ENDPOINTS, UpstreamPool

log = logging.getLogger(__name__)
STARTUP_REBUILD_TRIES = 20  # half-second waits for another replica's rebuild at start-up


async def policy_for(ledger: Ledger, path: str | None) -> Policy | None:
    """The policy file at ``path`` when given, else the policy most recently loaded by a server on
    this database, else None."""
    if path:
        return load_policy(path)
    stored = await ledger.latest_policy_version()
    return parse_policy(stored.yaml, source=f"stored policy version {stored.id}") if stored else None


async def resolve_policy(settings: Settings, ledger: Ledger) -> Policy:
    """``--policy P`` when given, else the policy most recently loaded by a server on this database."""
    policy = await policy_for(ledger, settings.policy_path)
    if policy is None:
        raise errors.PolicyError(["no --policy given and this database has no stored policy yet"],
                                 source="costwarden")
    return policy


def upstream_keys(policy: Policy, environ: Mapping[str, str]) -> dict[str, str]:
    """Each upstream's API key, read from the variable the policy names for it."""
    keys = {}
    for name, upstream in policy.upstreams.items():
        key = environ.get(upstream.api_key_env or "", "")
        if not key:
            log.warning("upstream %s: %s is not set; its calls will be refused upstream", name, upstream.api_key_env)
        keys[name] = key
    return keys


def pool_factory(settings: Settings) -> UpstreamFactory:
    """Pooled HTTP clients for a policy's upstreams, keys from the server's environment."""
    return lambda policy: UpstreamPool(policy.upstreams, upstream_keys(policy, settings.environ))


async def start_runtime(settings: Settings, policy: Policy | None = None,
                        clock: Callable[[], datetime] = utc_now, *,
                        ledger: Ledger | None = None, store: CounterStore | None = None,
                        upstreams_for: UpstreamFactory | None = None,
                        alerts: AlertSink | None = None) -> Runtime:
    """Open (or take) every adapter, recover from the last stop, and wire the service."""
    ledger = ledger or await Ledger.open(settings.db_url, spool_dir=settings.spool_dir,
                                         when_down=settings.ledger_down)
    try:
        policy = policy or await resolve_policy(settings, ledger)
        if settings.upstream_env is None:  # reloads may name only what the start-up policy names
            settings = replace(settings, upstream_env=tuple(sorted(env_names(policy))))
        previous = await ledger.latest_policy_version()
        await backfill_metadata(ledger, clock())
        version = await ledger.store_policy(policy.source)
        await record_metadata(ledger, policy, clock())
        if previous is not None and previous.id != version:
            await _audit_start_up_policy(ledger, previous, policy, version, clock())
        store = store or open_store(settings.redis_url)
        await store.ping()
        admission = Admission(store, clock)
        now = clock()
        # With shared counters other replicas may have calls in flight: only rows older than any
        # reservation can live are certainly orphaned.
        older_than = now - timedelta(seconds=admission.reservation_ttl_s) if settings.redis_url else None
        interrupted = await ledger.recover_interrupted(now, older_than=older_than)
        if interrupted:
            log.warning("settled %d calls interrupted by the last stop at their estimates", len(interrupted))
        await _built(policy, store, ledger, clock)
        keys = KeyDirectory(lambda: _load_keys(ledger), settings.key_refresh_s)
        await keys.start()
        tokens = TokenDirectory(lambda: _load_tokens(ledger, settings.admin_token), settings.key_refresh_s)
        await tokens.start()
        endpoints = dict(ENDPOINTS)
        # The tokenizers load in about half a second: at start-up, not inside the first call.
        await asyncio.to_thread(endpoints["/v1/chat/completions"].estimator.warm_up)
        log.info("input tokens counted with the bundled OpenAI tokenizers; other providers' by the byte rule")
        metrics = Metrics()
        if alerts is None:
            dispatcher = AlertDispatcher(ledger, SmtpSettings.from_env(settings.environ))
            await dispatcher.start()
            alerts = dispatcher
        sink = alerts
        tripwire = Tripwire(admission, lambda note, notify: sink.submit(note, notify.targets(note.department)))
        observer = CallObserver(metrics, alerts, LoopWatch(tripwire, shared=settings.redis_url is not None))
        upstreams_for = upstreams_for or pool_factory(settings)
        generation = generation_of(policy, version, upstreams_for)
        service = GatewayService(admission, ledger, observer, clock,
                                 prepare_while_reserving=settings.redis_url is not None)
        ledger.start_writer()
        return Runtime(settings, admission, ledger, keys, service, metrics, observer, tokens, generation,
                       endpoints, upstreams_for)
    except BaseException:
        await ledger.close()
        raise


async def _audit_start_up_policy(ledger: Ledger, previous: PolicyVersion, policy: Policy, version: int,
                                 now: datetime) -> None:
    """A server started with a policy other than the one in force: the audit log says so, once
    however many replicas start with it (the same entry as another process's adoption)."""
    try:
        old = parse_policy(previous.yaml, source=f"stored policy version {previous.id}")
    except errors.PolicyError:  # written for an older costwarden: only the versions can be told
        log.warning("stored policy version %d no longer loads; auditing the change without its budgets",
                    previous.id)
        old = policy
    entries = policy_entries(old, policy, now, Actor("server", SERVER_ROLE), AuditAction.POLICY_ADOPTED,
                             previous.id, version)
    await ledger.record_audit(entries, once=f"{AuditAction.POLICY_ADOPTED}|{version}")


async def stop_runtime(runtime: Runtime) -> None:
    await runtime.keys.stop()
    await runtime.tokens.stop()
    await runtime.observer.stop()
    for upstreams in (*runtime.retired, runtime.generation.upstreams):
        await upstreams.aclose()
    await runtime.admission.store.close()
    await runtime.ledger.close()


async def _load_keys(ledger: Ledger) -> dict[str, KeyIdentity]:
    return {record.secret_hash: KeyIdentity(record.id, record.department, record.team, record.user, record.customer)
            for record in await ledger.list_keys() if record.active}


async def _load_tokens(ledger: Ledger, bootstrap: str | None) -> dict[str, AdminIdentity]:
    tokens = {digest: AdminIdentity(record.id, record.role, record.department, record.customer)
              for digest, record in (await ledger.load_tokens()).items()}
    if bootstrap:
        tokens[hash_secret(bootstrap)] = AdminIdentity("bootstrap", Role.ADMIN)
    return tokens


@asynccontextmanager
async def running(settings: Settings, policy: Policy | None = None,
                  clock: Callable[[], datetime] = utc_now, *,
                  ledger: Ledger | None = None, store: CounterStore | None = None,
                  upstreams_for: UpstreamFactory | None = None,
                  alerts: AlertSink | None = None) -> AsyncIterator[Runtime]:
    """Start a runtime with its background tasks (reservation sweep, policy follower); stop it on exit."""
    runtime = await start_runtime(settings, policy, clock, ledger=ledger, store=store,
                                  upstreams_for=upstreams_for, alerts=alerts)
    upkeep = CounterUpkeep(runtime.admission, runtime.ledger, lambda: runtime.policy, runtime.metrics.set_drift,
                           UpkeepTimes.of(runtime.settings))
    tripwire = Tripwire(runtime.admission, runtime.observer.on_alert)
    watch = AlertWatch(runtime.admission, runtime.ledger, lambda: runtime.generation, tripwire,
                       runtime.settings.watch_s)
    tasks = [asyncio.create_task(upkeep.run(), name="counter-upkeep"),
             asyncio.create_task(follow_policy(runtime), name="policy-follower"),
             asyncio.create_task(watch.run(), name="alert-watch")]
    try:
        yield runtime
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await stop_runtime(runtime)


async def _built(policy: Policy, store: CounterStore, ledger: Ledger, clock: Callable[[], datetime]) -> None:
    """Start on built counters: rebuild an emptied store by replacement, or wait (a little) for
    the replica that is rebuilding it; the upkeep task goes on trying if that takes longer."""
    for _ in range(STARTUP_REBUILD_TRIES):
        if await ensure_built(policy, store, ledger, clock()):
            return
        await asyncio.sleep(0.5)
    log.warning("another replica is still rebuilding the counter store; hard-checked calls wait for it")
