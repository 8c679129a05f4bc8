"""Lifecycle scheduling settings and jobs, without services (consumers/lifecycle.py)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from consumers.lifecycle import LOCK_KEYS, Job, LifecycleScheduler, lifecycle_jobs
from finpass_pipeline.metrics import ConsumerMetrics
from finpass_pipeline.settings import Settings


async def _nothing(conn: object) -> str:
    return ""


def test_jobs_are_off_by_default() -> None:
    """No FINPASS_SCHEDULE_* setting: the daemon schedules nothing."""
    assert lifecycle_jobs(Settings(audit_hash_key="k")) == []


def test_each_job_has_its_own_setting() -> None:
    """One interval per job; the prune window comes from FINPASS_SCHEDULE_PRUNE_OLDER_THAN."""
    only_prune = lifecycle_jobs(Settings(audit_hash_key="k", schedule_prune_seconds=3600,
                                         schedule_prune_older_than="12h"))
    assert [(j.name, j.interval) for j in only_prune] == [("prune", 3600)]
    both = lifecycle_jobs(Settings(audit_hash_key="k", schedule_prune_seconds=60,
                                   schedule_audit_retention_seconds=86400))
    assert [(j.name, j.interval) for j in both] == [("audit_retention", 86400), ("prune", 60)]


@pytest.mark.parametrize("field,value", [("schedule_prune_seconds", -1),
                                         ("schedule_audit_retention_seconds", "soon"),
                                         ("schedule_prune_older_than", "0d"),
                                         ("schedule_prune_older_than", "30 days")])
def test_bad_schedule_settings_are_refused(field: str, value: object) -> None:
    """A negative interval or a window prune would not accept is a configuration error."""
    with pytest.raises(ValidationError, match=field):
        Settings.model_validate({"audit_hash_key": "k", field: value})


def test_a_job_is_due_a_little_before_its_interval_and_locks_by_its_own_key() -> None:
    """Slack of 10 % (at most 5 s) so timer jitter never skips a round; distinct lock keys."""
    assert Job("prune", 1.0, _nothing).not_before == timedelta(seconds=0.9)
    assert Job("prune", 3600, _nothing).not_before == timedelta(seconds=3595)
    assert len(set(LOCK_KEYS.values())) == len(LOCK_KEYS)
    assert all(-(2**63) <= k < 2**63 for k in LOCK_KEYS.values())


async def test_an_unreachable_database_is_a_counted_failure_not_an_exception() -> None:
    """The round fails (logged, counted); nothing is raised to the daemon."""
    async def refuse() -> asyncpg.Connection:
        raise ConnectionRefusedError("connection refused")

    metrics = ConsumerMetrics()
    scheduler = LifecycleScheduler([Job("prune", 60, _nothing)], metrics, refuse, run_by="t")
    with capture_logs() as logs:
        assert await scheduler.run_once(scheduler.jobs[0]) == "failure"
    assert metrics.registry.get_sample_value(
        "finpass_lifecycle_runs_total", {"job": "prune", "outcome": "failure"}) == 1
    assert [e["event"] for e in logs] == ["lifecycle_job_failed"]
    assert "connection refused" in logs[0]["error"]


async def test_no_jobs_means_the_scheduler_returns_at_once() -> None:
    """The default: `run` ends immediately and opens no connection."""
    async def never() -> asyncpg.Connection:
        raise AssertionError("opened a connection")

    await LifecycleScheduler([], ConsumerMetrics(), never).run(asyncio.Event())
