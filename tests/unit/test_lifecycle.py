"""Lifecycle scheduling settings and jobs, without services (consumers/lifecycle.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from consumers.lifecycle import LOCK_KEYS, Job, lifecycle_jobs
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
