"""`finpass-pipeline consume`: the consumer daemon.

One consumer group over the four domain topics. Each poll batch becomes one database transaction
(`consumers.store`) holding the domain rows, one audit row per applied event, the dead
letters and the consumed offsets; Kafka's commit follows the database's. On partition assignment
the consumer seeks to the offsets the database holds, so a crash at any instant neither loses nor
repeats an effect.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError, MessageSizeTooLargeError

from consumers.apply import Applier
from consumers.planner import Plan, Planner, Record
from consumers.store import BatchResult, DeadLetter, Store
from finpass_pipeline.audit.chain import PARTITIONS_AHEAD, AuditWriter
from finpass_pipeline.audit.record import Pseudonymizer
from finpass_pipeline.db import (
    MAX_BACKOFF_S,
    Stopped,
    checked_out,
    create_pool,
    describe,
    is_infrastructure,
    retry_transient,
    schema_ready,
    sleep_or_stop,
)
from finpass_pipeline.kafka import (
    DEAD_LETTER_TOPIC,
    DOMAIN_TOPICS,
    domain_topics,
    ensure_topics,
)
from finpass_pipeline.metrics import ConsumerMetrics, http_server
from finpass_pipeline.settings import Settings

log = structlog.get_logger("finpass.consumer")

DLQ_MAX_REQUEST_BYTES = 4 * 1024 * 1024
FILL_WINDOW_S = 0.05
DLQ_TRUNCATE_TO = 512 * 1024


class InfrastructureFault(Exception):
    """Even a single message's dead letter could not be committed: the fault is not the
    message's. Retried with backoff like a lost connection, never a crash."""


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, daemon: ConsumerDaemon) -> None:
        self.daemon = daemon

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        # The batch in flight holds the lock: it commits (database, then Kafka) before hand-off.
        async with self.daemon.batch_lock:
            log.info("partitions_revoked", partitions=[f"{tp.topic}[{tp.partition}]"
                                                       for tp in revoked])

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        await self.daemon.seek_to_stored(list(assigned))


