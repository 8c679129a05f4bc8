"""Bad input never sinks the stream: dead letters with reasons, database rejections isolated by
bisection, and the stop-the-line limit."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer

from consumers.daemon import ConsumerDaemon
from finpass_pipeline.events import message_key, serialize_event
from finpass_pipeline.settings import Settings
from tests.support.builders import ev, initiated, issued, registered
from tests.support.pipeline_support import (
    count,
    fetch,
    make_settings,
    prepare,
    running_daemon,
    send_events,
    send_raw,
    wait_caught_up,
)
from tests.support.privacy import plain_users


def valid_payment() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(serialize_event(initiated(uuid.uuid4())))
    return document


def mutated(**changes: Any) -> bytes:
    body = valid_payment()
    for dotted, value in changes.items():
        target = body
        *path, last = dotted.split("__")
        for part in path:
            target = target[part]
        if value is ...:
            del target[last]
        else:
            target[last] = value
    return json.dumps(body).encode()


# (case, topic suffix, raw value, a fragment the reason must contain)
CORPUS: list[tuple[str, str, bytes | None, str]] = [
    ("not utf-8", "payments", b"\xff\xfe\xfd", "UTF-8"),
    ("not json", "payments", b"{oops", "JSON"),
    ("json array", "payments", b"[1,2,3]", "object"),
    ("json string", "payments", b'"hello"', "object"),
    ("json null", "payments", b"null", "object"),
    ("empty", "payments", b"", "empty"),
    ("tombstone", "payments", None, "tombstone"),
    ("unknown type", "payments", mutated(event_type="payment.teleported"), "event_type"),
    ("missing type", "payments", mutated(event_type=...), "event_type"),
    ("missing event_id", "payments", mutated(event_id=...), "event_id"),
    ("bad event_id", "payments", mutated(event_id="not-a-uuid"), "event_id"),
    ("naive occurred_at", "payments", mutated(occurred_at="2026-11-27T17:00:00"),
     "occurred_at"),
    ("garbage occurred_at", "payments", mutated(occurred_at="yesterday"), "occurred_at"),
    ("missing correlation_id", "payments", mutated(correlation_id=...), "correlation_id"),
    ("long correlation_id", "payments", mutated(correlation_id="c" * 256), "correlation_id"),
    ("schema_version 3", "payments", mutated(schema_version=3), "schema_version"),
    ("v1 data as v2", "payments", mutated(schema_version=2), "in schema_version 2"),
    ("3 decimals", "payments", mutated(data__amount="10.001"), "amount"),
    ("negative amount", "payments", mutated(data__amount="-5.00"), "amount"),
    ("NaN amount", "payments", mutated(data__amount="NaN"), "amount"),
    ("lower-case currency", "payments", mutated(data__currency="eur"), "currency"),
    ("bad payment_id", "payments", mutated(data__payment_id="42"), "payment_id"),
    ("data not object", "payments", mutated(data=[1]), "data"),
    ("missing data", "payments", mutated(data=...), "data"),
    ("bad payment_type", "payments", mutated(data__payment_type="WEEKLY"), "payment_type"),
    ("wrong topic", "users", mutated(), "belongs on topic"),
    ("too large", "payments", b'{"pad": "' + b"x" * 1_100_000 + b'"}', "larger than"),
]


async def test_malformed_corpus_dead_lettered_valid_events_flow(settings: Settings) -> None:
    """26 kinds of bad input, each between valid events: each dead-lettered with its reason,
    raw bytes and position; every valid event applied; none audited."""
    assert len(CORPUS) >= 20
    valid = [initiated(uuid.uuid4()) for _ in range(len(CORPUS) + 1)]
    messages: list[tuple[str, bytes | None, bytes | None]] = []
    for i, (_, topic, raw, _) in enumerate(CORPUS):
        messages.append(("payments", str(valid[i].data.payment_id).encode(),  # type: ignore[attr-defined]
                         serialize_event(valid[i])))
        messages.append((topic, b"poison", raw))
    messages.append(("payments", message_key(valid[-1]), serialize_event(valid[-1])))
    await send_raw(settings, messages)
    async with running_daemon(settings):
        await wait_caught_up(settings, len(messages))
    dead = await fetch(settings.database_url,
                       "SELECT topic, kafka_partition, kafka_offset, raw_value, reason, "
                       "message_key FROM dead_letter_events")
    assert len(dead) == len(CORPUS)
    by_raw = {bytes(d["raw_value"]) if d["raw_value"] is not None else None: d for d in dead}
    for case, topic, raw, fragment in CORPUS:
        row = by_raw[raw]
        assert fragment.lower() in row["reason"].lower(), (case, row["reason"])
        assert row["topic"] == settings.topic(topic) and row["message_key"] == b"poison"
    assert await count(settings.database_url, "SELECT count(*) FROM payments") == len(valid)
    assert await count(settings.database_url, "SELECT count(*) FROM audit_events") == len(valid)
    # The dead-letter topic got the same messages, with the reason in a header.
    consumer = AIOKafkaConsumer(settings.topic("dead-letter"),
                                bootstrap_servers=settings.bootstrap_servers,
                                auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        got: list[Any] = []
        while len(got) < len(CORPUS):
            batch = await consumer.getmany(timeout_ms=2000)
            assert batch, f"dead-letter topic has only {len(got)} messages"
            got.extend(r for rs in batch.values() for r in rs)
    finally:
        await consumer.stop()
    assert all(r.key == b"poison" and dict(r.headers)["reason"] for r in got)


async def test_database_rejection_is_isolated_by_bisection(settings: Settings) -> None:
    """Rows the database refuses (duplicate transaction id, duplicate credential JWT) are
    dead-lettered alone; the rest of their batch applies."""
    did = "did:example:carol"
    p1, p2, p3 = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    c1, c2 = uuid.uuid4(), uuid.uuid4()
    first_tx = ev("payment.authorized", payment_id=p1, transaction_id="tx-same", at=1)
    dup_tx = ev("payment.authorized", payment_id=p2, transaction_id="tx-same", at=2)
    first_jwt = issued(c1, did, credential_jwt="same.jwt.sig", at=1)
    dup_jwt = issued(c2, did, credential_jwt="same.jwt.sig", at=3)
    events = [
        registered(did), first_jwt, dup_jwt,
        initiated(p1), initiated(p2), initiated(p3),
        first_tx, dup_tx,
        ev("payment.authorized", payment_id=p3, transaction_id="tx-other", at=2),
    ]
    await send_events(settings, events)
    async with running_daemon(settings):
        await wait_caught_up(settings, len(events))
    dead = await fetch(settings.database_url, "SELECT event_id, reason FROM dead_letter_events")
    dead_ids = {d["event_id"] for d in dead}
    # Which of each pair wins depends on cross-partition order; exactly one of each loses.
    assert len(dead_ids) == 2
    assert len(dead_ids & {first_tx.event_id, dup_tx.event_id}) == 1
    assert len(dead_ids & {first_jwt.event_id, dup_jwt.event_id}) == 1
    assert all(d["reason"].startswith("could not apply the event: SQLSTATE 2") for d in dead)
    statuses = {r["id"]: r["status"] for r in await fetch(
        settings.database_url, "SELECT id, status FROM payments")}
    loser = p1 if first_tx.event_id in dead_ids else p2
    winner = p2 if loser == p1 else p1
    assert statuses == {loser: "PENDING", winner: "AUTHORIZED", p3: "AUTHORIZED"}
    assert await count(settings.database_url, "SELECT count(*) FROM credentials") == 1
    assert await count(settings.database_url, "SELECT count(*) FROM audit_events") == 7


async def test_stop_the_line_after_consecutive_dead_letters(fresh_db: str, bootstrap: str,
                                                           topic_prefix: str) -> None:
    """N dead letters in a row on one partition stop the consumer with exit code 1."""
    s = make_settings(fresh_db, bootstrap, topic_prefix, max_consecutive_dead_letters=5,
                      topic_partitions=1)
    await prepare(s)
    await send_raw(s, [("payments", b"k", b"garbage")] * 7)
    code = await asyncio.wait_for(ConsumerDaemon(s).run(asyncio.Event()), timeout=60)
    assert code == 1
    # Exactly the limit is dead-lettered; the rest stays unconsumed for after the fix.
    assert await count(s.database_url, "SELECT count(*) FROM dead_letter_events") == 5
    stored = await fetch(s.database_url, "SELECT next_offset, consecutive_dead_letters "
                                         "FROM consumer_offsets")
    assert [(r["next_offset"], r["consecutive_dead_letters"]) for r in stored] == [(5, 5)]
    # Restarting is the operator's decision to go on: the backlog drains and valid events flow.
    p = uuid.uuid4()
    await send_events(s, [initiated(p)])
    async with running_daemon(s):
        await wait_caught_up(s, 8)
    assert await count(s.database_url, "SELECT count(*) FROM dead_letter_events") == 7
    assert await count(s.database_url, "SELECT count(*) FROM payments WHERE id = $1", p) == 1


async def test_rejected_registration_and_duplicate_subjects_are_audited(
        settings: Settings) -> None:
    """A second user.registered for a known DID changes nothing and is audited REJECTED."""
    did = "did:example:dave"
    first = registered(did, email="first@example.com")
    second = registered(did, email="second@example.com", at=5)
    await send_events(settings, [first, second])
    async with running_daemon(settings):
        await wait_caught_up(settings, 2)
    conn = await asyncpg.connect(settings.database_url)
    try:
        assert await plain_users(conn) == {did: ("first@example.com", None)}
    finally:
        await conn.close()
    audit = await fetch(settings.database_url, "SELECT outcome, severity FROM audit_events "
                                               "WHERE event_id = $1", second.event_id)
    assert [(a["outcome"], a["severity"]) for a in audit] == [("REJECTED", "WARNING")]
