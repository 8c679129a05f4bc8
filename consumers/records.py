"""What flows between the consumer's stages, in the order a message meets them.

    ConsumerRecord --Planner.decode--> Record --Planner.plan--> Incoming (valid event)
                                                            \\-> DeadLetter (with why)
                                                            and PartitionProgress per partition

`Store.commit_batch` takes the incomings, dead letters and progress of one batch and commits them
in one transaction (`consumers.store`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from finpass_pipeline.events import Event, EventBase

TopicPartition = tuple[str, int]
"""(topic, partition) as the offsets table keys it."""


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka message, decoded: `event` when valid, else `reason` says why not (an event may
    be valid and still refused, e.g. with the wrong key: then both are set)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    event: Event | None = None
    reason: str | None = None
    timestamp_ms: int | None = None
    wire: EventBase | None = None
    """The event as sent, when that was an older version (`event` is its upcast)."""


@dataclass(slots=True)
class Incoming:
    """A valid event to apply, and where it came from."""

    event: Event
    topic: str
    partition: int
    offset: int
    raw: bytes
    key: bytes | None = None
    wire: EventBase | None = None
    """The event as sent, when that was an older version: what an identical re-send repeats."""
    dids: set[str] | None = None
    """The DIDs the event names, once asked (`consumers.privacy.incoming_dids`)."""


@dataclass(slots=True)
class DeadLetter:
    """An invalid message (or one the database rejected), with why."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    event_id: uuid.UUID | None = None
    event_type: str | None = None


@dataclass(slots=True)
class PartitionProgress:
    """What the offsets table records for one partition after a batch."""

    next_offset: int
    consecutive_dead_letters: int
    from_offset: int | None = None
    """The batch's first offset on this partition (None when loaded from the database)."""
