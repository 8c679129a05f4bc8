"""The producing side: `new_event`, the correlation context and `Publisher` against the real broker.

`read_topics` (read every message currently in some topics) is shared with the outbox and demo
tests.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    RecordTooLargeError,
    RequestTimedOutError,
    TopicAuthorizationFailedError,
    UnknownError,
)

from finpass_pipeline.events import (
    EVENT_TYPES,
    InvalidEventError,
    message_key,
    parse_event,
    serialize_event,
    topic_suffix,
)
from finpass_pipeline.kafka import domain_topics, ensure_topics
from finpass_pipeline.settings import Settings
from producers.errors import (
    BrokerUnavailable,
    InvalidEvent,
    MessageRejected,
    PublishError,
    translate_kafka_error,
)
from producers.publisher import CORRELATION_ID, Publisher, correlation, new_event


async def read_topics(bootstrap: str, topics: Iterable[str], within: float = 60.0
                      ) -> list[ConsumerRecord]:
    """Every message now in `topics`, from a fresh consumer (no group), in (topic, partition,
    offset) order. Call it after the writes were acknowledged: it reads up to the end offsets."""
    wanted = set(topics)
    # No group: the consumer assigns itself every partition of the topics once it has metadata.
    consumer = AIOKafkaConsumer(*wanted, bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        deadline = time.monotonic() + within
        while {tp.topic for tp in consumer.assignment()} != wanted:
            assert time.monotonic() < deadline, f"no partitions assigned for {wanted}"
            await asyncio.sleep(0.05)
        partitions: list[TopicPartition] = list(consumer.assignment())
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[ConsumerRecord] = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, f"timed out reading {len(partitions)} partitions"
            for batch in (await consumer.getmany(timeout_ms=200, max_records=5000)).values():
                records.extend(batch)
        return sorted(records, key=lambda r: (r.topic, r.partition, r.offset))
    finally:
        await consumer.stop()


def kafka_settings(bootstrap: str, prefix: str, **overrides: Any) -> Settings:
    return Settings(kafka_bootstrap_servers=bootstrap, topic_prefix=prefix, topic_partitions=3,
                    **overrides)


DID = "did:example:publisher-test"
PAYMENT, CREDENTIAL = uuid.uuid4(), uuid.uuid4()
DATA: dict[str, dict[str, Any]] = {
    "user.registered": {"did": DID, "email": "p@example.com", "metadata": {"tier": "gold"}},
    "user.kyc_verified": {"did": DID},
    "user.status_changed": {"did": DID, "status": "SUSPENDED", "reason": "review"},
    "user.seen": {"did": DID},
    "credential.issued": {"credential_id": CREDENTIAL, "user_did": DID,
                          "issuer_id": "did:web:issuer.example", "credential_type": "KYC",
                          "credential_jwt": "header.payload.signature"},
    "credential.revoked": {"credential_id": CREDENTIAL, "reason": "superseded"},
    "credential.suspended": {"credential_id": CREDENTIAL},
    "credential.reinstated": {"credential_id": CREDENTIAL},
    "credential.expired": {"credential_id": CREDENTIAL},
    "payment.initiated": {"payment_id": PAYMENT, "payer_did": DID, "payee_did": "did:web:shop",
                          "amount": "1250.00", "currency": "EUR", "fee_amount": "0.35"},
    "payment.authorized": {"payment_id": PAYMENT, "transaction_id": "txn-1"},
    "payment.captured": {"payment_id": PAYMENT},
    "payment.failed": {"payment_id": PAYMENT, "failure_reason": "declined"},
    "payment.refunded": {"payment_id": PAYMENT, "refund_reason": "returned"},
    "payment.cancelled": {"payment_id": PAYMENT},
    "auth.login_succeeded": {"did": DID, "session_id": "s-1"},
    "auth.login_failed": {"reason": "invalid password"},  # no DID: keyed by the session id
}


def test_data_covers_every_event_type() -> None:
    """The fixtures below exercise every event type of the contract."""
    assert set(DATA) == set(EVENT_TYPES)


@pytest.mark.integration
async def test_every_event_type_lands_on_its_topic_with_its_key(bootstrap: str,
                                                               topic_prefix: str) -> None:
    """Each event type goes to its topic, keyed by its aggregate, as bytes parse_event accepts."""
    settings = kafka_settings(bootstrap, topic_prefix)
    await ensure_topics(settings)
    with correlation("req-publisher-1"):
        events = [new_event(t, data, source_system="tests",
                            actor={"session_id": "s-anon", "ip_address": "203.0.113.9"})
                  for t, data in DATA.items()]
    async with Publisher(settings) as publisher:
        first = await publisher.publish(events[0])
        rest = await publisher.publish_many(events[1:])
    assert first.topic == f"{topic_prefix}users" and first.offset == 0
    assert [m.topic for m in rest] == [publisher.topic_for(e) for e in events[1:]]

    records = await read_topics(bootstrap, domain_topics(settings))
    by_id = {parse_event(r.value).event_id: r for r in records}
    assert len(records) == len(events) == len(by_id)
    for event in events:
        record = by_id[event.event_id]
        assert record.topic == settings.topic(topic_suffix(event.event_type))
        assert record.key == message_key(event)
        assert record.value == serialize_event(event)
        assert parse_event(record.value) == event
    login_failed = by_id[events[-1].event_id]
    assert login_failed.key == b"s-anon"


@pytest.mark.integration
async def test_publish_many_keeps_each_keys_order(bootstrap: str, topic_prefix: str) -> None:
    """Pipelined publishing keeps every key's events in the order they were given."""
    settings = kafka_settings(bootstrap, topic_prefix)
    await ensure_topics(settings)
    payments = [uuid.uuid4() for _ in range(20)]
    events = [new_event("payment.captured", {"payment_id": payments[i % 20], "seq": i},
                        source_system="tests", correlation_id=f"c-{i}") for i in range(2000)]
    async with Publisher(settings) as publisher:
        acks = await publisher.publish_many(events)
    assert len(acks) == len(events)

    seen: dict[bytes, list[int]] = defaultdict(list)
    for record in await read_topics(bootstrap, [settings.topic("payments")]):
        seen[record.key].append(parse_event(record.value).data.extra_fields()["seq"])
    assert len(seen) == 20
    for key, seqs in seen.items():
        assert seqs == sorted(seqs) and len(seqs) == 100, key


