"""Transactional outbox: an upstream service's events commit with its own rows, then reach Kafka.

An upstream service with its own PostgreSQL cannot write to its tables and publish to Kafka
atomically. Instead it writes the event into `event_outbox` in the same transaction as its own
change (`enqueue`), and the relay (`finpass-pipeline outbox-relay`) publishes unsent rows and marks
them sent:

    await outbox.install(conn)                       # once, e.g. from the service's migrations
    async with conn.transaction():
        await conn.execute("UPDATE accounts ...")
        await outbox.enqueue(conn, event)            # commits or rolls back with the UPDATE

Delivery is at least once: a row is marked sent only after Kafka acknowledged it, in the
transaction that locked it, so a crash between the two republishes it. That is harmless, since
`event_id` is the pipeline's idempotency key. Rows are published in `id` order, one relay at a
time (a PostgreSQL advisory lock makes a second relay wait), which keeps each key's events in
order. Rows of one aggregate written by concurrent transactions are ordered by `id`, i.e. by
insertion; a service already serialises writes to one aggregate (its row lock), so that matches.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterable
from typing import Any

import asyncpg
import structlog

from finpass_pipeline.db import is_transient
from finpass_pipeline.events import (
    MAX_EVENT_BYTES,
    EventBase,
    message_key,
    serialize_event,
    topic_suffix,
)
from finpass_pipeline.retry import Backoff, sleep_or_stop
from finpass_pipeline.settings import Settings
from producers.errors import MessageRejected, NotInTransaction, PublishError
from producers.publisher import Publisher

__all__ = [
    "OUTBOX_DDL",
    "RELAY_LOCK_KEY",
    "OutboxRelay",
    "enqueue",
    "enqueue_many",
    "install",
    "run_relay",
]

log = structlog.get_logger("finpass.outbox")

OUTBOX_DDL = """
CREATE TABLE IF NOT EXISTS event_outbox (
    id           BIGSERIAL PRIMARY KEY,
    event_id     UUID NOT NULL UNIQUE,
    topic        TEXT NOT NULL,
    message_key  BYTEA,
    payload      BYTEA NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at      TIMESTAMPTZ NULL
);
CREATE INDEX IF NOT EXISTS event_outbox_unsent_idx ON event_outbox (id) WHERE sent_at IS NULL;
-- For `finpass-pipeline prune --outbox`: rows are sent in id order, so sent_at follows the heap.
CREATE INDEX IF NOT EXISTS event_outbox_sent_at_brin ON event_outbox
    USING brin (sent_at) WITH (autosummarize = on);
COMMENT ON COLUMN event_outbox.topic IS
    'topic name after the prefix (e.g. payments); the relay adds FINPASS_TOPIC_PREFIX';
