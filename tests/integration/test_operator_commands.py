"""The operator's read-only commands against the real services: `dead-letters list|show`,
`parked list`, `offsets show` (issue "Running it")."""

from __future__ import annotations

import json
import uuid

from finpass_pipeline.ops.inspect import (
    DeadLetterFilter,
    dead_letters_list,
    dead_letters_show,
    offsets_show,
    parked_list,
)
from finpass_pipeline.settings import Settings
from tests.support.builders import ev, initiated
from tests.support.pipeline_support import (
    cli,
    fetch,
    running_daemon,
    send_events,
    send_raw,
    wait_caught_up,
)

HOSTILE = b'{"x": "\x00\x1b[31mred\n", \xff\xfe}'
"""A NUL, a terminal escape sequence, a line break and bytes that are not UTF-8."""


async def scene(settings: Settings) -> uuid.UUID:
    """3 valid events, 2 dead letters (one hostile, one not JSON), 1 capture parked waiting
    for its payment; returns that payment's id."""
    paid, waiting = uuid.uuid4(), uuid.uuid4()
    await send_events(settings, [initiated(paid), ev("payment.captured", payment_id=waiting,
                                                     at=1),
                                 ev("payment.authorized", payment_id=paid, at=2)])
    await send_raw(settings, [("payments", b"k1", HOSTILE), ("users", b"k2", b"not json")])
    async with running_daemon(settings):
        await wait_caught_up(settings, 5)
    return waiting


async def test_dead_letters_list_filters_and_show_escapes_the_bytes(settings: Settings) -> None:
    await scene(settings)
    out: list[str] = []
    assert await dead_letters_list(settings, DeadLetterFilter(), say=out.append) == 0
    assert out[-1] == "2 of 2 dead letter(s)"
    assert out[0].split() == ["id", "dead_lettered_at", "source", "event_type", "bytes",
                              "handled", "reason"]
    out.clear()
    only = DeadLetterFilter(topic=settings.topic("users"), reason="^not json")
    assert await dead_letters_list(settings, only, fmt="json", say=out.append) == 0
    [letter] = [json.loads(line) for line in out]
    assert (letter["topic"], letter["bytes"], letter["event_type"]) == (
        settings.topic("users"), 8, None)
    assert letter["reason"].startswith("not JSON")
    out.clear()
    assert await dead_letters_list(settings, DeadLetterFilter(reason="nothing-like-it"),
                                   say=out.append) == 0
    assert out[-1] == "0 of 0 dead letter(s)"

    [hostile] = await fetch(settings.database_url, "SELECT id FROM dead_letter_events "
                            "WHERE topic = $1", settings.topic("payments"))
    out.clear()
    assert await dead_letters_show(settings, hostile["id"], say=out.append) == 0
    text = "\n".join(out)
    assert f"source          {settings.topic('payments')}[" in text
    assert f"({len(HOSTILE)} bytes;" in text
    assert "handled         no (waiting:" in text
    assert out[-1] == '{"x": "\\x00\\x1b[31mred\\n", \\xff\\xfe}'
    assert not any(c in text for c in "\x00\x1b\r") and all(ln.isprintable() for ln in out)


async def test_parked_list_names_what_each_event_waits_for(settings: Settings) -> None:
    waiting = await scene(settings)
    out: list[str] = []
    assert await parked_list(settings, say=out.append) == 0
    assert out[-1] == "1 of 1 parked event(s), oldest first"
    [row] = out[1:-1]
    assert "payment.captured" in row and f"payment {waiting}" in row
    out.clear()
    assert await parked_list(settings, fmt="json", say=out.append) == 0
    [parked] = [json.loads(line) for line in out]
    assert (parked["subject_type"], parked["subject_key"]) == ("payment", str(waiting))
    assert parked["age_seconds"] >= 0


async def test_offsets_show_database_and_kafka_side_by_side(settings: Settings) -> None:
    await scene(settings)
    out: list[str] = []
    assert await offsets_show(settings, say=out.append) == 0
    rows = [line.split() for line in out[1:-1]]
    assert sum(int(r[2]) for r in rows) == 5  # every message is accounted for in the database
    assert all(r[2] == r[3] == r[4] and r[5] == "0" for r in rows)  # Kafka follows; no lag
    assert out[-1] == f"group {settings.consumer_group}: {len(rows)} partition(s) in the database"


def test_show_of_an_unknown_id_is_one_line_and_exit_1(settings: Settings) -> None:
    done = cli("dead-letters", "show", "987654321",
               env={"FINPASS_DATABASE_URL": settings.database_url})
    assert done.returncode == 1, done
    assert done.stderr.strip().splitlines() == [
        "finpass-pipeline: no dead letter with id 987654321"]
