"""`finpass-pipeline consume`: the consumer daemon's lifecycle.

One consumer group over the four domain topics. The daemon opens what a run needs (the HTTP
endpoints, the database pool, the Kafka clients) in one `AsyncExitStack`, closes them in reverse,
and runs the loop over the stages, each in its own module:

    intake (poll, decode ahead) -> offsets (the database's offsets guard the order)
      -> lanes (the batch split by partition) -> committer per lane (plan, commit one
      transaction, bisect, retry) -> store (the transaction)
      -> dead_letters (the dead-letter topic, before the commit) -> offsets (Kafka's commit)

Each poll batch becomes one database transaction per lane (`FINPASS_CONSUMER_LANES`, the lanes
committing concurrently) holding the domain rows, one audit row per applied event, the dead
letters and the consumed offsets of its partitions; Kafka's commit follows the database's.
On partition assignment the consumer seeks to the offsets the database holds, so a crash at any
instant neither loses nor repeats an effect.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack, suppress
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from consumers import gc_tuning, lanes
from consumers.apply import Applier
from consumers.committer import Committer
from consumers.dead_letters import DLQ_MAX_REQUEST_BYTES, DeadLetterSender
from consumers.intake import Intake
from consumers.lifecycle import LifecycleScheduler
from consumers.offsets import OffsetGuard
from consumers.planner import Planner
from consumers.records import Record
from consumers.store import Store
from finpass_pipeline.audit.chain import PARTITIONS_AHEAD, AuditWriter
from finpass_pipeline.audit.pseudonym import Pseudonymizer
from finpass_pipeline.audit.sealer import run_sealer
from finpass_pipeline.audit.sealer_process import SealerConfig, sealer_process
from finpass_pipeline.db import checked_out, create_pool, describe, retry_transient, schema_ready
from finpass_pipeline.kafka import DEAD_LETTER_TOPIC, DOMAIN_TOPICS, domain_topics, ensure_topics
from finpass_pipeline.metrics import ConsumerMetrics, http_server
from finpass_pipeline.privacy.vault import Vault, blind_index_key
from finpass_pipeline.retry import Backoff, Stopped, sleep_or_stop
from finpass_pipeline.settings import Settings

log = structlog.get_logger("finpass.consumer")

PARKED_EVERY_S = 15.0
"""How often the parked gauges are refreshed from `parked_events`."""


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, daemon: ConsumerDaemon, guard: OffsetGuard) -> None:
        self.daemon = daemon
        self.guard = guard

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        # The batch in flight holds the lock: it commits (database, then Kafka) before hand-off.
        async with self.daemon.batch_lock:
            log.info("partitions_revoked", partitions=[f"{tp.topic}[{tp.partition}]"
                                                       for tp in revoked])
            self.guard.revoked(revoked)

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        await self.guard.seek_to_stored(list(assigned))
        self.daemon.healthy = True


class ConsumerDaemon:
    """Run with `await ConsumerDaemon(settings).run(stop)`; returns the process exit code."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = ConsumerMetrics()
        self.pseudonymizer = Pseudonymizer(settings.hash_key(), settings.audit_hash_key_id)
        self.vault = Vault(settings.pii_keyring(), blind_index_key(self.pseudonymizer))
        self.batch_lock = asyncio.Lock()
        self.healthy = False
        self.last_batch_at: float | None = None
        self.on_commit: Callable[[list[Record]], None] | None = None
        """Called with each committed sub-batch's records (the bench measures latency here)."""
        self._consumer: AIOKafkaConsumer | None = None  # for /healthz only
        self.lifecycle = LifecycleScheduler.for_settings(settings, self.metrics)
        """Audit retention and prune on their intervals, when enabled (consumers/lifecycle.py)."""

    def health(self) -> dict[str, Any]:
        consumer = self._consumer
        return {
            "ok": self.healthy,
            "assigned_partitions": len(consumer.assignment()) if consumer else 0,
            "seconds_since_last_batch": (round(time.monotonic() - self.last_batch_at, 3)
                                         if self.last_batch_at else None),
        }

    # --- lifecycle -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> int:
        s = self.settings
        async with AsyncExitStack() as resources:
            port = await resources.enter_async_context(
                http_server(s.http_port, self.metrics, self.health))
            if port:
                log.info("http_listening", port=port, paths=["/healthz", "/metrics"])
            # A connection per lane, and the parked gauges', lifecycle's and a sealer task's.
            pool = await create_pool(s.database_url, role=s.database_role,
                                     max_size=s.consumer_lanes + 3)
            resources.push_async_callback(pool.close)
            try:
                ready = await retry_transient(lambda: _prepare_database(pool),
                                              during="startup", stop=stop,
                                              on_retry=self.metrics.retries.inc)
            except Stopped:
                log.info("stopped_before_start", note="the database never answered")
                return 0
            if not ready:
                log.error("schema_missing",
                          hint="run `finpass-pipeline migrate` against this database")
                return 1
            store = Store(pool, s.consumer_group, Applier(self.pseudonymizer),
                          AuditWriter(chained=s.audit_chain), self.vault)
            await self._start_sealer(resources, pool, stop)
            clients = await _start_kafka(s, stop, self.metrics.retries.inc)
            if clients is None:
                return 0
            consumer, producer = clients
            gc_tuning.freeze_startup_heap()  # after start-up, before the first batch
            # Leaving the group on the way out moves the partitions at once.
            resources.push_async_callback(producer.stop)
            resources.push_async_callback(consumer.stop)
            return await self._consume(stop, consumer, producer, store)
        raise AssertionError("unreachable")  # pragma: no cover (mypy: the with always returns)

    async def _start_sealer(self, resources: AsyncExitStack, pool: asyncpg.Pool,
                            stop: asyncio.Event) -> None:
        """The Merkle sealer beside the consumer (V14+ schema, FINPASS_AUDIT_SEALER): a child
        process by default, or a task; ingest never waits on it; it stops with the daemon."""
        s = self.settings
        if s.audit_sealer == "off" or not await pool.fetchval(
                "SELECT to_regclass('audit_tree_leaves') IS NOT NULL"):
            return
        signer = s.signer() if s.audit_checkpoint_every_s else None  # bad key: exit 2 now
        if signer is not None and signer.dev:
            log.warning("audit_dev_signing_key",
                        note="scheduled checkpoints are signed with the dev key (dev mode)")
        if s.audit_sealer == "process":
            await resources.enter_async_context(sealer_process(SealerConfig(
                s.database_url, s.database_role, s.audit_seal_every_s,
                s.audit_checkpoint_every_s, s.audit_origin, s.audit_signing_key, s.dev_mode,
                s.log_format, s.log_level)))
            return
        task = asyncio.create_task(run_sealer(pool, stop, s.audit_seal_every_s, signer,
                                              s.audit_checkpoint_every_s))

        async def _stop() -> None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

        resources.push_async_callback(_stop)
        log.info("audit_sealer_started", mode="task", every_s=s.audit_seal_every_s,
                 checkpoint_every_s=s.audit_checkpoint_every_s)

    async def _consume(self, stop: asyncio.Event, consumer: AIOKafkaConsumer,
                       producer: AIOKafkaProducer, store: Store) -> int:
        s = self.settings
        guard = OffsetGuard(consumer, store, self.metrics)
        planner = Planner(s.topic_prefix)
        order = {s.topic(name): i for i, name in enumerate(DOMAIN_TOPICS)}
        intake = Intake(consumer, guard, planner, order, s.batch_max_events)
        # One committer per lane: each keeps its own batch's dead-letter bookkeeping.
        committers = [Committer(store, planner, DeadLetterSender(producer, s.topic(
            DEAD_LETTER_TOPIC)), guard, consumer, self.metrics, s.max_consecutive_dead_letters)
            for _ in range(s.consumer_lanes)]
        for committer in committers:
            committer.on_commit = self.on_commit
        self._consumer = consumer
        consumer.subscribe(domain_topics(s), listener=_Rebalance(self, guard))
        log.info("consumer_started", group=s.consumer_group, topics=domain_topics(s))
        # The next batch is fetched and decoded while this one commits: Python parses while
        # PostgreSQL writes (the event loop switches at every database await).
        ahead = asyncio.create_task(intake.next_batch())
        parked = asyncio.create_task(self._watch_parked(store, stop))
        # Off by default; its failures are logged and counted there, never raised here.
        lifecycle = asyncio.create_task(self.lifecycle.run(stop))
        try:
            while not stop.is_set():
                fetched = await ahead
                ahead = asyncio.create_task(intake.next_batch())
                if not fetched:
                    continue
                async with self.batch_lock:
                    in_order = await guard.in_sequence(fetched)
                    if not in_order:
                        continue
                    planned = [r if r is not None else planner.decode(rec)
                               for rec, r in in_order]
                    started = time.monotonic()
                    done = await asyncio.gather(*(
                        committer.commit(part, stop) for committer, part in zip(
                            committers, lanes.split(planned, len(committers)), strict=True)
                        if part))
                    if not all(done):
                        log.warning("shutdown_during_retry",
                                    note="batch not applied; it is re-read on restart")
                        return 0
                    await guard.commit_kafka()
                    self.metrics.batch_seconds.observe(time.monotonic() - started)
                    self.metrics.batch_size.observe(len(planned))
                    self.last_batch_at = time.monotonic()
                tripped = next((c.tripped for c in committers if c.tripped), None)
                if tripped:
                    log.error("stop_the_line", partition=tripped,
                              limit=s.max_consecutive_dead_letters,
                              reason="too many consecutive dead letters on one partition; "
                                     "something upstream is broken")
                    return 1
        finally:
            ahead.cancel()
            parked.cancel()
            lifecycle.cancel()
        log.info("draining_done", note="stopping: last batch committed, leaving the group")
        return 0


    async def _watch_parked(self, store: Store, stop: asyncio.Event) -> None:
        """Keep the parked gauges current (count, oldest age) every PARKED_EVERY_S; a failed
        look is logged and tried again next time, it never stops the daemon."""
        while not stop.is_set():
            try:
                count, age = await store.parked_stats()
            except Exception as e:  # noqa: BLE001 -- a gauge must not stop the line
                log.warning("parked_stats_failed", error=describe(e))
            else:
                self.metrics.parked_now.set(count)
                self.metrics.parked_oldest.set(age)
            await sleep_or_stop(PARKED_EVERY_S, stop)


