"""Lifecycle jobs the consume daemon runs by itself: audit retention and prune (opt-in).

Each job is off unless its interval is set (`FINPASS_SCHEDULE_AUDIT_RETENTION_SECONDS`,
`FINPASS_SCHEDULE_PRUNE_SECONDS`). Every process of the consumer group runs the same timer. At
each tick a process opens a connection of its own (a job may take minutes; the batches keep the
pool) and tries the job's *session* advisory lock with `pg_try_advisory_lock`, which never
waits: a process that does not get it skips the round (outcome `locked`). Holding the lock, it
runs the job only if `lifecycle_job_runs` says the group last started it at least one interval
ago (else `not_due`), and records the start first. So the group runs each job once per interval
and never two at a time, whatever the number of processes, their restarts or the offsets between
their timers. A failure is logged, counted, recorded in `lifecycle_job_runs`, and tried again
next interval; it never reaches the consumer. A process that dies mid-job loses its session,
and with it the lock.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

import asyncpg
import structlog

from finpass_pipeline.audit.retention import run_retention
from finpass_pipeline.db import connect, describe
from finpass_pipeline.metrics import ConsumerMetrics
from finpass_pipeline.prune import CLAIMS, parse_window, prune
from finpass_pipeline.retry import sleep_or_stop
from finpass_pipeline.settings import Settings

log = structlog.get_logger("finpass.lifecycle")

Outcome = Literal["success", "failure", "locked", "not_due"]
JobBody = Callable[[asyncpg.Connection], Awaitable[str]]

# pg_advisory_lock keys, one per job ("finlife" + a job number; signed bigints). Advisory locks
# are per database, so consumer groups of different databases never see each other's.
LOCK_KEYS = {"audit_retention": 0x66696E6C69666501, "prune": 0x66696E6C69666502}


@dataclass(frozen=True)
class Job:
    """One scheduled job: its name (a key of LOCK_KEYS), interval and body. The body gets a
    connection outside any transaction and returns a one-line summary for the log."""

    name: str
    interval: float
    body: JobBody

    @property
    def lock_key(self) -> int:
        return LOCK_KEYS[self.name]

    @property
    def not_before(self) -> timedelta:
        """How long after the group's last start the job is due again: the interval, less a
        little slack so that timer jitter never makes a process skip a whole interval."""
        return timedelta(seconds=self.interval - min(self.interval * 0.1, 5.0))


async def _retention(conn: asyncpg.Connection) -> str:
    outcomes = await run_retention(conn)
    dropped = [o.name for o in outcomes if o.dropped]
    stop = next((o for o in outcomes if not o.dropped), None)
    kept = f"; kept {stop.name} onwards: {stop.reason}" if stop else ""
    return f"dropped {len(dropped)} partition(s){': ' + ', '.join(dropped) if dropped else ''}" \
           f"{kept}"


async def _prune(conn: asyncpg.Connection, window: timedelta) -> str:
    result = await prune(conn, CLAIMS, window)
    return (f"deleted {result.deleted} {result.table} row(s) older than "
            f"{result.cutoff.isoformat()}")


def lifecycle_jobs(settings: Settings) -> list[Job]:
    """The jobs `settings` turns on (none by default)."""
    jobs = []
    if settings.schedule_audit_retention_seconds:
        jobs.append(Job("audit_retention", settings.schedule_audit_retention_seconds,
                        _retention))
    if settings.schedule_prune_seconds:
        window = parse_window(settings.schedule_prune_older_than)
        jobs.append(Job("prune", settings.schedule_prune_seconds,
                        functools.partial(_prune, window=window)))
    return jobs


class LifecycleScheduler:
    """Runs `jobs` on their intervals until `stop` is set (`await scheduler.run(stop)`)."""

    def __init__(self, jobs: list[Job], metrics: ConsumerMetrics,
                 open_connection: Callable[[], Awaitable[asyncpg.Connection]],
                 run_by: str | None = None) -> None:
        self.jobs = jobs
        self.metrics = metrics
        self.open_connection = open_connection
        self.run_by = run_by or f"{socket.gethostname()}:{os.getpid()}"
        for job in jobs:
            metrics.lifecycle_interval.labels(job.name).set(job.interval)

    @classmethod
    def for_settings(cls, settings: Settings, metrics: ConsumerMetrics) -> LifecycleScheduler:
        async def open_connection() -> asyncpg.Connection:
            return await connect(settings.database_url, role=settings.database_role)
        return cls(lifecycle_jobs(settings), metrics, open_connection)

    async def run(self, stop: asyncio.Event) -> None:
        """One timer per job; the first round right away (a round that is not due is cheap)."""
        if not self.jobs:
            return
        log.info("lifecycle_scheduled", run_by=self.run_by,
                 jobs={j.name: j.interval for j in self.jobs})
        await asyncio.gather(*(self._every(job, stop) for job in self.jobs))

    async def _every(self, job: Job, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.run_once(job)
            await sleep_or_stop(job.interval, stop)

    async def run_once(self, job: Job) -> Outcome:
        """One round of `job` in this process. Never raises (but for cancellation)."""
        outcome: Outcome = "failure"
        try:
            conn = await self.open_connection()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            log.exception("lifecycle_job_failed", job=job.name, error=describe(e),
                      note="no database connection; tried again next interval")
        else:
            try:
                outcome = await self._locked_round(conn, job)
            except Exception as e:  # a lifecycle job must never stop the consumer
                log.exception("lifecycle_job_failed", job=job.name, error=describe(e))
            finally:
                # Closing ends the session: its advisory lock goes with it.
                await conn.close(timeout=10)
        self.metrics.lifecycle_runs.labels(job.name, outcome).inc()
        return outcome

    async def _locked_round(self, conn: asyncpg.Connection, job: Job) -> Outcome:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", job.lock_key):
            log.debug("lifecycle_job_skipped", job=job.name, reason="locked")
            return "locked"
        # Under the lock: claim the round only if the group's last start is an interval old.
        claimed = await conn.fetchval(
            "INSERT INTO lifecycle_job_runs AS r (job, last_started_at, last_outcome, run_by,"
            " runs) VALUES ($1, now(), 'running', $3, 1) ON CONFLICT (job) DO UPDATE"
            " SET last_started_at = now(), last_outcome = 'running', run_by = excluded.run_by,"
            " runs = r.runs + 1, last_error = NULL, last_summary = NULL"
            " WHERE r.last_started_at <= now() - $2::interval RETURNING true",
            job.name, job.not_before, self.run_by)
        if not claimed:
            log.debug("lifecycle_job_skipped", job=job.name, reason="not_due")
            return "not_due"
        log.info("lifecycle_job_started", job=job.name, run_by=self.run_by)
        started = time.monotonic()
        try:
            summary = await job.body(conn)
        except Exception as e:  # recorded, counted, retried next interval
            elapsed = time.monotonic() - started
            self.metrics.lifecycle_duration.labels(job.name).observe(elapsed)
            error = describe(e)
            log.exception("lifecycle_job_failed", job=job.name, error=error,
                      duration_s=round(elapsed, 3), note="tried again next interval")
            await self._record(conn, job, "failure", error=error)
            return "failure"
        elapsed = time.monotonic() - started
        self.metrics.lifecycle_duration.labels(job.name).observe(elapsed)
        self.metrics.lifecycle_last_success.labels(job.name).set(time.time())
        log.info("lifecycle_job_done", job=job.name, summary=summary,
                 duration_s=round(elapsed, 3))
        await self._record(conn, job, "success", summary=summary)
        return "success"

    async def _record(self, conn: asyncpg.Connection, job: Job, outcome: str,
                      error: str | None = None, summary: str | None = None) -> None:
        await conn.execute(
            "UPDATE lifecycle_job_runs SET last_finished_at = now(), last_outcome = $2,"
            " last_error = $3, last_summary = $4 WHERE job = $1",
            job.name, outcome, error, summary)
