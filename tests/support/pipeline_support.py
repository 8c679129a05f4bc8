"""Driving the real pipeline from tests: settings, producing raw messages, running the daemon."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from aiokafka import AIOKafkaProducer

from consumers.daemon import ConsumerDaemon
from finpass_pipeline.events import EventBase, message_key, serialize_event, topic_suffix
from finpass_pipeline.kafka import ensure_topics
from finpass_pipeline.migrations import migrate
from finpass_pipeline.settings import Settings


@contextlib.asynccontextmanager
async def scratch_database(admin_dsn: str) -> AsyncIterator[str]:
    """DSN of a brand-new, empty database on the server of `admin_dsn`; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield urlunsplit(urlsplit(admin_dsn)._replace(path="/" + name))
    finally:
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def make_settings(database_url: str, bootstrap: str, prefix: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "kafka_bootstrap_servers": bootstrap,
        "topic_prefix": prefix,
        "consumer_group": f"g-{uuid.uuid4().hex[:10]}",
        "audit_hash_key": "test-audit-key",
        "http_port": 0,
        "topic_partitions": 3,
    }
    values.update(overrides)
    return Settings(**values)


async def prepare(settings: Settings) -> None:
    """Migrate the database and create the topics."""
    await migrate(settings.database_url)
    await ensure_topics(settings)


async def send_raw(settings: Settings, messages: Iterable[tuple[str, bytes | None, bytes | None]]
                   ) -> None:
    """Send (topic suffix, key, value) triples, in order, and wait for every acknowledgement."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all",
                                enable_idempotence=True, linger_ms=5,
                                max_request_size=3 * 1024 * 1024)
    await producer.start()
    try:
        futures = [await producer.send(settings.topic(suffix), key=key, value=value)
                   for suffix, key, value in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def send_events(settings: Settings, events: Iterable[EventBase]) -> None:
    await send_raw(settings, ((topic_suffix(e.event_type), message_key(e), serialize_event(e))
                              for e in events))


@contextlib.asynccontextmanager
async def running_daemon(settings: Settings) -> AsyncIterator[ConsumerDaemon]:
    """The consumer daemon in this event loop; SIGTERM-equivalent stop on exit."""
    daemon = ConsumerDaemon(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        yield daemon
    finally:
        stop.set()
        code = await asyncio.wait_for(task, timeout=60)
        assert code == 0, f"daemon exited {code}"


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float = 60.0,
                   what: str = "condition") -> None:
    """Poll `check` until it is true, failing after `timeout` seconds (no bare sleeps)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def count(dsn: str, sql: str, *args: Any) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(sql, *args))
    finally:
        await conn.close()


async def fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def wait_for_processed(settings: Settings, expected: int, timeout: float = 90.0) -> None:
    """Until `expected` messages are accounted for (processed or dead-lettered)."""
    dsn = settings.database_url

    async def done() -> bool:
        n = await count(dsn, "SELECT (SELECT count(*) FROM processed_events) + "
                             "(SELECT count(*) FROM dead_letter_events)")
        return n >= expected

    await wait_for(done, timeout, f"{expected} processed events")


async def wait_caught_up(settings: Settings, total_messages: int, timeout: float = 120.0) -> None:
    """Until the group's stored offsets account for `total_messages` (fresh topics start at 0)."""

    async def done() -> bool:
        n = await count(settings.database_url,
                        "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets "
                        "WHERE consumer_group = $1", settings.consumer_group)
        return n >= total_messages

    await wait_for(done, timeout, f"offsets covering {total_messages} messages")