async def _prepare_database(pool: asyncpg.Pool) -> bool:
    """False when the pipeline's tables are missing; else makes sure this month's audit
    partition and the next ones exist before any batch."""
    async with checked_out(pool) as conn:
        if not await schema_ready(conn):
            return False
        if await conn.fetchval("SELECT to_regproc('audit_ensure_partitions')"):
            await conn.fetchval("SELECT audit_ensure_partitions($1)", PARTITIONS_AHEAD)
        return True


async def _start_kafka(s: Settings, stop: asyncio.Event, on_retry: Callable[[], None]
                       ) -> tuple[AIOKafkaConsumer, AIOKafkaProducer] | None:
    """Started consumer and dead-letter producer, retried with backoff until the broker answers;
    None when stopped first."""
    backoff = Backoff(on_retry=on_retry)
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
            log.warning("kafka_unavailable", error=str(e), retry_in_s=backoff.delay)
            await backoff.wait(stop)
            continue
        await _ensure_topics(s, stop)
        if stop.is_set():
            await consumer.stop()
            await producer.stop()
            return None
        return consumer, producer
    return None


async def _ensure_topics(s: Settings, stop: asyncio.Event) -> None:
    """Create missing contract topics (the dead-letter one above all) before consuming.

    Best effort, once the broker answers: a broker that refuses creation (no rights) leaves it
    to the operator's `finpass-pipeline topics`.
    """
    if stop.is_set():
        return
    try:
        created = await ensure_topics(s)
    except KafkaError as e:
        log.warning("topics_not_ensured", error=str(e) or type(e).__name__,
                    hint="run `finpass-pipeline topics` with rights to create topics")
        return
    if any(created.values()):
        log.info("topics_created", topics=[t for t, new in created.items() if new])


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def main(settings: Settings) -> int:
    """Entry point of `finpass-pipeline consume`."""
    stop = asyncio.Event()
    install_signal_handlers(stop)
    gc_tuning.tune_for_batches()
    daemon = ConsumerDaemon(settings)
    return await daemon.run(stop)