"""
"""The outbox table, the partial index the relay scans (only unsent rows are indexed) and the
one `prune --outbox` walks."""

RELAY_LOCK_KEY = int.from_bytes(b"fpoutbox", "big")
"""`pg_advisory_lock` key held by the running relay for its whole session."""


_INSERT = """
INSERT INTO event_outbox (event_id, topic, message_key, payload) VALUES ($1, $2, $3, $4)
ON CONFLICT (event_id) DO NOTHING
"""
# Plain FOR UPDATE, not SKIP LOCKED: the advisory lock already makes this relay the only one, and
# skipping a row someone else has locked would publish that key's later rows before it.
_SELECT_BATCH = """
SELECT id, topic, message_key, payload FROM event_outbox
WHERE sent_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE
"""
_MARK_SENT = "UPDATE event_outbox SET sent_at = now() WHERE id = ANY($1::bigint[])"


async def install(conn: asyncpg.Connection) -> None:
    """Create `event_outbox` and its index if missing (idempotent)."""
    await conn.execute(OUTBOX_DDL)


def _row(event: EventBase) -> tuple[Any, str, bytes, bytes]:
    payload = serialize_event(event)
    if len(payload) > MAX_EVENT_BYTES:
        # Refused now, inside the caller's transaction: a row this large would block the relay.
        raise MessageRejected(
            f"event is {len(payload)} bytes, larger than the limit of {MAX_EVENT_BYTES}"
        )
    return event.event_id, topic_suffix(event.event_type), message_key(event), payload


def _require_transaction(conn: asyncpg.Connection) -> None:
    if not conn.is_in_transaction():
        raise NotInTransaction("outbox.enqueue must run inside the caller's transaction")


async def enqueue(conn: asyncpg.Connection, event: EventBase) -> None:
    """Add `event` to the outbox inside the caller's open transaction; commits with it, never
    on its own. Enqueuing the same `event_id` twice keeps one row.

    Raises `NotInTransaction` outside a transaction, `MessageRejected` for an oversized event.
    """
    _require_transaction(conn)
    await conn.execute(_INSERT, *_row(event))


async def enqueue_many(conn: asyncpg.Connection, events: Iterable[EventBase]) -> None:
    """`enqueue` for several events in one round trip; they are published in this order."""
    _require_transaction(conn)
    await conn.executemany(_INSERT, [_row(event) for event in events])


class OutboxRelay:
    """Publishes unsent outbox rows in id order and marks them sent; `await relay.run(stop)`.

    `state` (connecting, waiting_for_lock, relaying, backing_off, stopped) and `published` (rows
    marked sent by this relay) are for health checks and tests.
    """

    def __init__(self, settings: Settings, dsn: str, *, batch_size: int = 500,
                 poll_interval: float = 0.2, request_timeout_ms: int = 30_000) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.settings = settings
        self.dsn = dsn
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.request_timeout_ms = request_timeout_ms
        self.state = "connecting"
        self.published = 0
        self.failures = 0
        self._backoff = Backoff()

    async def run(self, stop: asyncio.Event) -> int:
        """Relay until `stop` is set (the batch in flight completes); returns the exit code.

        Kafka or PostgreSQL being down is retried with backoff (and logged); a permanent
        refusal (e.g. a row the broker will never accept) stops the relay with 1, since skipping
        it would break its key's order and deleting it would lose it.
        """
        log.info("outbox_relay_started", batch_size=self.batch_size,
                 prefix=self.settings.topic_prefix)
        try:
            while not stop.is_set():
                try:
                    if not await self._session(stop):
                        return 1
                except PublishError as e:
                    if not e.retriable:
                        log.exception("outbox_publish_refused", error=str(e),
                                      hint="fix or remove the oldest unsent event_outbox row")
                        return 1
                    await self._back_off("kafka_unavailable", e, stop)
                except Exception as e:
                    if not is_transient(e):
                        log.exception("outbox_relay_failed", error=str(e) or type(e).__name__)
                        return 1
                    await self._back_off("database_unavailable", e, stop)
            return 0
        finally:
            self.state = "stopped"
            log.info("outbox_relay_stopped", published=self.published)

    async def _back_off(self, what: str, error: BaseException, stop: asyncio.Event) -> None:
        self.state = "backing_off"
        self.failures += 1
        log.warning(what, error=str(error) or type(error).__name__,
                    retry_in_s=self._backoff.delay)
        await self._backoff.wait(stop)

    async def _session(self, stop: asyncio.Event) -> bool:
        """One connection's worth of relaying; False when the outbox table is missing."""
        self.state = "connecting"
        conn = await asyncpg.connect(self.dsn, timeout=10)
        try:
            if not await conn.fetchval("SELECT to_regclass('event_outbox') IS NOT NULL"):
                log.error("outbox_table_missing",
                          hint="call producers.outbox.install(conn) from the service's migrations")
                return False
            if not await self._lock(conn, stop):
                return True
            async with Publisher(self.settings, client_id="finpass-outbox-relay",
                                 request_timeout_ms=self.request_timeout_ms) as publisher:
                self.state = "relaying"
                while not stop.is_set():
                    sent = await self._relay_batch(conn, publisher)
                    self._backoff.reset()  # both services answered: the next outage starts afresh
                    if sent < self.batch_size:
                        await sleep_or_stop(self.poll_interval, stop)
            return True
        finally:
            await _close(conn)  # closing the session releases the advisory lock

    async def _lock(self, conn: asyncpg.Connection, stop: asyncio.Event) -> bool:
        """Take the relay lock, waiting while another relay holds it; False if stopped first."""
        # Polled try-lock rather than a blocking pg_advisory_lock, so SIGTERM is honoured at once.
        said = False
        while not stop.is_set():
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_KEY):
                log.info("outbox_lock_acquired")
                return True
            self.state = "waiting_for_lock"
            if not said:
                log.info("outbox_lock_wait", note="another relay is running; waiting for it")
                said = True
            await sleep_or_stop(1.0, stop)
        return False

    async def _relay_batch(self, conn: asyncpg.Connection, publisher: Publisher) -> int:
        async with conn.transaction():
            rows = await conn.fetch(_SELECT_BATCH, self.batch_size)
            if not rows:
                return 0
            futures = [
                await publisher.send_raw(self.settings.topic(row["topic"]), row["message_key"],
                                         row["payload"])
                for row in rows
            ]
            # Every ack before the mark, in the locking transaction: a crash here republishes.
            await publisher.settle(futures)
            await conn.execute(_MARK_SENT, [row["id"] for row in rows])
        self.published += len(rows)
        log.debug("outbox_batch_published", rows=len(rows), last_id=rows[-1]["id"])
        return len(rows)


async def _close(conn: asyncpg.Connection) -> None:
    try:
        await asyncio.wait_for(conn.close(), timeout=5)
    except Exception:  # noqa: BLE001  (a dead connection cannot close politely; drop it)
        conn.terminate()


async def run_relay(settings: Settings, dsn: str, stop: asyncio.Event, *,
                    batch_size: int = 500) -> int:
    """Run an `OutboxRelay` until `stop` is set; returns the process exit code."""
    return await OutboxRelay(settings, dsn, batch_size=batch_size).run(stop)


async def main(settings: Settings, dsn: str, batch_size: int = 500) -> int:
    """Entry point of `finpass-pipeline outbox-relay`: SIGTERM/SIGINT stop it cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return await run_relay(settings, dsn, stop, batch_size=batch_size)
