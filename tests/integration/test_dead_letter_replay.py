"""`dead-letters replay|discard` against the real services: a worked incident (issue "Running
it"). PostgreSQL refuses 50 payments (a trigger standing in for an upstream bug the fix
removes), 50 other messages are not JSON, and an authorization waits parked for one refused payment.
After the fix, replay applies the 50 (and so the parked authorization) exactly once, leaves the 50
others waiting, and a second replay changes nothing. Discard marks letters, audited."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from consumers.dead_letter_ops import discard, replay
from finpass_pipeline.audit.verify import verify
from finpass_pipeline.errors import FinpassError
from finpass_pipeline.ops.inspect import DeadLetterFilter
from finpass_pipeline.settings import Settings
from tests.support.builders import ev, initiated
from tests.support.pipeline_support import (
    count,
    fetch,
    refuse_payments,
    running_daemon,
    send_events,
    send_raw,
    wait_caught_up,
)

REFUSED, NOT_JSON = 50, 50


@pytest.fixture
async def settings(settings: Settings) -> AsyncIterator[Settings]:
    """The shared settings, no stop-the-line in reach, and PostgreSQL refusing payments whose
    reference is `upstream-bug` (SQLSTATE P0001)."""
    s = settings.model_copy(update={"max_consecutive_dead_letters": 100_000})
    await refuse_payments(s.database_url, {"upstream-bug": "P0001"})
    yield s


async def state(s: Settings) -> dict[str, int]:
    one = s.database_url
    return {
        "payments": await count(one, "SELECT count(*) FROM payments"),
        "authorized": await count(one, "SELECT count(*) FROM payments WHERE status = 'AUTHORIZED'"),
        "parked": await count(one, "SELECT count(*) FROM parked_events"),
        "waiting": await count(one, "SELECT count(*) FROM dead_letter_events "
                               "WHERE handled_as IS NULL"),
        "replayed": await count(one, "SELECT count(*) FROM dead_letter_events "
                                "WHERE handled_as = 'REPLAYED'"),
        "discarded": await count(one, "SELECT count(*) FROM dead_letter_events "
                                 "WHERE handled_as = 'DISCARDED'"),
        "audit": await count(one, "SELECT count(*) FROM audit_events"),
        "audit_replayed": await count(one, "SELECT count(*) FROM audit_events "
                                      "WHERE event_type = 'DEAD_LETTER_REPLAYED'"),
        "audit_discarded": await count(one, "SELECT count(*) FROM audit_events "
                                       "WHERE event_type = 'DEAD_LETTER_DISCARDED'"),
    }


async def test_replay_after_the_fix_applies_once_and_twice_changes_nothing(
        settings: Settings) -> None:
    refused = [initiated(uuid.uuid4(), reference_id="upstream-bug", at=i)
               for i in range(REFUSED)]
    authorize = ev("payment.authorized", payment_id=refused[0].data.payment_id, at=100)  # type: ignore[attr-defined]
    await send_events(settings, [*refused, authorize])
    await send_raw(settings, [("payments", f"k{i}".encode(), b"not json")
                              for i in range(NOT_JSON)])
    async with running_daemon(settings):
        await wait_caught_up(settings, REFUSED + 1 + NOT_JSON)
    before = await state(settings)
    assert before | {"audit": 0} == {
        "payments": 0, "authorized": 0, "parked": 1, "waiting": REFUSED + NOT_JSON,
        "replayed": 0, "discarded": 0, "audit": 0, "audit_replayed": 0, "audit_discarded": 0}

    # The upstream fix.
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute("DROP TRIGGER test_refuse ON payments")
    finally:
        await conn.close()

    lines: list[str] = []
    report = await replay(settings, DeadLetterFilter(), by="alice", note="INC-42 fixed",
                          say=lines.append)
    assert (report.applied, report.still_invalid, report.reason_changed) == (
        REFUSED, NOT_JSON, 0)
    assert lines[0] == f"replaying {REFUSED + NOT_JSON} dead letter(s) of group " \
                       f"{settings.consumer_group}"
    assert lines[-1] == f"  100/100: {REFUSED} applied, {NOT_JSON} still invalid"
    after = await state(settings)
    # One audit row per applied payment, one for the revived authorization, one per replay.
    assert after == before | {
        "payments": REFUSED, "authorized": 1, "parked": 0, "waiting": NOT_JSON,
        "replayed": REFUSED, "audit": before["audit"] + 2 * REFUSED + 1,
        "audit_replayed": REFUSED}
    [marked] = await fetch(settings.database_url,
                           "SELECT DISTINCT handled_by, handled_note FROM dead_letter_events "
                           "WHERE handled_as = 'REPLAYED'")
    assert tuple(marked) == ("alice", "INC-42 fixed")

    again = await replay(settings, DeadLetterFilter(), by="alice")
    assert (again.applied, again.still_invalid, again.reason_changed) == (0, NOT_JSON, 0)
    assert await state(settings) == after

    conn = await asyncpg.connect(settings.database_url)
    try:
        assert (await verify(conn)).intact
    finally:
        await conn.close()


async def test_discard_marks_with_who_and_why_once_and_is_audited(settings: Settings) -> None:
    await send_raw(settings, [("users", b"a", b"not json"), ("users", b"b", b"[]")])
    async with running_daemon(settings):
        await wait_caught_up(settings, 2)
    ids = [r["id"] for r in await fetch(settings.database_url,
                                        "SELECT id FROM dead_letter_events ORDER BY id")]
    out: list[str] = []
    assert await discard(settings, [*ids, 999_999], by="bob", note="test noise",
                         say=out.append) == 2
    assert out == ["discarded 2 dead letter(s); not waiting (unknown or handled already): "
                   "999999"]
    assert await discard(settings, ids, by="bob", note="again", say=out.append) == 0
    s = await state(settings)
    assert (s["discarded"], s["waiting"], s["audit_discarded"]) == (2, 0, 2)
    rows = await fetch(settings.database_url,
                       "SELECT resource_id, action, performed_by_role, details::jsonb->>'why' "
                       "AS why FROM audit_events WHERE resource_type = 'DEAD_LETTER' "
                       "ORDER BY resource_id")
    assert [tuple(r) for r in rows] == [(str(i), "DISCARD", "OPERATOR", "test noise")
                                        for i in sorted(ids)]
    # Nothing is deleted: the bytes stay.
    assert await count(settings.database_url, "SELECT count(*) FROM dead_letter_events "
                       "WHERE raw_value IS NOT NULL") == 2
    with pytest.raises(FinpassError, match="discard needs --why"):
        await discard(settings, ids, by="bob", note="  ")
