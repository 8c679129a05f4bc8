"""`payment.initiated` v1 and v2 apply identically, through the real consumer (issue #15).

The demo stream is sent twice, each time into a fresh database and topics: once as our producers
send it (v2), once with a seeded random half of its payments downcast to v1 by this test (the
mapping is written here, from CONTRACT and docs/events.md, not taken from the upcaster). Every
table, column by column, must come out the same. Then the upgrade case: an event id stored before
v2 existed (its digest that of the v1 form) and re-sent in v1 is a silent duplicate, while a
re-send with different content is still a dead letter.
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from consumers.records import Incoming
from consumers.store import content_digest
from finpass_pipeline.events import (
    CURRENT_VERSIONS,
    EventBase,
    message_key,
    parse_event,
    serialize_event,
    topic_suffix,
)
from finpass_pipeline.settings import Settings
from producers.demo_stream import demo_events
from tests.support.builders import payment_initiated
from tests.support.pipeline_support import (
    count,
    fetch,
    make_settings,
    prepare,
    running_daemon,
    scratch_database,
    send_raw,
    wait_caught_up,
)
from tests.support.services import Services
from tests.support.tables import STABLE_ORDER, first_difference, table_checksums

START = datetime(2026, 11, 1, tzinfo=UTC)


def as_v1(raw: bytes) -> bytes:
    """A v2 `payment.initiated` message as a v1 producer sends the same payment."""
    document: dict[str, Any] = json.loads(raw)
    data = document["data"]
    amount = data.pop("amount")
    data["amount"], data["currency"] = amount["value"], amount["currency"]
    data["reference_id"] = data.pop("merchant_reference")
    document["schema_version"] = 1
    return json.dumps(document).encode()


def messages(events: Sequence[EventBase], v1_share: float, seed: int
             ) -> list[tuple[str, bytes, bytes]]:
    rng = random.Random(seed)
    out = []
    for e in events:
        raw = serialize_event(e)
        if e.event_type == "payment.initiated" and rng.random() < v1_share:
            raw = as_v1(raw)
        out.append((topic_suffix(e.event_type), message_key(e), raw))
    return out


async def consume_into(settings: Settings, sent: list[tuple[str, bytes, bytes]]) -> None:
    await prepare(settings)
    await send_raw(settings, sent)
    async with running_daemon(settings):
        await wait_caught_up(settings, len(sent))


async def test_v1_and_v2_payments_apply_identically(services: Services) -> None:
    assert CURRENT_VERSIONS["payment.initiated"] == 2
    events = list(demo_events(600, 40, seed=11, start=START))
    v2 = messages(events, 0.0, seed=3)
    mixed = messages(events, 0.5, seed=3)
    downcast = sum(1 for (_, _, a), (_, _, b) in zip(v2, mixed, strict=True) if a != b)
    initiated = sum(1 for e in events if e.event_type == "payment.initiated")
    assert 0 < downcast < initiated  # both versions really are in the mixed stream
    async with (scratch_database(services.database_url) as dsn_a,
                scratch_database(services.database_url) as dsn_b):
        a = make_settings(dsn_a, services.kafka_bootstrap_servers, f"t{uuid.uuid4().hex[:10]}.")
        b = make_settings(dsn_b, services.kafka_bootstrap_servers, f"t{uuid.uuid4().hex[:10]}.")
        await consume_into(a, v2)
        await consume_into(b, mixed)
        assert await count(dsn_a, "SELECT count(*) FROM payments") == initiated
        assert await count(dsn_a, "SELECT count(*) FROM dead_letter_events") == 0
        assert await count(dsn_b, "SELECT count(*) FROM dead_letter_events") == 0
        prefixes = (a.topic_prefix, b.topic_prefix)
        expected = await table_checksums(dsn_a, a.topic_prefix)
        got = await table_checksums(dsn_b, b.topic_prefix)
        for table in STABLE_ORDER:
            assert got[table] == expected[table], await first_difference(dsn_a, dsn_b, table,
                                                                         prefixes)


async def test_an_upgrade_keeps_v1_resends_silent(settings: Settings) -> None:
    """Rows stored before v2 hold the digest of the v1 form; a v1 re-send still matches it."""
    pay = payment_initiated()
    raw_v1 = serialize_event(pay)
    await prepare(settings)
    sent = [("payments", message_key(pay), raw_v1)]
    await send_raw(settings, sent)
    async with running_daemon(settings):
        await wait_caught_up(settings, 1)
    # What the code before v2 stored: SHA-256 of the v1 model's serialisation.
    before_v2 = hashlib.sha256(raw_v1).digest()
    assert before_v2 != content_digest(Incoming(parse_event(raw_v1), "t", 0, 0, raw_v1))
    conn_rows = await fetch(settings.database_url,
                            "UPDATE processed_events SET content_digest = $1 WHERE event_id = $2 "
                            "RETURNING event_id", before_v2, pay.event_id)
    assert len(conn_rows) == 1
    changed = json.loads(raw_v1)
    changed["data"]["amount"] = "99.99"
    again = [("payments", message_key(pay), raw_v1),  # identical: silent
             ("payments", message_key(pay), json.dumps(changed).encode())]  # a dead letter
    await send_raw(settings, again)
    async with running_daemon(settings):
        await wait_caught_up(settings, 3)
    letters = await fetch(settings.database_url,
                          "SELECT kafka_offset, reason FROM dead_letter_events ORDER BY 1")
    assert [(r["kafka_offset"], r["reason"]) for r in letters] == [
        (2, "event_id reused with different content")]
    rows = await fetch(settings.database_url, "SELECT amount, currency, reference_id FROM payments")
    assert [(str(r["amount"]), r["currency"], r["reference_id"]) for r in rows] == [
        (str(pay.data.amount), pay.data.currency, pay.data.reference_id)]
