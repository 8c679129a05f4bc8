"""`Publisher` against the real broker: topics, keys, per-key order, the size limit."""

from __future__ import annotations

import uuid
from collections import defaultdict

import pytest

from finpass_pipeline.events import message_key, parse_event, serialize_event, topic_suffix
from finpass_pipeline.kafka import domain_topics, ensure_topics
from producers.errors import MessageRejected, PublishError
from producers.publisher import Publisher, correlation, new_event
from tests.support.builders import NEW_EVENT_DATA, PUBLISHER_DID
from tests.support.pipeline_support import kafka_settings, read_topics


async def test_every_event_type_lands_on_its_topic_with_its_key(bootstrap: str,
                                                               topic_prefix: str) -> None:
    """Each event type goes to its topic, keyed by its aggregate, as bytes parse_event accepts."""
    settings = kafka_settings(bootstrap, topic_prefix)
    await ensure_topics(settings)
    with correlation("req-publisher-1"):
        events = [new_event(t, data, source_system="tests",
                            actor={"session_id": "s-anon", "ip_address": "203.0.113.9"})
                  for t, data in NEW_EVENT_DATA.items()]
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


async def test_oversized_event_is_rejected_not_retriable(bootstrap: str, topic_prefix: str
                                                         ) -> None:
    """An event above the contract's size limit is refused before sending; retrying cannot help."""
    settings = kafka_settings(bootstrap, topic_prefix)
    await ensure_topics(settings)
    big = new_event("user.registered",
                    {"did": PUBLISHER_DID, "metadata": {"blob": "x" * 1_100_000}},
                    source_system="t", correlation_id="req-big")
    async with Publisher(settings) as publisher:
        with pytest.raises(MessageRejected, match="larger than the limit") as info:
            await publisher.publish(big)
        assert not info.value.retriable
        small = await publisher.publish(new_event("user.seen", {"did": PUBLISHER_DID},
                                                  source_system="t", correlation_id="req-small"))
    assert small.offset == 0  # the refused event never reached the topic
    await publisher.close()  # idempotent
    with pytest.raises(PublishError, match="not started"):
        await publisher.publish(big)
