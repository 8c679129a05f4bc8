"""Operating the daemon: /healthz and /metrics, logs with event ids bound and no raw DIDs."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid

import pytest
import structlog
from structlog.testing import capture_logs

from consumers import daemon as daemon_module
from consumers.daemon import ConsumerDaemon
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
        # Every committed message's produce-to-commit time; applied events' age.
        assert "finpass_commit_latency_seconds_count 3.0" in text
        assert "finpass_event_age_seconds_count 2.0" in text
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


def samples(text: str, name: str) -> dict[str, float]:
    """`name{labels} value` lines of a /metrics text, by label text."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            labels, _, value = line[len(name):].rpartition(" ")
            out[labels] = float(value)
    return out


async def test_lag_covers_every_assigned_partition_at_idle(settings: Settings) -> None:
    """Lag has a series for each of the 24 assigned partitions from assignment on, not only
    for the partitions that carried data; at idle, after catching up, every one is 0."""
    p = uuid.uuid4()
    await send_events(settings, [initiated(p), ev("payment.captured", payment_id=p, at=1)])
    async with running_daemon(settings) as daemon:
        await wait_caught_up(settings, 2)

        async def all_zero() -> bool:
            lag = samples(daemon.metrics.render().decode(), "finpass_consumer_lag")
            return len(lag) == 4 * settings.topic_partitions and set(lag.values()) == {0.0}

        await wait_for(all_zero, 20, "a zero lag series for every assigned partition")
        lag = samples(daemon.metrics.render().decode(), "finpass_consumer_lag")
        topics = {label.split('topic="')[1].split('"')[0] for label in lag}
        assert topics == {settings.topic(t) for t in ("users", "credentials", "payments",
                                                       "security")}


async def test_retries_are_counted_while_the_database_is_away_at_start(
        settings: Settings) -> None:
    """A database that does not answer at start-up is retried, and each wait is counted in
    finpass_transient_retries_total (it used to stay 0 until a batch retried)."""
    dead = settings.model_copy(update={"database_url": "postgresql://nobody@127.0.0.1:1/none"})
    daemon = ConsumerDaemon(dead)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))

    async def retried() -> bool:
        text = daemon.metrics.render().decode()
        return samples(text, "finpass_transient_retries_total").get("", 0) >= 2

    try:
        await wait_for(retried, 20, "two counted retries")
    finally:
        stop.set()
        assert await asyncio.wait_for(task, timeout=30) == 0  # stopped before it started


async def test_parked_events_are_counted_and_their_age_shown(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A capture before its payment is parked: counted by type, the parked gauge shows 1 and
    the oldest age grows; once the payment arrives, both gauges fall back to 0."""
    monkeypatch.setattr(daemon_module, "PARKED_EVERY_S", 0.2)
    p = uuid.uuid4()
    await send_events(settings, [ev("payment.captured", payment_id=p, at=1)])
    async with running_daemon(settings) as daemon:
        await wait_caught_up(settings, 1)

        async def parked_one() -> bool:
            text = daemon.metrics.render().decode()
            return samples(text, "finpass_parked_events").get("", 0) == 1.0 and samples(
                text, "finpass_parked_oldest_age_seconds").get("", 0) > 0

        await wait_for(parked_one, 20, "the parked gauges")
        text = daemon.metrics.render().decode()
        assert samples(text, "finpass_events_parked_total") == {
            '{event_type="payment.captured"}': 1.0}
        await send_events(settings, [initiated(p)])
        await wait_caught_up(settings, 2)

        async def none_parked() -> bool:
            text = daemon.metrics.render().decode()
            return samples(text, "finpass_parked_events").get("", -1) == 0.0 and samples(
                text, "finpass_parked_oldest_age_seconds").get("", -1) == 0.0

        await wait_for(none_parked, 20, "the parked gauges back at 0")
        # Applied after its payment: counted once as parked, never again.
        assert samples(daemon.metrics.render().decode(), "finpass_events_parked_total") == {
            '{event_type="payment.captured"}': 1.0}
