"""Scheduled lifecycle jobs (consumers/lifecycle.py) against a real PostgreSQL: once per round
across processes, never two at a time, failures logged and counted without stopping anything."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import structlog
from structlog.testing import capture_logs

from consumers.lifecycle import Job, LifecycleScheduler, lifecycle_jobs
from finpass_pipeline.metrics import ConsumerMetrics
from finpass_pipeline.migrations import migrate
from finpass_pipeline.settings import Settings
from tests.support.builders import registered
from tests.support.pipeline_support import (
    count,
    running_daemon,
    send_events,
    wait_caught_up,
    wait_for,
)


def opener(dsn: str) -> Callable[[], Awaitable[asyncpg.Connection]]:
    async def open_connection() -> asyncpg.Connection:
        return await asyncpg.connect(dsn)
    return open_connection


def runs(metrics: ConsumerMetrics, job: str, outcome: str) -> float:
    value = metrics.registry.get_sample_value("finpass_lifecycle_runs_total",
                                              {"job": job, "outcome": outcome})
    return value or 0.0


class Recorder:
    """A job body that notes when it ran and fails if two runs ever overlap."""

    def __init__(self, seconds: float = 0.2) -> None:
        self.seconds = seconds
        self.spans: list[tuple[float, float]] = []
        self.active = 0

    async def __call__(self, conn: asyncpg.Connection) -> str:
        self.active += 1
        try:
            assert self.active == 1, "two runs at once"
            start = time.monotonic()
            await conn.execute("SELECT pg_sleep($1)", self.seconds)
            self.spans.append((start, time.monotonic()))
            return f"run {len(self.spans)}"
        finally:
            self.active -= 1


async def test_two_schedulers_run_a_job_once_per_round(fresh_db: str) -> None:
    """Two processes' schedulers tick together: one runs the job, the other skips (locked or
    not due); again at once, nobody runs it; an interval later, exactly one runs it again."""
    await migrate(fresh_db)
    body = Recorder()
    job = Job("prune", 3600, body)
    a = LifecycleScheduler([job], ConsumerMetrics(), opener(fresh_db), run_by="a")
    b = LifecycleScheduler([job], ConsumerMetrics(), opener(fresh_db), run_by="b")
    conn = await asyncpg.connect(fresh_db)
    try:
        for rnd in range(1, 4):
            outcomes = await asyncio.gather(a.run_once(job), b.run_once(job))
            assert sorted(outcomes)[-1] == "success" and outcomes.count("success") == 1, outcomes
            assert set(outcomes) <= {"success", "locked", "not_due"}
            again = await asyncio.gather(a.run_once(job), b.run_once(job))
            assert "success" not in again, again
            row = await conn.fetchrow("SELECT * FROM lifecycle_job_runs WHERE job = 'prune'")
            assert (row["runs"], row["last_outcome"], row["last_summary"]) == (
                rnd, "success", f"run {rnd}")
            assert row["run_by"] in ("a", "b")
            # An interval passes.
            await conn.execute("UPDATE lifecycle_job_runs"
                               " SET last_started_at = last_started_at - interval '1 hour'")
    finally:
        await conn.close()
    assert len(body.spans) == 3
    assert runs(a.metrics, "prune", "success") + runs(b.metrics, "prune", "success") == 3


async def test_schedulers_on_their_timers_never_overlap_and_keep_the_interval(
        fresh_db: str) -> None:
    """Two schedulers running their own timers for a few intervals: runs never overlap and
    start at least an interval (less its slack) apart, whichever process runs them."""
    await migrate(fresh_db)
    body = Recorder(0.1)
    job = Job("prune", 1.0, body)
    schedulers = [LifecycleScheduler([job], ConsumerMetrics(), opener(fresh_db), run_by=n)
                  for n in ("a", "b")]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(schedulers[0].run(stop))]
    await asyncio.sleep(0.45)  # b's timer half a round behind a's
    tasks.append(asyncio.create_task(schedulers[1].run(stop)))
    await wait_for(lambda: _done(body, 4), timeout=15, what="four runs")
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=15)
    starts = [s for s, _ in body.spans]
    assert all(later - earlier >= 0.85 for earlier, later in itertools.pairwise(starts))
    skipped = sum(runs(s.metrics, "prune", o) for s in schedulers for o in ("locked", "not_due"))
    assert skipped >= 3  # the other timers' rounds


async def _done(body: Recorder, n: int) -> bool:
    return len(body.spans) >= n


async def test_real_jobs_prune_claims_and_drop_expired_partitions(fresh_db: str) -> None:
    """The scheduled prune deletes old claims (never a parked one) and the scheduled retention
    drops ended partitions past retention; both are metered and recorded."""
    await migrate(fresh_db)
    settings = Settings(database_url=fresh_db, audit_hash_key="k",
                        schedule_prune_seconds=60, schedule_audit_retention_seconds=60,
                        schedule_prune_older_than="30d")
    jobs = {j.name: j for j in lifecycle_jobs(settings)}
    assert set(jobs) == {"prune", "audit_retention"}
    conn = await asyncpg.connect(fresh_db)
    try:
        await conn.execute(
            "INSERT INTO processed_events (event_id, event_type, topic, kafka_partition,"
            " kafka_offset, state, processed_at) SELECT gen_random_uuid(), 'user.seen', 't', 0,"
            " i, CASE WHEN i = 0 THEN 'PARKED' ELSE 'APPLIED' END,"
            " now() - interval '40 days' + i * interval '1 minute'"
            " FROM generate_series(0, 9) AS i")
        await conn.execute("INSERT INTO processed_events (event_id, event_type, topic,"
                           " kafka_partition, kafka_offset, state) VALUES"
                           " (gen_random_uuid(), 'user.seen', 't', 0, 99, 'APPLIED')")
        await conn.execute("SELECT audit_ensure_partitions(0, now() - interval '3 months')")
        before = await conn.fetchval("SELECT count(*) FROM audit_partitions()")
        metrics = ConsumerMetrics()
        scheduler = LifecycleScheduler(list(jobs.values()), metrics, opener(fresh_db))
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            assert await scheduler.run_once(jobs["prune"]) == "success"
            assert await scheduler.run_once(jobs["audit_retention"]) == "success"
        assert await conn.fetchval("SELECT count(*) FROM processed_events") == 2  # parked, new
        assert await conn.fetchval("SELECT count(*) FROM audit_partitions()") == before - 3
        rows = {r["job"]: r for r in await conn.fetch("SELECT * FROM lifecycle_job_runs")}
        assert rows["prune"]["last_summary"].startswith("deleted 9 processed_events row(s)")
        assert rows["audit_retention"]["last_summary"].startswith("dropped 3 partition(s)")
        assert all(r["last_outcome"] == "success" and r["last_finished_at"] for r in
                   rows.values())
    finally:
        await conn.close()
    done = [e for e in logs if e["event"] == "lifecycle_job_done"]
    assert {e["job"] for e in done} == {"prune", "audit_retention"}
    for job in ("prune", "audit_retention"):
        assert runs(metrics, job, "success") == 1
        assert (metrics.registry.get_sample_value(
            "finpass_lifecycle_last_success_timestamp_seconds", {"job": job}) or 0) > 0
        assert metrics.registry.get_sample_value(
            "finpass_lifecycle_duration_seconds_count", {"job": job}) == 1
        assert metrics.registry.get_sample_value(
            "finpass_lifecycle_interval_seconds", {"job": job}) == 60


async def test_a_failing_job_is_logged_and_counted_and_the_consumer_keeps_going(
        settings: Settings) -> None:
    """A job that fails every round: each failure is logged, counted and recorded, the job is
    tried again next interval, and the daemon goes on applying events and exits 0."""
    async def broken(conn: asyncpg.Connection) -> str:
        raise RuntimeError("disk on fire")

    events = [registered(f"did:example:life-{i}", at=i) for i in range(30)]
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        async with running_daemon(settings) as daemon:
            daemon.lifecycle.jobs = [Job("prune", 0.5, broken)]
            await send_events(settings, events[:15])
            await wait_for(lambda: _at_least(daemon.metrics, 2), timeout=30,
                           what="two failed rounds")
            await send_events(settings, events[15:])
            await wait_caught_up(settings, len(events))
    assert await count(settings.database_url, "SELECT count(*) FROM users") == 30
    failed = [e for e in logs if e["event"] == "lifecycle_job_failed"]
    assert len(failed) >= 2 and all(e["job"] == "prune" and "disk on fire" in e["error"]
                                    for e in failed)
    row = await _row(settings.database_url)
    assert row["last_outcome"] == "failure" and "disk on fire" in row["last_error"]


async def _at_least(metrics: ConsumerMetrics, n: int) -> bool:
    return runs(metrics, "prune", "failure") >= n


async def _row(dsn: str) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchrow("SELECT * FROM lifecycle_job_runs WHERE job = 'prune'")
    finally:
        await conn.close()


async def test_two_daemons_of_one_group_share_the_schedule(settings: Settings) -> None:
    """Two consume daemons with FINPASS_SCHEDULE_PRUNE_SECONDS=1: the group prunes once per
    second between them — every run is counted by exactly one daemon."""
    scheduled = settings.model_copy(update={"schedule_prune_seconds": 1})
    async with running_daemon(scheduled) as one, running_daemon(scheduled) as two:
        await send_events(scheduled, [registered("did:example:pair", at=0)])
        await wait_caught_up(scheduled, 1)
        await wait_for(lambda: _runs_at_least(scheduled.database_url, 3), timeout=30,
                       what="three scheduled prunes")
    row = await _row(scheduled.database_url)
    ran = sum(runs(d.metrics, "prune", "success") for d in (one, two))
    # Every claimed round ran in exactly one daemon (the last may have been cut by the stop).
    assert row["runs"] >= 3 and row["runs"] - ran in (0, 1)
    skipped = sum(runs(d.metrics, "prune", o) for d in (one, two) for o in ("locked", "not_due"))
    assert skipped >= 1


async def _runs_at_least(dsn: str, n: int) -> bool:
    row = await _row(dsn)
    return row is not None and row["runs"] >= n and row["last_outcome"] == "success"
