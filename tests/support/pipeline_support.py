"""Driving the real pipeline from tests: settings, producing and reading messages, running the
daemon and the command line."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from consumers.daemon import ConsumerDaemon
from finpass_pipeline import cli as pipeline_cli
from finpass_pipeline import db
from finpass_pipeline.events import (
    EventBase,
    message_key,
    parse_event,
    serialize_event,
    topic_suffix,
)
from finpass_pipeline.kafka import domain_topics, ensure_topics
from finpass_pipeline.migrations import migrate
from finpass_pipeline.settings import Settings
from producers.publisher import new_event
from tests.support import REPO_ROOT

TEST_PII_MASTER_KEY = "dGVzdC1vbmx5LXBpaS1tYXN0ZXIta2V5LTMyYnl0ZXM="
"""The tests' PII master key (32 bytes, base64; `FINPASS_PII_MASTER_KEY`)."""


@contextlib.asynccontextmanager
async def scratch_database(admin_dsn: str) -> AsyncIterator[str]:
    """DSN of a brand-new, empty database on the server of `admin_dsn`; dropped afterwards."""
    async with db.scratch_database(admin_dsn, f"t_{uuid.uuid4().hex[:16]}") as dsn:
        yield dsn


def make_settings(database_url: str, bootstrap: str, prefix: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "kafka_bootstrap_servers": bootstrap,
        "topic_prefix": prefix,
        "consumer_group": f"g-{uuid.uuid4().hex[:10]}",
        "audit_hash_key": "test-audit-key",
        "pii_master_key": TEST_PII_MASTER_KEY,
        "http_port": 0,
        "topic_partitions": 3,
    }
    values.update(overrides)
    return Settings(**values)


def kafka_settings(bootstrap: str, prefix: str, **overrides: Any) -> Settings:
    return Settings(kafka_bootstrap_servers=bootstrap, topic_prefix=prefix, topic_partitions=3,
                    **overrides)


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


async def read_topics(bootstrap: str, topics: Iterable[str], within: float = 60.0
                      ) -> list[ConsumerRecord]:
    """Every message now in `topics`, from a fresh consumer (no group), in (topic, partition,
    offset) order. Call it after the writes were acknowledged: it reads up to the end offsets."""
    wanted = set(topics)
    # No group: the consumer assigns itself every partition of the topics once it has metadata.
    consumer = AIOKafkaConsumer(*wanted, bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        deadline = time.monotonic() + within
        while {tp.topic for tp in consumer.assignment()} != wanted:
            assert time.monotonic() < deadline, f"no partitions assigned for {wanted}"
            await asyncio.sleep(0.05)
        partitions: list[TopicPartition] = list(consumer.assignment())
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[ConsumerRecord] = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, f"timed out reading {len(partitions)} partitions"
            for batch in (await consumer.getmany(timeout_ms=200, max_records=5000)).values():
                records.extend(batch)
        return sorted(records, key=lambda r: (r.topic, r.partition, r.offset))
    finally:
        await consumer.stop()


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
                   what: str = "condition", interval: float = 0.2) -> None:
    """Poll `check` every `interval` seconds until it is true, failing after `timeout` seconds
    (no bare sleeps)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(interval)
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


def finpass_env(**values: str) -> dict[str, str]:
    """This process's environment without its `FINPASS_*` variables, plus `values`: what a
    `finpass-pipeline` subprocess should see (never the caller's configuration by accident)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINPASS_")}
    env.update(values)
    return env


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`finpass-pipeline *args` as a process in the repository's root, with no `FINPASS_*`
    variable but those in `env`."""
    return subprocess.run([sys.executable, "-m", "finpass_pipeline.cli", *args],
                          capture_output=True, text=True, env=finpass_env(**(env or {})),
                          cwd=REPO_ROOT, timeout=60, check=False)


def report_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, dsn: str,
               *argv: str) -> tuple[int, str, str]:
    """`finpass-pipeline report *argv` in this process against `dsn`: (exit code, out, err)."""
    monkeypatch.setenv("FINPASS_DATABASE_URL", dsn)
    with pytest.raises(SystemExit) as exit_info:
        pipeline_cli.main(["report", *argv])
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


# --- the transactional outbox (producers.outbox) --------------------------------------------------


def seen(did: str, seq: int) -> EventBase:
    """A `user.seen` for the outbox, numbered `seq` (in its data and its correlation id)."""
    return new_event("user.seen", {"did": did, "seq": seq}, source_system="tests",
                     correlation_id=f"req-{seq}")


async def sent_count(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM event_outbox WHERE sent_at IS NOT NULL"))


async def all_sent(conn: asyncpg.Connection) -> bool:
    return not await conn.fetchval("SELECT count(*) FROM event_outbox WHERE sent_at IS NULL")


async def published_ids(settings: Settings) -> list[uuid.UUID]:
    """The event ids now on the domain topics of `settings`, in (topic, partition, offset) order."""
    records = await read_topics(settings.kafka_bootstrap_servers, domain_topics(settings))
    return [parse_event(r.value).event_id for r in records]


async def refuse_payments(dsn: str, refusals: dict[str, str]) -> None:
    """Make PostgreSQL refuse inserting a payment whose `reference_id` is a key of `refusals`,
    with that SQLSTATE (a stand-in for a constraint the models do not know about). Trigger
    `test_refuse` on `payments`; drop it to play "the fix"."""
    branches = "\n".join(
        f"{'IF' if i == 0 else 'ELSIF'} NEW.reference_id = '{ref}' THEN "
        f"RAISE EXCEPTION 'refused (test): %', NEW.reference_id USING ERRCODE = '{state}';"
        for i, (ref, state) in enumerate(refusals.items()))
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"""
            CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                {branches}
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER test_refuse BEFORE INSERT ON payments
                FOR EACH ROW EXECUTE FUNCTION test_refuse();""")
    finally:
        await conn.close()
