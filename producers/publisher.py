"""Publishing events to Kafka, for upstream services that embed this package.

    with correlation(request_id):
        event = new_event("payment.captured", {"payment_id": pid}, source_system="payments-api")
    async with Publisher(settings) as publisher:
        await publisher.publish(event)          # returns once the broker acknowledged it

The topic comes from the event type (CONTRACT.md §1), the key from the aggregate
(`message_key`), the bytes from `serialize_event`. The producer is idempotent with `acks="all"`,
so a broker-side retry never duplicates or reorders a partition; per-key order is the order of the
`publish`/`send` calls. Every failure is a `producers.errors.PublishError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2
from aiokafka.structs import RecordMetadata
from pydantic import ValidationError
from uuid_utils.compat import uuid7

from finpass_pipeline.events import (
    CURRENT_VERSIONS,
    EVENT_ADAPTER,
    EVENT_TYPES,
    MAX_EVENT_BYTES,
    Actor,
    Event,
    EventBase,
    invalid_event,
    message_key,
    serialize_event,
    topic_suffix,
    upcast,
)
from finpass_pipeline.settings import Settings
from producers.errors import (
    BrokerUnavailable,
    InvalidEvent,
    MessageRejected,
    PublishError,
    translate_kafka_error,
)

__all__ = [
    "CORRELATION_ID",
    "BrokerUnavailable",
    "InvalidEvent",
    "MessageRejected",
    "PublishError",
    "Publisher",
    "RecordMetadata",
    "correlation",
    "new_event",
]

CORRELATION_ID: ContextVar[str | None] = ContextVar("finpass_correlation_id", default=None)
"""The correlation id of the request being handled; `new_event` uses it when none is passed."""


@contextlib.contextmanager
def correlation(correlation_id: str) -> Iterator[str]:
    """Set `CORRELATION_ID` for the block (e.g. one HTTP request), restoring the previous value."""
    token = CORRELATION_ID.set(correlation_id)
    try:
        yield correlation_id
    finally:
        CORRELATION_ID.reset(token)


def new_event(
    event_type: str,
    data: Mapping[str, Any],
    *,
    correlation_id: str | None = None,
    source_system: str,
    actor: Actor | Mapping[str, Any] | None = None,
    occurred_at: datetime | None = None,
    event_id: uuid.UUID | None = None,
    causation_id: uuid.UUID | None = None,
    tenant_id: str | None = None,
    schema_version: int | None = None,
) -> Event:
    """Build and validate an event of `event_type`; raise `InvalidEvent` naming the bad field.

    `data` is in the shape of `schema_version` (default: the type's current version); the event
    returned, and published, is always the current version (`events.upcast`).

    Defaults: `event_id` a fresh UUIDv7 (time-ordered, so ids sort by creation and index well),
    `occurred_at` now in UTC, `correlation_id` from `CORRELATION_ID` (see `correlation`). A
    correlation id is required by the contract, so having neither is an `InvalidEvent`.
    """
    if event_type not in EVENT_TYPES:
        raise InvalidEvent(f"unknown event_type {event_type!r}")
    correlation_id = correlation_id or CORRELATION_ID.get()
    if not correlation_id:
        raise InvalidEvent(
            "correlation_id: not given and none set (pass correlation_id= or use correlation())"
        )
    envelope = {
        "event_id": event_id or uuid7(),
        "event_type": event_type,
        "schema_version": schema_version or CURRENT_VERSIONS[event_type],
        "occurred_at": occurred_at or datetime.now(UTC),
        "correlation_id": correlation_id,
        "causation_id": causation_id,
        "source_system": source_system,
        "tenant_id": tenant_id,
        "actor": actor,
        "data": dict(data),
    }
    try:
        return upcast(EVENT_ADAPTER.validate_python(envelope))
    except ValidationError as e:
        raise InvalidEvent(invalid_event(e).reason) from e


class _CachedMurmur2Partitioner:
    """aiokafka's default partitioner, with the hashes of recent keys cached.

    Same mapping as the Java client (murmur2), so every producer of a key picks the same
    partition; cached because aggregate keys repeat and the pure-Python murmur2 was the
    producer's largest single cost (~10 µs a message).
    """

    def __init__(self, size: int = 1 << 16) -> None:
        self._hash = functools.lru_cache(maxsize=size)(murmur2)

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]
                 ) -> int:
        if key is None:
            return random.choice(available or all_partitions)  # noqa: S311  (spreading, not secrets)
        index: int = (self._hash(key) & 0x7FFFFFFF) % len(all_partitions)
        return all_partitions[index]


class Publisher:
    """An idempotent Kafka producer for contract events; use as `async with Publisher(...)`.

    `linger_ms` and `max_batch_size` trade a few milliseconds of latency for large batches.
    Compression is off by default: measured on a local broker, gzip cost more CPU than it saved
    (44k vs 52k msg/s) and lz4/zstd need libraries we do not ship; pass `compression_type` when
    the network, not the CPU, is the bottleneck.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        client_id: str = "finpass-publisher",
        linger_ms: int = 10,
        max_batch_size: int = 256 * 1024,
        compression_type: str | None = None,
        request_timeout_ms: int = 30_000,
    ) -> None:
        self.settings = settings
        self._options: dict[str, Any] = {
            "bootstrap_servers": settings.bootstrap_servers,
            "client_id": client_id,
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": linger_ms,
            "max_batch_size": max_batch_size,
            # Room for the largest valid event plus record overhead; larger ones are refused first.
            "max_request_size": MAX_EVENT_BYTES + 64 * 1024,
            "compression_type": compression_type,
            "partitioner": _CachedMurmur2Partitioner(),
            "request_timeout_ms": request_timeout_ms,
        }
        self._producer: AIOKafkaProducer | None = None
        self._closed = False

    async def start(self) -> None:
        """Connect to the brokers; `BrokerUnavailable` if none answers."""
        if self._producer is not None:
            return
        if self._closed:
            raise PublishError("publisher is closed")
        producer = AIOKafkaProducer(**self._options)
        try:
            await producer.start()
        except BaseException as e:
            await producer.stop()  # releases the client; stopping an unstarted producer is safe
            if isinstance(e, KafkaError | OSError):
                raise translate_kafka_error(e) from e
            raise
        self._producer = producer

    async def close(self) -> None:
        """Deliver what is buffered, then disconnect. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def __aenter__(self) -> Publisher:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def topic_for(self, event: EventBase) -> str:
        """The full topic name of `event` under the configured prefix."""
        return self.settings.topic(topic_suffix(event.event_type))

    async def send(self, event: EventBase) -> asyncio.Future[RecordMetadata]:
        """Queue `event` and return a future of its acknowledgement; see `acknowledged`.

        Returns as soon as the event is in the send buffer (waiting only when the buffer for its
        partition is full), so callers can pipeline thousands of events. Events passed to
        successive `send` calls reach each partition in call order.
        """
        return await self.send_raw(self.topic_for(event), message_key(event),
                                   serialize_event(event))

    async def send_raw(self, topic: str, key: bytes | None, value: bytes
                       ) -> asyncio.Future[RecordMetadata]:
        """`send` for an already-serialised event (the outbox relay stores bytes)."""
        producer = self._producer
        if producer is None:
            raise PublishError("publisher is not started (use `async with Publisher(...)`)")
        if len(value) > MAX_EVENT_BYTES:
            # The consumer would dead-letter it; refuse it here where the sender can act on it.
            raise MessageRejected(
                f"event is {len(value)} bytes, larger than the limit of {MAX_EVENT_BYTES}"
            )
        try:
            future: asyncio.Future[RecordMetadata] = await producer.send(
                topic, value=value, key=key
            )
        except (KafkaError, OSError) as e:
            raise translate_kafka_error(e, topic) from e
        return future

    @staticmethod
    async def acknowledged(future: asyncio.Future[RecordMetadata]) -> RecordMetadata:
        """Await one `send` future, translating a delivery failure into a `PublishError`."""
        try:
            return await future
        except (KafkaError, OSError) as e:
            raise translate_kafka_error(e) from e

    async def publish(self, event: EventBase) -> RecordMetadata:
        """Publish one event and return once every in-sync replica has it."""
        return await self.acknowledged(await self.send(event))

    async def publish_many(self, events: Iterable[EventBase]) -> list[RecordMetadata]:
        """Publish events pipelined: queue all, then await all acknowledgements.

        Per-key order is the iteration order. On failure every send has settled before the first
        error is raised; events before or after it may have been stored (retrying is safe, the
        event id makes duplicates harmless).
        """
        futures: list[asyncio.Future[RecordMetadata]] = []
        try:
            for event in events:
                futures.append(await self.send(event))
        except BaseException:
            # Those already queued still settle, so no delivery error is left unretrieved.
            await asyncio.gather(*futures, return_exceptions=True)
            raise
        return await self.settle(futures)

    @staticmethod
    async def settle(futures: list[asyncio.Future[RecordMetadata]]) -> list[RecordMetadata]:
        """Await every future; raise the first failure (translated) only after all settled."""
        results = await asyncio.gather(*futures, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                if isinstance(result, KafkaError | OSError):
                    raise translate_kafka_error(result) from result
                raise result
        return [r for r in results if isinstance(r, RecordMetadata)]

