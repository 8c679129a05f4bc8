"""The transactional outbox and its relay, against the real PostgreSQL and Kafka (no mocks)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from finpass_pipeline.settings import Settings
from producers import outbox
from producers.errors import NotInTransaction
from tests.support.pipeline_support import all_sent, published_ids, seen, sent_count, wait_for


@pytest.fixture
async def relay(outbox_settings: Settings) -> AsyncIterator[Callable[..., outbox.OutboxRelay]]:
    """Start in-process relays; each is stopped (SIGTERM-equivalent) and must exit 0."""
    running: list[tuple[asyncio.Event, asyncio.Task[int]]] = []

    def start(dsn: str | None = None, s: Settings = outbox_settings) -> outbox.OutboxRelay:
        r = outbox.OutboxRelay(s, dsn or outbox_settings.database_url, poll_interval=0.05)
        stop = asyncio.Event()
        running.append((stop, asyncio.create_task(r.run(stop))))
        return r

    yield start
    for stop, task in running:
        stop.set()
        assert await asyncio.wait_for(task, timeout=60) == 0


async def test_rolled_back_enqueue_publishes_nothing(
        outbox_settings: Settings, outbox_conn: asyncpg.Connection,
        relay: Callable[..., outbox.OutboxRelay]) -> None:
    """An event enqueued in a transaction that rolls back is never published; a committed one is."""
    lost, kept = seen("did:example:a", 1), seen("did:example:a", 2)
    with pytest.raises(RuntimeError, match="business rule"):
        async with outbox_conn.transaction():
            await outbox.enqueue(outbox_conn, lost)
            raise RuntimeError("business rule failed after the enqueue")
    async with outbox_conn.transaction():
        await outbox.enqueue(outbox_conn, kept)
        await outbox.enqueue(outbox_conn, kept)  # same event_id: one row
    relay()
    await wait_for(lambda: all_sent(outbox_conn), what="the committed event to be relayed",
                   interval=0.02)
    assert await outbox_conn.fetchval("SELECT count(*) FROM event_outbox") == 1
    assert await published_ids(outbox_settings) == [kept.event_id]


async def test_enqueue_outside_a_transaction_is_refused(outbox_conn: asyncpg.Connection) -> None:
    """Without a transaction there is no atomicity to offer: `NotInTransaction`, nothing written."""
    with pytest.raises(NotInTransaction):
        await outbox.enqueue(outbox_conn, seen("did:example:b", 1))
    assert await outbox_conn.fetchval("SELECT count(*) FROM event_outbox") == 0


async def test_second_relay_waits_for_the_lock(
        outbox_settings: Settings, outbox_conn: asyncpg.Connection,
        relay: Callable[..., outbox.OutboxRelay]) -> None:
    """While another session holds the relay lock, a relay publishes nothing; then it takes over."""
    # "The other relay":
    await outbox_conn.execute("SELECT pg_advisory_lock($1)", outbox.RELAY_LOCK_KEY)
    async with outbox_conn.transaction():
        await outbox.enqueue_many(outbox_conn, [seen("did:example:c", i) for i in range(10)])
    waiting = relay()
    await wait_for(lambda: _is(waiting, "waiting_for_lock"), what="the relay to wait for the lock",
                   interval=0.02)
    assert await sent_count(outbox_conn) == 0
    await outbox_conn.execute("SELECT pg_advisory_unlock($1)", outbox.RELAY_LOCK_KEY)
    await wait_for(lambda: all_sent(outbox_conn), what="the relay to take over", interval=0.02)
    assert waiting.published == 10


async def _is(r: outbox.OutboxRelay, state: str) -> bool:
    return r.state == state


async def test_relay_retries_while_services_are_down(
        outbox_settings: Settings, outbox_conn: asyncpg.Connection,
        relay: Callable[..., outbox.OutboxRelay]) -> None:
    """PostgreSQL or Kafka unreachable: the relay backs off and retries, and still stops cleanly."""
    no_db = relay(dsn="postgresql://postgres@127.0.0.1:1/nowhere")
    no_kafka = relay(s=outbox_settings.model_copy(
        update={"kafka_bootstrap_servers": "127.0.0.1:1"}))
    await wait_for(lambda: _failed_twice(no_db, no_kafka), what="two retries each",
                   interval=0.02)
    assert no_db.published == no_kafka.published == 0


async def _failed_twice(*relays: outbox.OutboxRelay) -> bool:
    return all(r.failures >= 2 for r in relays)


async def test_relay_without_outbox_table_exits_1(outbox_settings: Settings) -> None:
    """No `event_outbox` table: an operator error the relay reports (exit 1), not a retry loop."""
    assert await outbox.run_relay(outbox_settings, outbox_settings.database_url,
                                  asyncio.Event()) == 1


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
