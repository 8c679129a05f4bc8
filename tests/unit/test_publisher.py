"""The producing side without a broker: `new_event`, the correlation context, and how
`Publisher` reports a broker it cannot reach or Kafka errors. (Against the real broker:
tests/integration/test_publisher.py.)
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
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

from finpass_pipeline.events import EVENT_TYPES, InvalidEventError, PaymentInitiated
from producers.errors import (
    BrokerUnavailable,
    InvalidEvent,
    MessageRejected,
    PublishError,
    translate_kafka_error,
)
from producers.publisher import CORRELATION_ID, Publisher, correlation, new_event
from tests.support.builders import NEW_EVENT_DATA
from tests.support.pipeline_support import kafka_settings


def test_data_covers_every_event_type() -> None:
    """`NEW_EVENT_DATA`, which these tests publish, covers every event type of the contract."""
    assert set(NEW_EVENT_DATA) == set(EVENT_TYPES)


def test_correlation_id_comes_from_the_context() -> None:
    """`correlation()` supplies the id, nests, restores; an explicit id wins; none is an error."""
    data = NEW_EVENT_DATA["user.seen"]
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
        return new_event("user.seen", NEW_EVENT_DATA["user.seen"], source_system="t").correlation_id

    with correlation("req-task"):
        task = asyncio.create_task(build())
    assert await task == "req-task"


def test_event_ids_are_time_ordered_uuid7() -> None:
    """Generated event ids are UUIDv7, carry the creation time and sort in creation order."""
    before = datetime.now(UTC)
    with correlation("req-ids"):
        events = [new_event("user.seen", NEW_EVENT_DATA["user.seen"], source_system="t")
                  for _ in range(2000)]
    ids = [e.event_id for e in events]
    assert all(i.version == 7 for i in ids) and len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert sorted(ids, key=lambda u: u.bytes) == ids  # byte order too: what an index sees
    stamped = datetime.fromtimestamp((ids[0].int >> 80) / 1000, UTC)
    assert before - timedelta(milliseconds=2) <= stamped <= datetime.now(UTC)
    assert all(e.occurred_at.tzinfo is not None for e in events)


def test_data_of_an_older_version_is_published_upcast() -> None:
    """`schema_version=1` takes v1's shape; what comes back (and is sent) is the current one."""
    v1 = {"payment_id": str(uuid.uuid4()), "payer_did": "did:web:a", "payee_did": "did:web:b",
          "amount": "12.50", "currency": "EUR", "reference_id": "INV-1"}
    with correlation("req-v1"):
        event = new_event("payment.initiated", v1, source_system="t", schema_version=1)
        current = new_event("payment.initiated", NEW_EVENT_DATA["payment.initiated"],
                            source_system="t")
    assert isinstance(event, PaymentInitiated) and event.schema_version == 2
    assert (event.data.amount.value, event.data.amount.currency) == (Decimal("12.50"), "EUR")
    assert event.data.merchant_reference == "INV-1"
    assert current.schema_version == 2
    with correlation("req-v1"), pytest.raises(InvalidEvent, match="must be the number 1 or 2"):
        new_event("payment.initiated", v1, source_system="t", schema_version=3)


def test_invalid_events_raise_invalid_event() -> None:
    """Contract violations are `InvalidEvent` (also an `InvalidEventError`), naming the field."""
    with correlation("req-bad"):
        with pytest.raises(InvalidEvent,
                           match=r"^data\.amount\.value: .*two decimal places") as info:
            new_event("payment.initiated", NEW_EVENT_DATA["payment.initiated"]
                      | {"amount": {"value": "1.005", "currency": "EUR"}}, source_system="t")
        assert isinstance(info.value, InvalidEventError) and not info.value.retriable
        assert info.value.__cause__ is not None
        with pytest.raises(InvalidEvent, match="unknown event_type"):
            new_event("payment.teleported", {}, source_system="t")
        with pytest.raises(InvalidEvent, match="occurred_at"):
            new_event("user.seen", NEW_EVENT_DATA["user.seen"], source_system="t",
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
