"""Committing one batch whatever its messages hold (CONTRACT.md §5 "Never stop on a message").

- infrastructure faults (`db.is_infrastructure`: the connection, the server, the schema or the
  rights) retry the same batch with backoff, fetching paused meanwhile;
- any other failure is bisected until it is pinned on one message, which becomes a dead letter
  with the error, whatever the error (a SQLSTATE, or an exception our own code raises on it);
- a dead letter that cannot itself be committed is the infrastructure's fault, never a crash.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from consumers.dead_letters import DeadLetterSender
from consumers.offsets import OffsetGuard
from consumers.planner import Plan, Planner
from consumers.records import Record
from consumers.store import BatchResult, OffsetsMoved, Store
from finpass_pipeline.db import describe, is_infrastructure
from finpass_pipeline.metrics import ConsumerMetrics
from finpass_pipeline.retry import Backoff

log = structlog.get_logger("finpass.consumer")


class InfrastructureFault(Exception):
    """Even a single message's dead letter could not be committed: the fault is not the
    message's. Retried with backoff like a lost connection, never a crash."""


class Committer:
    def __init__(self, store: Store, planner: Planner, dead_letters: DeadLetterSender,
                 guard: OffsetGuard, consumer: AIOKafkaConsumer, metrics: ConsumerMetrics,
                 stop_after_dead_letters: int) -> None:
        self.store = store
        self.planner = planner
        self.dead_letters = dead_letters
        self.guard = guard
        self.consumer = consumer
        self.metrics = metrics
        self.limit = stop_after_dead_letters
        self.tripped: str | None = None
        """`topic[p]` once a partition reached the stop-the-line limit of dead letters in a
        row."""
        self.on_commit: Callable[[list[Record]], None] | None = None
        """Called with each committed sub-batch's records (the bench measures latency here)."""

    async def commit(self, planned: list[Record], stop: asyncio.Event) -> bool:
        """Commit the batch, retrying infrastructure faults with backoff. False: stopped first."""
        self.dead_letters.new_batch()  # its retries and bisection send each dead letter once
        backoff = Backoff(on_retry=self.metrics.retries.inc)
        while True:
            try:
                await self._isolating(planned)
            except Exception as e:  # noqa: BLE001 -- see below
                # Whatever reaches here is not one message's fault (those are dead-lettered
                # below): wait for the infrastructure, never crash.
                # Stop fetching ahead while the database is away: nothing piles up.
                self.consumer.pause(*self.consumer.assignment())
                log.warning("transient_failure", error=describe(e), retry_in_s=backoff.delay,
                            batch=len(planned))
                if stop.is_set():
                    return False
                await backoff.wait(stop)
            else:
                if self.consumer.paused():
                    self.consumer.resume(*self.consumer.paused())
                return True

    async def _isolating(self, planned: list[Record]) -> None:
        """Commit `planned`. If that fails for a reason that is not the infrastructure's, bisect:
        the error is pinned on one message, which then becomes a dead letter."""
        plan = self.planner.plan(planned, self.limit)
        await self.dead_letters.publish(plan.dead)
        try:
            result = await self.store.commit_batch(plan.events, plan.dead, plan.progress,
                                                   publish=self.dead_letters.publish)
        except OffsetsMoved as e:
            # An operator skipped ahead: those partitions restart at the new offset; the rest
            # of the batch commits as usual.
            self.guard.moved(e.moved)
            rest = [r for r in planned if (r.topic, r.partition) not in e.moved]
            if rest:
                await self._isolating(rest)
            return
        except Exception as e:
            if is_infrastructure(e) or isinstance(e, InfrastructureFault):
                raise
            if len(planned) > 1:
                half = len(planned) // 2
                await self._isolating(planned[:half])
                if not self.tripped:
                    await self._isolating(planned[half:])
                return
            only = planned[0]
            if only.reason is not None:  # its dead letter alone failed: not the message
                raise InfrastructureFault(f"could not record a dead letter: {describe(e)}") from e
            log.warning("event_failed", error=describe(e),
                        event_id=str(only.event.event_id) if only.event else None,
                        topic=only.topic, partition=only.partition, offset=only.offset)
            await self._isolating([self.planner.reject(only, describe(e))])
            return
        self.planner.committed(plan)
        self.tripped = plan.tripped
        if self.on_commit is not None:
            self.on_commit(planned)
        self.guard.committed(plan.progress)
        try:
            self._observe(planned, plan, result)
        except Exception:  # committed already: a metrics fault must not replay the batch
            log.exception("metrics_failed")

    def _observe(self, records: list[Record], plan: Plan, result: BatchResult) -> None:
        m = self.metrics
        now = datetime.now(UTC)
        now_ms = now.timestamp() * 1000
        for r in records:
            if r.timestamp_ms is not None:  # the producer's (or the broker's) record time
                m.commit_latency.observe(max(now_ms - r.timestamp_ms, 0.0) / 1000)
        for inc in result.applied:
            m.event_age.observe((now - inc.event.occurred_at).total_seconds())
        for event_type, count in result.parked_types.items():
            m.parked.labels(event_type).inc(count)
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
        assigned = self.consumer.assignment()
        for (topic, partition), p in plan.progress.items():
            tp = TopicPartition(topic, partition)
            # A rebalance may have taken the partition meanwhile: highwater() asserts on it.
            high = self.consumer.highwater(tp) if tp in assigned else None
            if high is not None:
                m.lag.labels(topic, str(partition)).set(max(high - p.next_offset, 0))