class ConsumerDaemon:
    """Run with `await ConsumerDaemon(settings).run(stop)`; returns the process exit code."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = ConsumerMetrics()
        self.pseudonymizer = Pseudonymizer(settings.hash_key(), settings.audit_hash_key_id)
        self.batch_lock = asyncio.Lock()
        self.planner = Planner(settings.topic_prefix)
        self._topic_order = {settings.topic(name): i for i, name in enumerate(DOMAIN_TOPICS)}
        self.store: Store | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.started_at = time.monotonic()
        self.last_batch_at: float | None = None
        self.healthy = False
        self.tripped: str | None = None
        # The next offset to apply per partition, from the database at assignment. Records
        # fetched before the seek to it took effect (from Kafka's committed offset, or a
        # rebalance ago) do not start there: they are dropped and re-fetched, so per-key order
        # holds whatever Kafka's own offsets say.
        self.expected: dict[tuple[str, int], int] = {}
        self.on_commit: Callable[[list[Record]], None] | None = None
        """Called with each committed sub-batch's records (the bench measures latency here)."""
        self._committed: dict[tuple[str, int], int] = {}
        self._published: set[tuple[str, int, int, str]] = set()
        # Where the next fetch of each partition should start: the seek position, then just
        # after the last record fetched. A fetched run that starts there is decoded ahead, while
        # the batch before it commits; any other (fetched before a seek) is left undecoded.
        self._fetch_next: dict[tuple[str, int], int] = {}

    # --- lifecycle -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> int:
        s = self.settings
        async with http_server(s.http_port, self.metrics, self.health) as port:
            if port:
                log.info("http_listening", port=port, paths=["/healthz", "/metrics"])
            pool = await create_pool(s.database_url, role=s.database_role)
            try:
                try:
                    ready = await retry_transient(lambda: self._prepare_database(pool),
                                                  during="startup", stop=stop)
                except Stopped:
                    log.info("stopped_before_start", note="the database never answered")
                    return 0
                if not ready:
                    log.error("schema_missing",
                              hint="run `finpass-pipeline migrate` against this database")
                    return 1
                self.store = Store(pool, s.consumer_group, Applier(self.pseudonymizer),
                                   AuditWriter(chained=s.audit_chain))
                await self._start_kafka(stop)
                if stop.is_set():
                    return 0
                try:
                    return await self._loop(stop)
                finally:
                    await self._stop_kafka()
            finally:
                await pool.close()

    @staticmethod
    async def _prepare_database(pool: asyncpg.Pool) -> bool:
        """False when the pipeline's tables are missing; else makes sure this month's audit
        partition and the next ones exist before any batch."""
        async with checked_out(pool) as conn:
            if not await schema_ready(conn):
                return False
            if await conn.fetchval("SELECT to_regproc('audit_ensure_partitions')"):
                await conn.fetchval("SELECT audit_ensure_partitions($1)", PARTITIONS_AHEAD)
            return True

    async def _ensure_topics(self, stop: asyncio.Event) -> None:
        """Create missing contract topics (the dead-letter one above all) before consuming.

        Best effort, once the broker answers: a broker that refuses creation (no rights) leaves
        it to the operator's `finpass-pipeline topics`.
        """
        if stop.is_set():
            return
        try:
            created = await ensure_topics(self.settings)
        except KafkaError as e:
            log.warning("topics_not_ensured", error=str(e) or type(e).__name__,
                        hint="run `finpass-pipeline topics` with rights to create topics")
            return
        if any(created.values()):
            log.info("topics_created", topics=[t for t, new in created.items() if new])

    async def _start_kafka(self, stop: asyncio.Event) -> None:
        s = self.settings
        delay = 0.5
        while not stop.is_set():
            consumer = AIOKafkaConsumer(
                bootstrap_servers=s.bootstrap_servers, group_id=s.consumer_group,
                client_id=f"finpass-consumer-{s.consumer_group}", enable_auto_commit=False,
                auto_offset_reset="earliest", fetch_max_wait_ms=100,
                max_partition_fetch_bytes=262_144, fetch_max_bytes=8_388_608,
                session_timeout_ms=10_000,
                heartbeat_interval_ms=2_000, max_poll_interval_ms=600_000,
            )
            producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap_servers, acks="all",
                                        enable_idempotence=True, linger_ms=5,
                                        max_request_size=DLQ_MAX_REQUEST_BYTES)
            try:
                await consumer.start()
                await producer.start()
            except KafkaError as e:
                await consumer.stop()
                await producer.stop()
                log.warning("kafka_unavailable", error=str(e), retry_in_s=delay)
                await sleep_or_stop(delay, stop)
                delay = min(delay * 2, MAX_BACKOFF_S)
                continue
            await self._ensure_topics(stop)
            consumer.subscribe(domain_topics(s), listener=_Rebalance(self))
            self.consumer, self.producer = consumer, producer
            log.info("consumer_started", group=s.consumer_group, topics=domain_topics(s))
            return

    async def _stop_kafka(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()  # leaves the group: partitions move at once
        if self.producer is not None:
            await self.producer.stop()

    def health(self) -> dict[str, Any]:
        consumer = self.consumer
        return {
            "ok": self.healthy,
            "assigned_partitions": len(consumer.assignment()) if consumer else 0,
            "seconds_since_last_batch": (round(time.monotonic() - self.last_batch_at, 3)
                                         if self.last_batch_at else None),
        }

    # --- offsets ---------------------------------------------------------------------------

    async def seek_to_stored(self, assigned: list[TopicPartition]) -> None:
        """Seek each assigned partition to the offset the database holds (beginning if none)."""
        assert self.store is not None and self.consumer is not None  # noqa: S101
        store = self.store
        progress = await retry_transient(
            lambda: store.load_progress((tp.topic, tp.partition) for tp in assigned),
            during="partition_assignment")
        fresh = [tp for tp in assigned if (tp.topic, tp.partition) not in progress]
        beginning = await self.consumer.beginning_offsets(fresh) if fresh else {}
        for tp in assigned:
            stored = progress.get((tp.topic, tp.partition))
            # The stop-the-line count starts again at 0: restarting is the operator's decision
            # to go on (the stored count stays visible in consumer_offsets).
            offset = stored.next_offset if stored is not None else beginning[tp]
            self.consumer.seek(tp, offset)
            self.expected[(tp.topic, tp.partition)] = offset
            self._fetch_next[(tp.topic, tp.partition)] = offset
        self.healthy = True
        log.info("partitions_assigned", partitions=len(assigned), from_database=len(progress))

    # --- the loop --------------------------------------------------------------------------

    async def _loop(self, stop: asyncio.Event) -> int:
        assert self.consumer is not None  # noqa: S101
        # The next batch is fetched and decoded while this one commits: Python parses while
        # PostgreSQL writes (the event loop switches at every database await).
        ahead = asyncio.create_task(self._next_batch())
        try:
            while not stop.is_set():
                planned = await ahead
                ahead = asyncio.create_task(self._next_batch())
                if not planned:
                    continue
                code = await self._commit_batch(planned, stop)
                if code is not None:
                    return code
        finally:
            ahead.cancel()
        log.info("draining_done", note="stopping: last batch committed, leaving the group")
        return 0

    async def _next_batch(self) -> list[tuple[ConsumerRecord, Record | None]]:
        """Poll one batch, users' topic first, then credentials, payments, security: a subject
        created in the batch exists before the events that need it. Records that continue where
        the last fetch ended are decoded now; others wait for `_in_sequence`, so a record
        fetched before the seek to the database's offset is dropped unread."""
        batch = await self._poll()
        order = self._topic_order
        out: list[tuple[ConsumerRecord, Record | None]] = []
        for tp in sorted(batch, key=lambda t: (order.get(t.topic, 9), t.partition)):
            records = batch[tp]
            key = (tp.topic, tp.partition)
            contiguous = self._fetch_next.get(key) == records[0].offset
            self._fetch_next[key] = records[-1].offset + 1
            decode = self.planner.decode if contiguous else None
            out.extend((rec, decode(rec) if decode else None) for rec in records)
        return out

    async def _commit_batch(self, fetched: list[tuple[ConsumerRecord, Record | None]],
                            stop: asyncio.Event) -> int | None:
        """Commit one fetched batch; returns an exit code when the daemon must stop."""
        assert self.consumer is not None  # noqa: S101
        async with self.batch_lock:
            in_order = await self._in_sequence(fetched)
            if not in_order:
                return None
            planned = [r if r is not None else self.planner.decode(rec) for rec, r in in_order]
            started = time.monotonic()
            self._published = set()  # per batch: its retries and bisection send each once
            if not await self._commit_with_retry(planned, stop):
                log.warning("shutdown_during_retry",
                            note="batch not applied; it is re-read on restart")
                return 0
            await self._commit_kafka()
            self.metrics.batch_seconds.observe(time.monotonic() - started)
            self.metrics.batch_size.observe(len(planned))
            self.last_batch_at = time.monotonic()
        if self.tripped:
            log.error("stop_the_line", partition=self.tripped,
                      limit=self.settings.max_consecutive_dead_letters,
                      reason="too many consecutive dead letters on one partition; "
                             "something upstream is broken")
            return 1
        return None

    async def _in_sequence(self, planned: list[tuple[ConsumerRecord, Record | None]]
                           ) -> list[tuple[ConsumerRecord, Record | None]]:
        """Keep each partition's records only if they start at the expected offset."""
        assert self.consumer is not None  # noqa: S101
        owned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        first: dict[tuple[str, int], int] = {}
        for r, _ in planned:
            first.setdefault((r.topic, r.partition), r.offset)
        accepted: set[tuple[str, int]] = set()
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
        return [(r, d) for r, d in planned if (r.topic, r.partition) in accepted]

    async def _poll(self) -> dict[TopicPartition, list[ConsumerRecord]]:
        """One poll batch: wait up to 200 ms for data, then top up for at most FILL_WINDOW_S
        while more keeps arriving, so a busy stream commits in large transactions and a quiet
        one is not held back."""
        assert self.consumer is not None  # noqa: S101
        limit = self.settings.batch_max_events
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

    async def _commit_with_retry(self, planned: list[Record], stop: asyncio.Event) -> bool:
        """Commit the batch, retrying transient failures with backoff. False: stopped first."""
        delay = 0.5
        while True:
            try:
                await self._commit_isolating(planned)
            except Exception as e:  # noqa: BLE001 -- see below
                # Whatever reaches here is not one message's fault (those are dead-lettered
                # below): wait for the infrastructure, never crash.
                self.metrics.retries.inc()
                if self.consumer is not None:
                    # Stop fetching ahead while the database is away: nothing piles up.
                    self.consumer.pause(*self.consumer.assignment())
                log.warning("transient_failure", error=describe(e), retry_in_s=delay,
                            batch=len(planned))
                if stop.is_set():
                    return False
                await sleep_or_stop(delay, stop)
                delay = min(delay * 2, MAX_BACKOFF_S)
            else:
                if self.consumer is not None and self.consumer.paused():
                    self.consumer.resume(*self.consumer.paused())
                return True

    async def _commit_isolating(self, planned: list[Record]) -> None:
        """Commit `planned`. If that fails for a reason that is not the infrastructure's, bisect:
        the error is pinned on one message, which then becomes a dead letter, whatever the error
        (a SQLSTATE, or an exception in our own code that this message triggers)."""
        assert self.store is not None  # noqa: S101
        plan = self.planner.plan(planned, self.settings.max_consecutive_dead_letters)
        await self._publish_dead_letters(plan.dead)
        try:
            result = await self.store.commit_batch(plan.events, plan.dead, plan.progress,
                                                   publish=self._publish_dead_letters)
        except Exception as e:
            if is_infrastructure(e) or isinstance(e, InfrastructureFault):
                raise
            if len(planned) > 1:
                half = len(planned) // 2
                await self._commit_isolating(planned[:half])
                if not self.tripped:
                    await self._commit_isolating(planned[half:])
                return
            only = planned[0]
            if only.reason is not None:  # its dead letter alone failed: not the message
                raise InfrastructureFault(f"could not record a dead letter: {describe(e)}") from e
            log.warning("event_failed", error=describe(e),
                        event_id=str(only.event.event_id) if only.event else None,
                        topic=only.topic, partition=only.partition, offset=only.offset)
            await self._commit_isolating([self.planner.reject(only, describe(e))])
            return
        self.planner.committed(plan)
        self.tripped = plan.tripped
        if self.on_commit is not None:
            self.on_commit(planned)
        for tp, p in plan.progress.items():
            self._committed[tp] = p.next_offset
            self.expected[tp] = p.next_offset
        try:
            self._observe(plan, result)
        except Exception:  # committed already: a metrics fault must not replay the batch
            log.exception("metrics_failed")

    def _observe(self, plan: Plan, result: BatchResult) -> None:
        m = self.metrics
        now = datetime.now(UTC)
        for inc in result.applied:
            m.latency.observe((now - inc.event.occurred_at).total_seconds())
        for (event_type, outcome), count in result.outcomes.items():
            (m.rejected if outcome == "REJECTED" else m.applied).labels(event_type).inc(count)
        m.duplicates.inc(result.duplicates)
        for event, why in result.rejected:
            with structlog.contextvars.bound_contextvars(
                    event_id=str(event.event_id), correlation_id=event.correlation_id,
                    event_type=event.event_type):
                log.warning("event_rejected", reason=why)
        for d in [*plan.dead, *result.dead]:
            m.dead_lettered.labels(d.event_type or "unknown").inc()
        if self.consumer is not None:
            assigned = self.consumer.assignment()
            for (topic, partition), p in plan.progress.items():
                tp = TopicPartition(topic, partition)
                # A rebalance may have taken the partition meanwhile: highwater() asserts on it.
                high = self.consumer.highwater(tp) if tp in assigned else None
                if high is not None:
                    m.lag.labels(topic, str(partition)).set(max(high - p.next_offset, 0))

    async def _publish_dead_letters(self, dead: Sequence[DeadLetter]) -> None:
        """Send to the dead-letter topic, acknowledged, before the database commit that records
        them (a crash between the two re-sends: at least once). Bisection plans the same
        records again; each is sent once per batch."""
        if not dead or self.producer is None:
            return
        topic = self.settings.topic(DEAD_LETTER_TOPIC)
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
            futures.append(self._send_dead_letter(topic, d, headers))
        await asyncio.gather(*futures)  # acknowledged before the database commit

    async def _send_dead_letter(self, topic: str, d: DeadLetter,
                                headers: list[tuple[str, bytes]]) -> None:
        assert self.producer is not None  # noqa: S101
        value = d.value or b""
        try:
            await self.producer.send_and_wait(topic, value=value, key=d.key, headers=headers)
        except MessageSizeTooLargeError:
            # The table keeps the full raw bytes; the topic gets a prefix and says so.
            await self.producer.send_and_wait(
                topic, value=value[:DLQ_TRUNCATE_TO], key=d.key,
                headers=[*headers, ("truncated_from", str(len(value)).encode())])

    async def _commit_kafka(self) -> None:
        assert self.consumer is not None  # noqa: S101
        offsets = {TopicPartition(t, p): o for (t, p), o in self._committed.items()}
        self._committed = {}
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as e:
            # The database holds the authoritative offsets; Kafka's copy is for lag tooling.
            log.warning("kafka_commit_failed", error=str(e))


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def main(settings: Settings) -> int:
    """Entry point of `finpass-pipeline consume`."""
    stop = asyncio.Event()
    install_signal_handlers(stop)
    daemon = ConsumerDaemon(settings)
    return await daemon.run(stop)
