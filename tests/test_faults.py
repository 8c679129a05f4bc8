"""Fault injection: the consumer is killed, stopped and restarted mid-stream; nothing is lost and
nothing is applied twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from finpass_pipeline.settings import Settings
from tests.pipeline_support import (
    count,
    fetch,
    make_settings,
    prepare,
    send_events,
    wait_caught_up,
    wait_for,
)
from tests.streams import Expected, payments_stream

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def consumer_env(s: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINPASS_")}
    env.update(
        FINPASS_DATABASE_URL=s.database_url,
        FINPASS_KAFKA_BOOTSTRAP_SERVERS=s.kafka_bootstrap_servers,
        FINPASS_TOPIC_PREFIX=s.topic_prefix,
        FINPASS_CONSUMER_GROUP=s.consumer_group,
        FINPASS_AUDIT_HASH_KEY="test-audit-key",
        FINPASS_HTTP_PORT="0",
        FINPASS_LOG_FORMAT="json",
        FINPASS_BATCH_MAX_EVENTS="500",
    )
    return env


class ConsumerProcess:
    """A real `finpass-pipeline consume` process, stopped by the pid we started."""

    def __init__(self, s: Settings, log: Path) -> None:
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "finpass_pipeline.cli", "consume"], env=consumer_env(s),
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def terminate(self, timeout: float = 30.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[list[ConsumerProcess]]:
    started: list[ConsumerProcess] = []
    yield started
    for p in started:
        p.close()


@pytest.fixture
async def settings(fresh_db: str, bootstrap: str, topic_prefix: str) -> Settings:
    s = make_settings(fresh_db, bootstrap, topic_prefix)
    await prepare(s)
    return s


async def assert_exact(s: Settings, expected: Expected) -> None:
    dsn = s.database_url
    assert await count(dsn, "SELECT count(*) FROM users") == expected.users
    by_status = {r["status"]: r["n"] for r in await fetch(
        dsn, "SELECT status, count(*) AS n FROM payments GROUP BY status")}
    assert by_status == expected.payments_by_status
    assert await count(dsn, "SELECT count(*) FROM audit_events") == expected.audit_rows
    assert await count(dsn, "SELECT count(DISTINCT event_id) FROM audit_events") == (
        expected.audit_rows)
    assert await count(dsn, "SELECT count(*) FROM processed_events") == len(expected.events)
    assert await count(dsn, "SELECT count(*) FROM parked_events") == 0
    assert await count(dsn, "SELECT count(*) FROM dead_letter_events") == 0
    assert await count(dsn, "SELECT count(*) FROM audit_events WHERE outcome <> 'SUCCESS'") == 0


async def test_kill9_mid_stream_loses_nothing_applies_nothing_twice(
        settings: Settings, processes: list[ConsumerProcess], tmp_path: Path) -> None:
    """kill -9 twice during a 21,000-event stream; after restart the tables are exact."""
    expected = payments_stream()
    assert len(expected.events) >= 20_000
    await send_events(settings, expected.events)
    dsn = settings.database_url
    for threshold in (3_000, 9_000):
        proc = ConsumerProcess(settings, tmp_path / "consumer.log")
        processes.append(proc)

        async def past(n: int = threshold) -> bool:
            return await count(dsn, "SELECT count(*) FROM processed_events") >= n

        await wait_for(past, 120, f"{threshold} events applied")
        proc.kill9()
    final = ConsumerProcess(settings, tmp_path / "consumer.log")
    processes.append(final)
    await wait_caught_up(settings, len(expected.events), timeout=180)
    assert final.terminate() == 0
    await assert_exact(settings, expected)


async def test_sigterm_drains_and_exits_0(settings: Settings, processes: list[ConsumerProcess],
                                          tmp_path: Path) -> None:
    """SIGTERM mid-stream: the batch in flight commits, the process exits 0 within 15 s, and a
    restart finishes the stream exactly."""
    expected = payments_stream(users=500, payments=1_000, logins=500, seed=11)
    await send_events(settings, expected.events)
    proc = ConsumerProcess(settings, tmp_path / "consumer.log")
    processes.append(proc)

    async def started() -> bool:
        return await count(settings.database_url, "SELECT count(*) FROM processed_events") > 0

    await wait_for(started, 120, "first batch")
    t0 = time.monotonic()
    assert proc.terminate(timeout=15) == 0
    assert time.monotonic() - t0 < 15
    # Whatever was committed is consistent: every processed event has its audit row.
    assert await count(settings.database_url, "SELECT count(*) FROM processed_events") == (
        await count(settings.database_url, "SELECT count(*) FROM audit_events")
        + await count(settings.database_url, "SELECT count(*) FROM parked_events"))
    again = ConsumerProcess(settings, tmp_path / "consumer.log")
    processes.append(again)
    await wait_caught_up(settings, len(expected.events), timeout=120)
    assert again.terminate() == 0
    await assert_exact(settings, expected)
