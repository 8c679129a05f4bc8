"""`finpass-pipeline bench-phases`: the consumer's Python work per event, phase by phase.

No services: the demo stream's messages are decoded, planned, digested, applied and chained
in memory exactly as the consumer does (`Planner`, `content_digest`, `Applier`,
`chain_records`, `rows.inserts`), with the cyclic collector off, and each phase's CPU time
per event is the best of `rounds` (this machine is shared: the minimum is the stable figure).
Then the same records are committed through a real `Store` on the configured PostgreSQL in
batches of 2,000, with the collector tuned as the daemon tunes it (`consumers.gc_tuning`), to
show what the collector costs per event there (and the Python CPU of the whole store path).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from consumers import gc_tuning
from consumers.apply import Applier, BatchState
from consumers.planner import Planner
from consumers.rows import inserts
from consumers.store import Store, content_digest
from finpass_pipeline.audit.chain import ZERO_HASH, AuditWriter, chain_records, chain_tip
from finpass_pipeline.audit.pseudonym import Pseudonymizer
from finpass_pipeline.db import create_database, create_pool, drop_database
from finpass_pipeline.events import message_key, serialize_event, topic_suffix
from finpass_pipeline.migrations import migrate
from finpass_pipeline.privacy.vault import Vault, blind_index_key
from finpass_pipeline.settings import Settings

BATCH = 2_000


@dataclass(frozen=True)
class _Message:
    """What the planner reads of a Kafka record."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    timestamp: int = 0


def messages(n: int, users: int, seed: int, prefix: str) -> list[_Message]:
    """The demo stream as the consumer would fetch it (users' topic first, as the intake
    orders a batch)."""
    from producers.demo_stream import demo_events

    order = ("users", "credentials", "payments", "security")
    made = sorted(((topic_suffix(e.event_type), message_key(e), serialize_event(e))
                   for e in demo_events(n, users, seed, datetime.now(UTC) - timedelta(days=30))),
                  key=lambda m: order.index(m[0]) if m[0] in order else len(order))
    return [_Message(prefix + suffix, 0, i, key, value)
            for i, (suffix, key, value) in enumerate(made)]


def _one_round(records: list[_Message], prefix: str, applier: Applier) -> dict[str, float]:
    """CPU seconds of each in-memory phase over `records`, once."""
    took: dict[str, float] = {}
    clock = time.process_time
    t = clock()
    planner = Planner(prefix)
    decoded = [planner.decode(r) for r in records]
    t, took["decode (parse, validate, topic and key checks)"] = clock(), clock() - t
    plan = planner.plan(decoded, 10**9)
    t, took["plan"] = clock(), clock() - t
    for inc in plan.events:
        content_digest(inc)
    t, took["content digest"] = clock(), clock() - t
    for inc in plan.events:
        inc.event.subjects()
    t, took["subjects"] = clock(), clock() - t
    state = BatchState()
    for inc in plan.events:
        applier.apply(state, inc)
    t, took["apply + audit row"] = clock(), clock() - t
    chains = [f"{i.topic}:{i.partition}" for i in state.applied]
    tips = {c: chain_tip(0, ZERO_HASH, datetime.now(UTC)) for c in set(chains)}
    t = clock()
    chain_records(state.audit, chains, tips)
    t, took["chain (digests, hashes, COPY records)"] = clock(), clock() - t
    list(inserts([r for r in state.users.values() if r is not None],
                 [r for r in state.credentials.values() if r is not None],
                 [r for r in state.payments.values() if r is not None]))
    took["domain row records"] = clock() - t
    return took


def phases(records: list[_Message], rounds: int, prefix: str) -> dict[str, float]:
    """Best-of-`rounds` CPU µs per event of each in-memory phase, the collector off."""
    applier = Applier(Pseudonymizer(b"bench-phases-key".ljust(32, b"."), "k1"))
    best: dict[str, float] = {}
    was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(rounds):
            for name, seconds in _one_round(records, prefix, applier).items():
                best[name] = min(best.get(name, float("inf")), seconds / len(records) * 1e6)
    finally:
        if was:
            gc.enable()
    return best


async def store_path(settings: Settings, records: list[_Message], prefix: str
                     ) -> tuple[float, float, float]:
    """(Python CPU µs per event of decode + plan + `Store.commit_batch`, of which the cyclic
    collector, events/s) on a fresh database, the collector tuned as in the daemon."""
    name = f"phases_{datetime.now(UTC):%Y%m%d%H%M%S}"
    dsn = await create_database(settings.database_url, name)
    spent = [0.0, 0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            spent[1] = time.perf_counter()
        else:
            spent[0] += time.perf_counter() - spent[1]

    thresholds = gc.get_threshold()
    try:
        await migrate(dsn)
        s = settings.model_copy(update={"database_url": dsn})
        pz = Pseudonymizer(s.hash_key(), s.audit_hash_key_id)
        pool = await create_pool(dsn)
        store = Store(pool, "bench-phases", Applier(pz), AuditWriter(),
                      Vault(s.pii_keyring(), blind_index_key(pz)))
        planner = Planner(prefix)
        gc_tuning.tune_for_batches()
        gc_tuning.freeze_startup_heap()
        gc.callbacks.append(on_gc)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for i in range(0, len(records), BATCH):
            plan = planner.plan([planner.decode(r) for r in records[i:i + BATCH]], 10**9)
            await store.commit_batch(plan.events, plan.dead, plan.progress)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        await pool.close()
    finally:
        if on_gc in gc.callbacks:
            gc.callbacks.remove(on_gc)
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        await drop_database(settings.database_url, name)
    n = len(records)
    return cpu / n * 1e6, spent[0] / n * 1e6, n / wall


def run(settings: Settings, events: int, rounds: int, say: Callable[[str], None]) -> str:
    prefix = settings.topic_prefix
    say(f"generating {events:,} demo events")
    records = messages(events, max(events // 10, 1), 42, prefix)
    say(f"in-memory phases, best of {rounds}")
    best = phases(records, rounds, prefix)
    say("the store path on PostgreSQL")
    total, collector, eps = asyncio.run(store_path(settings, records, prefix))
    lines = [f"{name:<48} {us:>7.1f} µs/event" for name, us in best.items()]
    lines.append(f"{'sum of the in-memory phases':<48} {sum(best.values()):>7.1f} µs/event")
    lines.append(f"{'store path: decode + plan + commit_batch (CPU)':<48} {total:>7.1f} µs/event "
                 f"({eps:,.0f} events/s, no Kafka)")
    lines.append(f"{'  of which the cyclic collector (tuned)':<48} {collector:>7.1f} µs/event")
    return "\n".join(lines)
