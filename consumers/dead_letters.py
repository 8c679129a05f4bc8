"""Publishing dead letters to the dead-letter topic, acknowledged, before the database commit
that records them (a crash between the two re-sends: at least once on the topic, exactly once in
`dead_letter_events`)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError

from consumers.records import DeadLetter

log = structlog.get_logger("finpass.consumer")

DLQ_MAX_REQUEST_BYTES = 4 * 1024 * 1024
"""The dead-letter producer's `max_request_size`."""
DLQ_TRUNCATE_TO = 512 * 1024
"""A value the broker refuses as too large is sent cut to this, with `truncated_from`."""


class DeadLetterSender:
    """Sends each dead letter once per batch: the batch's retries and bisection plan the same
    records again."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic
        self._published: set[tuple[str, int, int, str]] = set()

    def new_batch(self) -> None:
        self._published = set()

    async def publish(self, dead: Sequence[DeadLetter]) -> None:
        futures: list[Coroutine[Any, Any, None]] = []
        for d in dead:
            source = (d.topic, d.partition, d.offset, d.reason)
            if source in self._published:
                continue
            self._published.add(source)
            with structlog.contextvars.bound_contextvars(
                    event_id=str(d.event_id) if d.event_id else None, topic=d.topic,
                    partition=d.partition, offset=d.offset):
                log.warning("dead_lettered", reason=d.reason)
            headers = [("reason", d.reason.encode()), ("source_topic", d.topic.encode()),
                       ("source_partition", str(d.partition).encode()),
                       ("source_offset", str(d.offset).encode())]
            futures.append(self._send(d, headers))
        await asyncio.gather(*futures)  # acknowledged before the database commit

    async def _send(self, d: DeadLetter, headers: list[tuple[str, bytes]]) -> None:
        value = d.value or b""
        try:
            await self.producer.send_and_wait(self.topic, value=value, key=d.key,
                                              headers=headers)
        except MessageSizeTooLargeError:
            # The table keeps the full raw bytes; the topic gets a prefix and says so.
            await self.producer.send_and_wait(
                self.topic, value=value[:DLQ_TRUNCATE_TO], key=d.key,
                headers=[*headers, ("truncated_from", str(len(value)).encode())])
