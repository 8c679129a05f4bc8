"""`finpass-pipeline offsets skip TOPIC PARTITION OFFSET --why ...` (docs/operations.md).

Moves a partition's next offset in the database forward, in one transaction with its audit row
(`OFFSETS_SKIPPED`, chain `finpass.ops.offsets:0`), under the offsets row's lock. Safe while the
group runs: every consumer batch locks the same rows first and, finding the offset ahead of
where it starts, rolls back, seeks there and drops what it fetched below
(`consumers.store.OffsetsMoved`). Then the group's Kafka offset is moved too when the group is
empty; a running group commits the new offset itself after its next batch there.
"""

from __future__ import annotations

from collections.abc import Callable

from finpass_pipeline.audit.chain import AuditWriter
from finpass_pipeline.audit.operator import operator_row
from finpass_pipeline.errors import FinpassError, UsageError
from finpass_pipeline.ops.inspect import connect_checked
from finpass_pipeline.settings import Settings

Say = Callable[[str], None]
OPERATOR_SOURCE = ("finpass.ops.offsets", 0)


async def skip(settings: Settings, topic: str, partition: int, offset: int, why: str, by: str,
               group: str | None = None, say: Say = print) -> int:
    """Skip to `offset` (the next one to apply); returns how many offsets were skipped."""
    if not why.strip():
        raise UsageError("offsets skip needs --why: say what the skipped messages were")
    group = group or settings.consumer_group
    async with connect_checked(settings, "consumer_offsets") as conn, conn.transaction():
        current = await conn.fetchval(
            "SELECT next_offset FROM consumer_offsets WHERE consumer_group = $1 AND topic = $2 "
            "AND kafka_partition = $3 FOR UPDATE", group, topic, partition)
        start = int(current) if current is not None else 0
        if offset <= start:
            raise FinpassError(f"{topic}[{partition}]: offset {offset} is not ahead of the "
                               f"database's next offset {start} (skip only moves forward)")
        await conn.execute(
            "INSERT INTO consumer_offsets AS o (consumer_group, topic, kafka_partition, "
            "next_offset, consecutive_dead_letters) VALUES ($1, $2, $3, $4, 0) "
            "ON CONFLICT (consumer_group, topic, kafka_partition) DO UPDATE SET "
            "next_offset = EXCLUDED.next_offset, consecutive_dead_letters = 0, updated_at = now()",
            group, topic, partition, offset)
        row = operator_row(
            settings.audit_hash_key_id, resource_type="PARTITION",
            resource_id=f"{topic}[{partition}]", event_type="OFFSETS_SKIPPED", action="SKIP",
            outcome="SUCCESS", description=f"offsets {start}..{offset - 1} skipped by an operator",
            details={"group": group, "by": by, "why": why, "skipped": offset - start},
            previous={"next_offset": start}, new={"next_offset": offset})
        await AuditWriter(chained=settings.audit_chain).append(conn, [row], [OPERATOR_SOURCE])
    say(f"{topic}[{partition}] of group {group}: next offset {start} -> {offset} "
        f"({offset - start} skipped, audited)")
    say(await _move_kafka(settings, group, topic, partition, offset))
    return offset - start


async def _move_kafka(settings: Settings, group: str, topic: str, partition: int,
                      offset: int) -> str:
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaError

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=group,
                                enable_auto_commit=False, request_timeout_ms=10_000)
    try:
        await consumer.start()
        await consumer.commit({TopicPartition(topic, partition): offset})
    except KafkaError as e:
        return ("Kafka: the group's offset was not moved now "
                f"({type(e).__name__}); its consumers commit it after their next batch there")
    finally:
        await consumer.stop()
    return "Kafka: the group's committed offset moved too"