def test_correlation_id_comes_from_the_context() -> None:
    """`correlation()` supplies the id, nests, restores; an explicit id wins; none is an error."""
    data = DATA["user.seen"]
    with correlation("req-outer"):
        assert new_event("user.seen", data, source_system="t").correlation_id == "req-outer"
        with correlation("req-inner"):
            assert new_event("user.seen", data, source_system="t").correlation_id == "req-inner"
        assert new_event("user.seen", data, source_system="t",
                         correlation_id="explicit").correlation_id == "explicit"
        assert CORRELATION_ID.get() == "req-outer"
    assert CORRELATION_ID.get() is None
    with pytest.raises(InvalidEvent, match="correlation_id"):
        new_event("user.seen", data, source_system="t")


async def test_correlation_id_follows_tasks() -> None:
    """A task started inside `correlation()` builds its events with that id."""
    async def build() -> str:
        return new_event("user.seen", DATA["user.seen"], source_system="t").correlation_id

    with correlation("req-task"):
        task = asyncio.create_task(build())
    assert await task == "req-task"


def test_event_ids_are_time_ordered_uuid7() -> None:
    """Generated event ids are UUIDv7, carry the creation time and sort in creation order."""
    before = datetime.now(UTC)
    with correlation("req-ids"):
        events = [new_event("user.seen", DATA["user.seen"], source_system="t")
                  for _ in range(2000)]
    ids = [e.event_id for e in events]
    assert all(i.version == 7 for i in ids) and len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert sorted(ids, key=lambda u: u.bytes) == ids  # byte order too: what an index sees
    stamped = datetime.fromtimestamp((ids[0].int >> 80) / 1000, UTC)
    assert before - timedelta(milliseconds=2) <= stamped <= datetime.now(UTC)
    assert all(e.occurred_at.tzinfo is not None for e in events)


