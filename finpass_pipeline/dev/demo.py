"""`finpass-pipeline demo`: the main job end to end on the configured (or local) services.

Migrations, topics, the consumer daemon (a real subprocess, stopped with SIGTERM by its pid), a
`produce-demo` stream, waiting until the consumer has committed everything, then a summary of
what landed.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from finpass_pipeline.kafka import domain_topics, ensure_topics, topic_partitions
from finpass_pipeline.migrations import migrate
from finpass_pipeline.settings import Settings

SUMMARY_TABLES = ("users", "credentials", "credential_status", "payments", "audit_events",
                  "dead_letter_events", "parked_events")


@dataclass
class Summary:
    rows: dict[str, int]
    events_per_second: float | None
    consumed: int
    seconds: float


async def end_offsets(settings: Settings) -> dict[tuple[str, int], int]:
    """The log-end offset of every partition of the domain topics."""
    parts: list[TopicPartition] = []
    for topic, partitions in (await topic_partitions(settings, domain_topics(settings))).items():
        if not partitions:
            raise RuntimeError(f"topic {topic} does not exist: run `finpass-pipeline topics`")
        parts.extend(TopicPartition(topic, p) for p in partitions)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(parts)
        return {(tp.topic, tp.partition): off for tp, off in ends.items()}
    finally:
        await consumer.stop()


async def stored_offsets(settings: Settings) -> dict[tuple[str, int], int]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetch("SELECT topic, kafka_partition, next_offset FROM consumer_offsets "
                                "WHERE consumer_group = $1", settings.consumer_group)
    finally:
        await conn.close()
    return {(r["topic"], r["kafka_partition"]): r["next_offset"] for r in rows}


async def wait_until_consumed(settings: Settings, consumer: subprocess.Popen[bytes],
                              limit_s: float = 600.0) -> None:
    """Block until the database's offsets reach the topics' ends (progress on stderr)."""
    ends = await end_offsets(settings)
    total = sum(ends.values())
    deadline = time.monotonic() + limit_s
    last_print = 0.0
    while True:
        stored = await stored_offsets(settings)
        behind = sum(max(end - stored.get(tp, 0), 0) for tp, end in ends.items())
        if behind == 0:
            print(f"consumer caught up: {total} messages committed", file=sys.stderr)
            return
        if consumer.poll() is not None:
            raise RuntimeError(f"the consumer exited with code {consumer.returncode} "
                               f"while {behind} messages were still unconsumed")
        if time.monotonic() > deadline:
            raise RuntimeError(f"consumer still {behind} messages behind after {limit_s:.0f}s")
        if time.monotonic() - last_print > 2:
            print(f"  consumer: {total - behind}/{total} committed", file=sys.stderr)
            last_print = time.monotonic()
        await asyncio.sleep(0.25)


async def summarize(settings: Settings, since: datetime | None = None) -> Summary:
    """Rows per table; consumer throughput over the events processed since `since` (all): per
    second in which the consumer committed, so idle time between runs does not dilute it."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = {t: int(await conn.fetchval(f"SELECT count(*) FROM {t}")) for t in SUMMARY_TABLES}
        span = await conn.fetchrow(
            "SELECT count(*) AS n, count(DISTINCT date_trunc('second', processed_at)) AS s "
            "FROM processed_events WHERE processed_at >= $1",
            since or datetime(1970, 1, 1, tzinfo=UTC))
    finally:
        await conn.close()
    n, seconds = int(span["n"]), float(span["s"] or 0.0)
    return Summary(rows, n / seconds if seconds > 0 else None, n, seconds)


def print_summary(summary: Summary) -> None:
    print("\nWhat landed in PostgreSQL:")
    for table, n in summary.rows.items():
        print(f"  {table:<20} {n:>10,}")
    if summary.events_per_second:
        print(f"  consumer throughput  {summary.events_per_second:>10,.0f} events/s "
              f"({summary.consumed:,} events in {summary.seconds:.0f} s with commits)")


def start_consumer(settings: Settings) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    if settings.audit_hash_key is None and not settings.dev_mode:
        print("demo: FINPASS_AUDIT_HASH_KEY is not set; the consumer runs in dev mode with the "
              "dev-only pseudonym key", file=sys.stderr)
        env["FINPASS_DEV_MODE"] = "true"
    return subprocess.Popen(
        [sys.executable, "-m", "finpass_pipeline.cli", "consume"], env=env,
        stdin=subprocess.DEVNULL,
    )


def stop_consumer(consumer: subprocess.Popen[bytes]) -> int:
    if consumer.poll() is None:
        consumer.send_signal(signal.SIGTERM)  # by the pid we started, never by name
    try:
        return consumer.wait(timeout=60)
    except subprocess.TimeoutExpired:
        consumer.kill()
        return consumer.wait()


async def run_demo(settings: Settings, count: int, users: int, seed: int | None,
                   rate: float) -> int:
    from finpass_pipeline.dev.produce import produce_demo

    applied = await migrate(settings.database_url)
    print(f"migrations: applied {applied or 'none (up to date)'}")
    created = await ensure_topics(settings)
    print(f"topics: {sum(created.values())} created, {len(created) - sum(created.values())} "
          "existed")
    seed = seed if seed is not None else random.SystemRandom().randrange(1 << 30)
    began = datetime.now(UTC)
    consumer = start_consumer(settings)
    try:
        print(f"producing {count:,} demo events for {users:,} users (seed {seed})")
        counts = await produce_demo(settings, count=count, rate=rate, users=users, seed=seed)
        print(f"produced {sum(counts.values()):,} events")
        await wait_until_consumed(settings, consumer)
    finally:
        code = stop_consumer(consumer)
    print(f"consumer stopped with SIGTERM: exit code {code}")
    print_summary(await summarize(settings, since=began))
    return 0 if code == 0 else 1
