"""The transactional outbox and its relay, against the real PostgreSQL and Kafka (no mocks)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from finpass_pipeline.events import EventBase, parse_event
from finpass_pipeline.kafka import domain_topics, ensure_topics
from finpass_pipeline.settings import Settings
from producers import outbox
from producers.errors import NotInTransaction
from producers.publisher import correlation, new_event
from tests.unit.test_publisher import read_topics

pytestmark = pytest.mark.integration


async def until(check: Callable[[], Awaitable[bool]], within: float = 60.0,
                interval: float = 0.02, what: str = "condition") -> None:
    """Poll `check` until true; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"timed out after {within}s waiting for {what}"
        await asyncio.sleep(interval)


@pytest.fixture
async def settings(fresh_db: str, bootstrap: str, topic_prefix: str) -> Settings:
    s = Settings(database_url=fresh_db, kafka_bootstrap_servers=bootstrap,
                 topic_prefix=topic_prefix, topic_partitions=3)
    await ensure_topics(s)
    return s


@pytest.fixture
async def conn(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(settings.database_url)
    await outbox.install(connection)
    await outbox.install(connection)  # idempotent
    yield connection
    await connection.close()


def seen(did: str, seq: int) -> EventBase:
    return new_event("user.seen", {"did": did, "seq": seq}, source_system="tests",
                     correlation_id=f"req-{seq}")


async def sent_count(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM event_outbox WHERE sent_at IS NOT NULL"))


async def published_ids(settings: Settings) -> list[uuid.UUID]:
    records = await read_topics(settings.kafka_bootstrap_servers, domain_topics(settings))
    return [parse_event(r.value).event_id for r in records]


@pytest.fixture
async def relay(settings: Settings) -> AsyncIterator[Callable[..., outbox.OutboxRelay]]:
    """Start in-process relays; each is stopped (SIGTERM-equivalent) and must exit 0."""
    running: list[tuple[asyncio.Event, asyncio.Task[int]]] = []

    def start(dsn: str | None = None, s: Settings = settings) -> outbox.OutboxRelay:
        r = outbox.OutboxRelay(s, dsn or settings.database_url, poll_interval=0.05)
        stop = asyncio.Event()
        running.append((stop, asyncio.create_task(r.run(stop))))
        return r

    yield start
    for stop, task in running:
        stop.set()
        assert await asyncio.wait_for(task, timeout=60) == 0


async def test_rolled_back_enqueue_publishes_nothing(settings: Settings, conn: asyncpg.Connection,
                                                     relay: Callable[..., outbox.OutboxRelay]
                                                     ) -> None:
    """An event enqueued in a transaction that rolls back is never published; a committed one is."""
    lost, kept = seen("did:example:a", 1), seen("did:example:a", 2)
    with pytest.raises(RuntimeError, match="business rule"):
        async with conn.transaction():
            await outbox.enqueue(conn, lost)
            raise RuntimeError("business rule failed after the enqueue")
    async with conn.transaction():
        await outbox.enqueue(conn, kept)
        await outbox.enqueue(conn, kept)  # same event_id: one row
    relay()
    await until(lambda: _all_sent(conn), what="the committed event to be relayed")
    assert await conn.fetchval("SELECT count(*) FROM event_outbox") == 1
    assert await published_ids(settings) == [kept.event_id]


async def _all_sent(conn: asyncpg.Connection) -> bool:
    return not await conn.fetchval("SELECT count(*) FROM event_outbox WHERE sent_at IS NULL")


async def test_enqueue_outside_a_transaction_is_refused(conn: asyncpg.Connection) -> None:
    """Without a transaction there is no atomicity to offer: `NotInTransaction`, nothing written."""
    with pytest.raises(NotInTransaction):
        await outbox.enqueue(conn, seen("did:example:b", 1))
    assert await conn.fetchval("SELECT count(*) FROM event_outbox") == 0


async def test_second_relay_waits_for_the_lock(settings: Settings, conn: asyncpg.Connection,
                                               relay: Callable[..., outbox.OutboxRelay]) -> None:
    """While another session holds the relay lock, a relay publishes nothing; then it takes over."""
    await conn.execute("SELECT pg_advisory_lock($1)", outbox.RELAY_LOCK_KEY)  # "the other relay"
    async with conn.transaction():
        await outbox.enqueue_many(conn, [seen("did:example:c", i) for i in range(10)])
    waiting = relay()
    await until(lambda: _is(waiting, "waiting_for_lock"), what="the relay to wait for the lock")
    assert await sent_count(conn) == 0
    await conn.execute("SELECT pg_advisory_unlock($1)", outbox.RELAY_LOCK_KEY)
    await until(lambda: _all_sent(conn), what="the relay to take over")
    assert waiting.published == 10


async def _is(r: outbox.OutboxRelay, state: str) -> bool:
    return r.state == state


async def test_relay_retries_while_services_are_down(settings: Settings, conn: asyncpg.Connection,
                                                     relay: Callable[..., outbox.OutboxRelay]
                                                     ) -> None:
    """PostgreSQL or Kafka unreachable: the relay backs off and retries, and still stops cleanly."""
    no_db = relay(dsn="postgresql://postgres@127.0.0.1:1/nowhere")
    no_kafka = relay(s=settings.model_copy(update={"kafka_bootstrap_servers": "127.0.0.1:1"}))
    await until(lambda: _failed_twice(no_db, no_kafka), what="two retries each")
    assert no_db.published == no_kafka.published == 0


async def _failed_twice(*relays: outbox.OutboxRelay) -> bool:
    return all(r.failures >= 2 for r in relays)


async def test_relay_without_outbox_table_exits_1(settings: Settings) -> None:
    """No `event_outbox` table: an operator error the relay reports (exit 1), not a retry loop."""
    assert await outbox.run_relay(settings, settings.database_url, asyncio.Event()) == 1


async def relay_process(env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    """`finpass-pipeline outbox-relay` as a real process (small batches: many commits to kill)."""
    with log.open("ab") as out:  # the child holds its own descriptor
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "finpass_pipeline.cli", "outbox-relay", "--batch-size", "100",
            env=env, stdout=out, stderr=asyncio.subprocess.STDOUT,
        )


async def test_relay_killed_mid_stream_loses_nothing_and_keeps_key_order(
        settings: Settings, conn: asyncpg.Connection, base_env: dict[str, str],
        tmp_path: Path) -> None:
    """SIGKILL the relay subprocess mid-stream and restart it: every event published at least
    once, each key's events first seen in enqueue order, every row marked sent."""
    dids = [f"did:example:user-{k:03d}" for k in range(250)]
    with correlation("req-outbox-kill"):
        events = [seen(dids[i % len(dids)], i) for i in range(5000)]
    for start in range(0, len(events), 500):
        async with conn.transaction():
            await outbox.enqueue_many(conn, events[start:start + 500])
    env = base_env | {"FINPASS_OUTBOX_DATABASE_URL": settings.database_url,
                      "FINPASS_LOG_FORMAT": "json"}
    log = tmp_path / "relay.log"

    first = await relay_process(env, log)
    blocker = await asyncpg.connect(settings.database_url)
    try:
        await until(lambda: _sent_at_least(conn, 1000), what="the relay to get going")
        # Hold the relay at the worst instant: SHARE mode lets it lock and publish a batch but
        # not mark it sent, so the kill lands after Kafka's acks and before the commit.
        async with blocker.transaction():
            await blocker.execute("LOCK TABLE event_outbox IN SHARE MODE")
            await until(lambda: _relay_blocked(conn), what="the relay to wait on its mark")
            with contextlib.suppress(ProcessLookupError):  # it may have died: see the log
                first.send_signal(signal.SIGKILL)
            await first.wait()
    finally:
        with contextlib.suppress(ProcessLookupError):
            first.send_signal(signal.SIGKILL)
        await first.wait()
        await blocker.close()
    sent_when_killed = await sent_count(conn)
    assert 1000 <= sent_when_killed < len(events), "the kill must land mid-stream"

    second = await relay_process(env, log)
    try:
        await until(lambda: _all_sent(conn), what="the restarted relay to finish")
    finally:
        with contextlib.suppress(ProcessLookupError):
            second.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(second.wait(), timeout=30)
    assert code == 0, log.read_text()

    ids = await published_ids(settings)
    assert set(ids) == {e.event_id for e in events}
    seqs = {e.event_id: i for i, e in enumerate(events)}
    first_seen: dict[str, list[int]] = {}
    already: set[uuid.UUID] = set()
    for event_id in ids:  # per partition in offset order; a key lives on one partition
        if event_id not in already:
            already.add(event_id)
            first_seen.setdefault(dids[seqs[event_id] % len(dids)], []).append(seqs[event_id])
    assert all(s == sorted(s) for s in first_seen.values())
    assert await _all_sent(conn)
    assert len(ids) > len(events), "the batch acknowledged before the kill is published again"


async def _relay_blocked(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval(
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'event_outbox'::regclass"))


async def _sent_at_least(conn: asyncpg.Connection, n: int) -> bool:
    return await sent_count(conn) >= n


async def test_malformed_outbox_dsn_exits_2(base_env: dict[str, str]) -> None:
    """A malformed FINPASS_OUTBOX_DATABASE_URL is bad configuration: exit 2 with one line."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "finpass_pipeline.cli", "outbox-relay",
        env=base_env | {"FINPASS_OUTBOX_DATABASE_URL": "mysql://db.example/x"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=os.getcwd(),
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 2, (out, err)
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "FINPASS_OUTBOX_DATABASE_URL" in lines[0], lines
