"""The database's offsets are the truth; Kafka's follow them.

On assignment each partition is sought to the offset `consumer_offsets` holds (the beginning if
none). Records fetched before that seek took effect (from Kafka's committed offset, or a
rebalance ago) do not start there: `in_sequence` drops them and seeks again, so per-key order
holds whatever Kafka's own offsets say. After each database commit the same offsets are
committed to Kafka, for lag tooling only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from consumers.records import PartitionProgress, Record
from consumers.records import TopicPartition as Key
from consumers.store import Store
from finpass_pipeline.db import retry_transient
from finpass_pipeline.metrics import ConsumerMetrics

log = structlog.get_logger("finpass.consumer")

Fetched = list[tuple[ConsumerRecord, Record | None]]
"""A poll batch in apply order; each record decoded ahead, or None when it was not."""


class OffsetGuard:
    """Where each assigned partition stands: the next offset to apply (from the database),
    where the next fetch starts, and what to commit to Kafka after the database."""

    def __init__(self, consumer: AIOKafkaConsumer, store: Store,
                 metrics: ConsumerMetrics) -> None:
        self.consumer = consumer
        self.store = store
        self.metrics = metrics
        self.expected: dict[Key, int] = {}
        # Where the next fetch of each partition should start: the seek position, then just
        # after the last record fetched. A fetched run that starts there may be decoded ahead,
        # while the batch before it commits; any other (fetched before a seek) is not.
        self._fetch_next: dict[Key, int] = {}
        self._to_commit: dict[Key, int] = {}

    async def seek_to_stored(self, assigned: Sequence[TopicPartition]) -> None:
        """Seek each assigned partition to the offset the database holds (beginning if none)."""
        store = self.store
        progress = await retry_transient(
            lambda: store.load_progress((tp.topic, tp.partition) for tp in assigned),
            during="partition_assignment", on_retry=self.metrics.retries.inc)
        fresh = [tp for tp in assigned if (tp.topic, tp.partition) not in progress]
        beginning = await self.consumer.beginning_offsets(fresh) if fresh else {}
        # Lag from the moment of assignment, for every assigned partition (commits update it).
        ends = await self.consumer.end_offsets(list(assigned)) if assigned else {}
        for tp in assigned:
            stored = progress.get((tp.topic, tp.partition))
            # The stop-the-line count starts again at 0: restarting is the operator's decision
            # to go on (the stored count stays visible in consumer_offsets).
            offset = stored.next_offset if stored is not None else beginning[tp]
            self.consumer.seek(tp, offset)
            self.expected[(tp.topic, tp.partition)] = offset
            self._fetch_next[(tp.topic, tp.partition)] = offset
            self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(ends[tp] - offset, 0))
        log.info("partitions_assigned", partitions=len(assigned), from_database=len(progress))

    def revoked(self, revoked: Sequence[TopicPartition]) -> None:
        """Another consumer owns these now: their lag is its to report."""
        for tp in revoked:
            with contextlib.suppress(KeyError):
                self.metrics.lag.remove(tp.topic, str(tp.partition))

    def fetched(self, key: Key, records: Sequence[ConsumerRecord]) -> bool:
        """Note a fetched run of one partition; True when it continues the last fetch (so
        decoding it ahead cannot waste work on records `in_sequence` will drop)."""
        contiguous: bool = self._fetch_next.get(key) == records[0].offset
        self._fetch_next[key] = records[-1].offset + 1
        return contiguous

    async def in_sequence(self, fetched: Fetched) -> Fetched:
        """Keep each partition's records only if they start at the expected offset."""
        owned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        first: dict[Key, int] = {}
        for r, _ in fetched:
            first.setdefault((r.topic, r.partition), r.offset)
        accepted: set[Key] = set()
        for key, offset in first.items():
            expected = self.expected.get(key)
            if key not in owned or expected is None:
                continue  # revoked while this batch was fetched ahead
            if offset == expected:
                accepted.add(key)
                continue
            tp = TopicPartition(*key)
            if offset > expected:
                start = (await self.consumer.beginning_offsets([tp]))[tp]
                if start > expected and offset == start:
                    log.error("offsets_missing", partition=f"{key[0]}[{key[1]}]",
                              missing_from=expected, missing_to=start - 1,
                              reason="deleted from the log before they were consumed")
                    accepted.add(key)
                    continue
            log.info("refetching", partition=f"{key[0]}[{key[1]}]", fetched_from=offset,
                     expected=expected)
            self.consumer.seek(tp, expected)
            self._fetch_next[key] = expected
        return [(r, d) for r, d in fetched if (r.topic, r.partition) in accepted]

    def moved(self, moved: dict[Key, int]) -> None:
        """The database's offsets of these partitions were moved ahead (`offsets skip`): go
        there; what was fetched below is dropped by `in_sequence`."""
        for key, offset in moved.items():
            log.warning("offset_moved_by_operator", partition=f"{key[0]}[{key[1]}]",
                        next_offset=offset)
            self.expected[key] = offset
            self._fetch_next[key] = offset
            self.consumer.seek(TopicPartition(*key), offset)

    def committed(self, progress: dict[Key, PartitionProgress]) -> None:
        """The database committed `progress`: expect the next offsets, commit them to Kafka."""
        for key, p in progress.items():
            self._to_commit[key] = p.next_offset
            self.expected[key] = p.next_offset

    async def commit_kafka(self) -> None:
        offsets = {TopicPartition(t, p): o for (t, p), o in self._to_commit.items()}
        self._to_commit = {}
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as e:
            # The database holds the authoritative offsets; Kafka's copy is for lag tooling.
            log.warning("kafka_commit_failed", error=str(e))