def test_invalid_events_raise_invalid_event() -> None:
    """Contract violations are `InvalidEvent` (also an `InvalidEventError`), naming the field."""
    with correlation("req-bad"):
        with pytest.raises(InvalidEvent, match=r"^data\.amount: .*two decimal places") as info:
            new_event("payment.initiated", DATA["payment.initiated"] | {"amount": "1.005"},
                      source_system="t")
        assert isinstance(info.value, InvalidEventError) and not info.value.retriable
        assert info.value.__cause__ is not None
        with pytest.raises(InvalidEvent, match="unknown event_type"):
            new_event("payment.teleported", {}, source_system="t")
        with pytest.raises(InvalidEvent, match="occurred_at"):
            new_event("user.seen", DATA["user.seen"], source_system="t",
                      occurred_at=datetime(2026, 1, 1))  # noqa: DTZ001  (naive on purpose)


async def test_unreachable_broker_is_broker_unavailable() -> None:
    """No broker at the address: a retriable `BrokerUnavailable`, quickly, chained to the cause."""
    settings = kafka_settings("127.0.0.1:1", "unused.")
    began = time.monotonic()
    with pytest.raises(BrokerUnavailable) as info:
        async with Publisher(settings, request_timeout_ms=1000):
            pass
    assert info.value.retriable and isinstance(info.value, PublishError)
    assert isinstance(info.value.__cause__, KafkaError)
    assert time.monotonic() - began < 15


@pytest.mark.integration
async def test_oversized_event_is_rejected_not_retriable(bootstrap: str, topic_prefix: str
                                                         ) -> None:
    """An event above the contract's size limit is refused before sending; retrying cannot help."""
    settings = kafka_settings(bootstrap, topic_prefix)
    await ensure_topics(settings)
    big = new_event("user.registered", {"did": DID, "metadata": {"blob": "x" * 1_100_000}},
                    source_system="t", correlation_id="req-big")
    async with Publisher(settings) as publisher:
        with pytest.raises(MessageRejected, match="larger than the limit") as info:
            await publisher.publish(big)
        assert not info.value.retriable
        small = await publisher.publish(new_event("user.seen", {"did": DID}, source_system="t",
                                                  correlation_id="req-small"))
    assert small.offset == 0  # the refused event never reached the topic
    await publisher.close()  # idempotent
    with pytest.raises(PublishError, match="not started"):
        await publisher.publish(big)


@pytest.mark.parametrize(("error", "expected", "retriable"), [
    (KafkaConnectionError("refused"), BrokerUnavailable, True),
    (KafkaTimeoutError(), BrokerUnavailable, True),
    (RequestTimedOutError(), BrokerUnavailable, True),
    (NotLeaderForPartitionError(), BrokerUnavailable, True),
    (MessageSizeTooLargeError("too big"), MessageRejected, False),
    (RecordTooLargeError(), MessageRejected, False),
    (TopicAuthorizationFailedError(), MessageRejected, False),
    (UnknownError(), PublishError, False),
])
def test_kafka_errors_translate_to_what_the_caller_should_do(
        error: Exception, expected: type[PublishError], retriable: bool) -> None:
    """Every aiokafka failure maps to one `PublishError` type with the right `retriable`."""
    translated = translate_kafka_error(error, "t.payments")
    assert type(translated) is expected and translated.retriable is retriable
    assert "t.payments" in str(translated)
