"""Fetching the next batch: one poll, topped up while more keeps arriving, in apply order.

Users' topic first, then credentials, payments, security: a subject created in the batch exists
before the events that need it. Records that continue where the last fetch ended are decoded
right away (while the batch before commits); the others wait for `OffsetGuard.in_sequence`, so a
record fetched before the seek to the database's offset is dropped unread.
"""

from __future__ import annotations

import time

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from consumers.offsets import Fetched, OffsetGuard
from consumers.planner import Planner

FILL_WINDOW_S = 0.05
"""How long a poll batch is topped up while more records keep arriving."""


class Intake:
    def __init__(self, consumer: AIOKafkaConsumer, guard: OffsetGuard, planner: Planner,
                 topic_order: dict[str, int], batch_max_events: int) -> None:
        self.consumer = consumer
        self.guard = guard
        self.planner = planner
        self.topic_order = topic_order
        self.limit = batch_max_events

    async def next_batch(self) -> Fetched:
        batch = await self._poll()
        order = self.topic_order
        out: Fetched = []
        for tp in sorted(batch, key=lambda t: (order.get(t.topic, 9), t.partition)):
            records = batch[tp]
            decode = self.planner.decode if self.guard.fetched((tp.topic, tp.partition),
                                                               records) else None
            out.extend((rec, decode(rec) if decode else None) for rec in records)
        return out

    async def _poll(self) -> dict[TopicPartition, list[ConsumerRecord]]:
        """One poll batch: wait up to 200 ms for data, then top up for at most FILL_WINDOW_S
        while more keeps arriving, so a busy stream commits in large transactions and a quiet
        one is not held back."""
        limit = self.limit
        batch: dict[TopicPartition, list[ConsumerRecord]] = await self.consumer.getmany(
            timeout_ms=200, max_records=limit)
        size = sum(len(v) for v in batch.values())
        deadline = time.monotonic() + FILL_WINDOW_S
        while batch and size < limit and time.monotonic() < deadline:
            more = await self.consumer.getmany(timeout_ms=10, max_records=limit - size)
            if not more:
                break
            for tp, records in more.items():
                batch.setdefault(tp, []).extend(records)
                size += len(records)
        return batch
