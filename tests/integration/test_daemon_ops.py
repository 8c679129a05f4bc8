"""Operating the daemon: /healthz and /metrics, logs with event ids bound and no raw DIDs."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid

import pytest
import structlog
from structlog.testing import capture_logs

from finpass_pipeline.settings import Settings
from tests.support.builders import ev, initiated
from tests.support.pipeline_support import (
    fetch,
    make_settings,
    running_daemon,
    send_events,
    send_raw,
    wait_caught_up,
    wait_for,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared settings, serving HTTP on a port known in advance (the tests call it)."""
    return settings.model_copy(update={"http_port": free_port()})


async def test_healthz_and_metrics(settings: Settings) -> None:
    """/healthz answers 200 once partitions are assigned; /metrics counts what happened."""
    p = uuid.uuid4()
    await send_events(settings, [initiated(p), ev("payment.captured", payment_id=p, at=1)])
    await send_raw(settings, [("payments", b"x", b"not json")])
    async with running_daemon(settings):
        await wait_caught_up(settings, 3)
        status, body = await http_get(settings.http_port, "/healthz")
        assert status == 200 and json.loads(body)["ok"] is True
        text = ""

        async def counted() -> bool:
            nonlocal text
            status, metrics = await http_get(settings.http_port, "/metrics")
            text = metrics.decode()
            return status == 200 and "finpass_events_dead_lettered_total{" in text

        # The database commit is visible a moment before the daemon updates its counters.
        await wait_for(counted, 10, "metrics after the commit")
        assert 'finpass_events_applied_total{event_type="payment.initiated"} 1.0' in text
        assert 'finpass_events_rejected_total{event_type="payment.captured"} 1.0' in text
        assert [ln for ln in text.splitlines() if "dead_lettered_total{" in ln] == [
            "finpass_events_dead_lettered_total{event_type=\"unknown\"} 1.0"]
        assert "finpass_batch_duration_seconds_count" in text
        assert "finpass_end_to_end_latency_seconds_bucket" in text
        assert 'finpass_consumer_lag{partition=' in text
        assert (await http_get(settings.http_port, "/nope"))[0] == 404


async def test_logs_bind_event_and_correlation_ids_without_raw_dids(settings: Settings) -> None:
    """A rejected transition is logged with event_id and correlation_id; no DID in any log."""
    p = uuid.uuid4()
    bad = ev("payment.captured", payment_id=p, at=1, correlation_id="corr-logs-1")
    await send_events(settings, [initiated(p, payer="did:example:secret-payer"), bad])
    # merge_contextvars: the per-event fields are bound as context, as in production.
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        async with running_daemon(settings):
            await wait_caught_up(settings, 2)
    rejected = [entry for entry in logs if entry["event"] == "event_rejected"]
    assert len(rejected) == 1
    assert rejected[0]["event_id"] == str(bad.event_id)
    assert rejected[0]["correlation_id"] == "corr-logs-1"
    assert "did:example" not in json.dumps(logs, default=str)


async def test_database_offsets_win_over_kafka_committed_offsets(settings: Settings) -> None:
    """Kafka's committed offsets ahead of the database's (e.g. a restored database): the
    consumer starts where the database is and applies everything in order."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    p = uuid.uuid4()
    events = [initiated(p), ev("payment.authorized", payment_id=p, at=1),
              ev("payment.captured", payment_id=p, at=2)]
    await send_events(settings, events)
    tps = [TopicPartition(settings.topic("payments"), i) for i in range(3)]
    committer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers,
                                 group_id=settings.consumer_group, enable_auto_commit=False)
    await committer.start()
    try:
        committer.assign(tps)
        ends = await committer.end_offsets(tps)
        await committer.commit({tp: max(end - 1, 0) for tp, end in ends.items()})
    finally:
        await committer.stop()
    async with running_daemon(settings):
        await wait_caught_up(settings, 3)
    rows = await fetch(settings.database_url, "SELECT status FROM payments")
    assert [r["status"] for r in rows] == ["CAPTURED"]
    outcomes = await fetch(settings.database_url, "SELECT outcome FROM audit_events")
    assert sorted(r["outcome"] for r in outcomes) == ["SUCCESS"] * 3


async def test_daemon_creates_missing_topics(fresh_db: str, bootstrap: str,
                                             topic_prefix: str) -> None:
    """Started before `finpass-pipeline topics`, the daemon creates the contract's topics
    (dead-letter included) and works."""
    from finpass_pipeline.kafka import all_topics, topic_partitions
    from finpass_pipeline.migrations import migrate

    s = make_settings(fresh_db, bootstrap, topic_prefix)
    await migrate(s.database_url)
    async with running_daemon(s):
        async def created() -> bool:
            found = await topic_partitions(s, all_topics(s))
            return all(found.get(t) for t in all_topics(s))

        await wait_for(created, 30, "the five topics")
        await send_raw(s, [("payments", b"k", b"oops")])
        await send_events(s, [initiated(uuid.uuid4())])
        await wait_caught_up(s, 2)
    dead = await fetch(s.database_url, "SELECT reason FROM dead_letter_events")
    assert len(dead) == 1
