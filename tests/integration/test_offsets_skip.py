"""`offsets skip` while three consumers run (issue "Running it"): the offsets skipped are never
applied, everything after them is, exactly once; the skip is audited; going backwards is
refused."""

from __future__ import annotations

import uuid
from contextlib import AsyncExitStack

import pytest
from aiokafka import AIOKafkaProducer

from finpass_pipeline.errors import FinpassError
from finpass_pipeline.events import EventBase, serialize_event
from finpass_pipeline.ops.skip import skip
from finpass_pipeline.settings import Settings
from tests.support.builders import initiated
from tests.support.pipeline_support import (
    count,
    fetch,
    running_daemon,
    wait_caught_up,
    wait_for,
)


async def test_skip_while_three_consumers_run(settings: Settings) -> None:
    topic = settings.topic("payments")
    first = [initiated(uuid.uuid4(), at=i) for i in range(10)]
    later = [initiated(uuid.uuid4(), at=100 + i) for i in range(10)]

    async def send(events: list[EventBase]) -> None:
        """All on partition 0, in order, each with its own (correct) key."""
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all",
                                    enable_idempotence=True)
        await producer.start()
        try:
            for e in events:
                await producer.send_and_wait(topic, serialize_event(e), key=e.message_key(),
                                             partition=0)
        finally:
            await producer.stop()

    async with AsyncExitStack() as stack:
        for _ in range(3):
            await stack.enter_async_context(running_daemon(settings))
        await send(first)
        await wait_caught_up(settings, 10)
        [row] = await fetch(settings.database_url,
                            "SELECT kafka_partition, next_offset FROM consumer_offsets "
                            "WHERE topic = $1", topic)
        partition, at = row["kafka_partition"], row["next_offset"]
        assert (partition, at) == (0, 10)
        lines: list[str] = []
        assert await skip(settings, topic, partition, at + 4, why="INC-7: four bad payments",
                          by="carol", say=lines.append) == 4
        assert lines[0] == (f"{topic}[{partition}] of group {settings.consumer_group}: next "
                            "offset 10 -> 14 (4 skipped, audited)")
        await send(later)  # offsets 10..19: 10..13 are skipped, 14..19 applied

        async def all_in() -> bool:
            return await count(settings.database_url, "SELECT next_offset FROM "
                               "consumer_offsets WHERE topic = $1", topic) == 20

        await wait_for(all_in, 60, "the partition committed up to 20")
    applied = {r["id"] for r in await fetch(settings.database_url, "SELECT id FROM payments")}
    assert applied == {e.data.payment_id for e in [*first, *later[4:]]}  # type: ignore[attr-defined]
    assert await count(settings.database_url, "SELECT count(*) FROM processed_events") == 16
    [audit] = await fetch(settings.database_url,
                          "SELECT resource_id, previous_values, new_values, "
                          "details::jsonb->>'by' AS by FROM audit_events "
                          "WHERE event_type = 'OFFSETS_SKIPPED'")
    assert tuple(audit) == (f"{topic}[{partition}]", '{"next_offset":10}',
                            '{"next_offset":14}', "carol")
    with pytest.raises(FinpassError, match="is not ahead of the database's next offset 20"):
        await skip(settings, topic, partition, 12, why="back", by="carol")
