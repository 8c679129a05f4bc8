"""Turning a poll batch into what one transaction commits: valid events, dead letters, offsets.

Also keeps the stop-the-line counter: dead letters in a row per partition (stored with the
offsets, so a restart does not reset it).

`Planner.decode` cannot raise: whatever a message's bytes make the parser, the topic check or the
key check do, the message ends as a `Record` with a `reason` (a dead letter), never as an
exception that stops the consumer (CONTRACT.md §5 "Never stop on a message").
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import jiter
from aiokafka import ConsumerRecord

from consumers.records import DeadLetter, Incoming, PartitionProgress, Record, TopicPartition
from finpass_pipeline.events import (
    EVENT_TYPES,
    MAX_EVENT_BYTES,
    Event,
    EventBase,
    InvalidEventError,
    parse_wire,
    topic_suffix,
    upcast,
)


def claimed_type(value: bytes | None) -> str | None:
    """The `event_type` an invalid message names, when it is a known type: so that
    `dead-letters list --event-type` finds the letters of a type, valid envelope or not. Only for
    dead letters (never on the hot path); it never raises."""
    if not value or len(value) > MAX_EVENT_BYTES:
        return None
    try:
        document = jiter.from_json(value, allow_inf_nan=True)
    except Exception:  # noqa: BLE001 -- not JSON (or not readable): no type to name
        return None
    named = document.get("event_type") if isinstance(document, dict) else None
    return named if isinstance(named, str) and named in EVENT_TYPES else None


REASON_MAX_CHARS = 1000
"""A dead-letter reason is cut to this length (it quotes the input at times)."""


def clean_reason(reason: str) -> str:
    """One storable line: no NUL (PostgreSQL text cannot hold it), no line breaks, bounded."""
    text = reason.replace("\x00", "\\u0000").replace("\r", " ").replace("\n", " ")
    return text if len(text) <= REASON_MAX_CHARS else text[: REASON_MAX_CHARS - 1] + "…"


def _shown(key: bytes) -> str:
    text = key.decode("utf-8", "backslashreplace")
    return repr(text if len(text) <= 120 else text[:120] + "…")


@dataclass
class Plan:
    events: list[Incoming] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    progress: dict[TopicPartition, PartitionProgress] = field(default_factory=dict)
    tripped: str | None = None
    """`topic[p]` when this plan's dead letters reached the stop-the-line limit there; the plan
    then ends at that record and the rest of the batch is left unconsumed."""


class Planner:
    """Decodes records and plans batches for one consumer."""

    def __init__(self, topic_prefix: str = "finpass.") -> None:
        self.prefix = topic_prefix
        self.consecutive: dict[TopicPartition, int] = {}

    def decode(self, rec: ConsumerRecord) -> Record:
        """Decode one message; never raises (see the module docstring)."""
        value: bytes | None = rec.value
        event: Event | None = None
        wire: EventBase | None = None
        try:
            event, wire, reason = self._check(rec)
        except Exception as e:  # noqa: BLE001 -- a message must never stop the consumer
            event, reason = None, f"could not decode the message: {type(e).__name__}: {e}"
        if reason is not None:
            reason = clean_reason(reason)
        return Record(rec.topic, rec.partition, rec.offset, rec.key, value, event, reason,
                      rec.timestamp, wire)

    def _check(self, rec: ConsumerRecord) -> tuple[Event | None, EventBase | None, str | None]:
        """(the event in its current version, the event as sent when that was an older
        version, why it is a dead letter)."""
        value: bytes | None = rec.value
        if value is None:
            return None, None, "empty message (tombstone)"
        try:
            sent = parse_wire(value)
        except InvalidEventError as e:
            return None, None, e.reason
        event = upcast(sent)
        wire = sent if sent is not event else None
        expected = self.prefix + topic_suffix(event.event_type)
        if rec.topic != expected:
            return event, wire, (f"event_type {event.event_type!r} belongs on topic "
                                 f"{expected!r}, not {rec.topic!r}")
        key = event.message_key()
        if rec.key is None:
            return event, wire, f"message key missing: expected {_shown(key)}"
        if rec.key != key:
            return event, wire, (f"message key {_shown(rec.key)} differs from the subject's id "
                                 f"{_shown(key)}")
        return event, wire, None

    def reject(self, record: Record, error: str) -> Record:
        """Applying this event failed, alone in its transaction: it becomes a dead letter."""
        return replace(record, reason=clean_reason(f"could not apply the event: {error}"))

    def plan(self, records: list[Record], limit: int) -> Plan:
        plan = Plan()
        for r in records:
            tp = (r.topic, r.partition)
            progress = plan.progress.get(tp) or PartitionProgress(
                r.offset + 1, self.consecutive.get(tp, 0), from_offset=r.offset)
            progress.next_offset = r.offset + 1
            if r.reason is not None:
                event = r.event
                plan.dead.append(DeadLetter(
                    r.topic, r.partition, r.offset, r.key, r.value, r.reason,
                    event_id=event.event_id if event is not None else None,
                    event_type=event.event_type if event is not None else claimed_type(r.value)))
                progress.consecutive_dead_letters += 1
                if progress.consecutive_dead_letters >= limit:
                    plan.progress[tp] = progress
                    plan.tripped = f"{r.topic}[{r.partition}]"
                    return plan
            elif r.event is not None:
                plan.events.append(Incoming(r.event, r.topic, r.partition, r.offset,
                                            r.value or b"", r.key, r.wire))
                progress.consecutive_dead_letters = 0
            plan.progress[tp] = progress
        return plan

    def committed(self, plan: Plan) -> None:
        for tp, progress in plan.progress.items():
            self.consecutive[tp] = progress.consecutive_dead_letters
