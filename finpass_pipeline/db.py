"""Connecting to PostgreSQL and deciding what a database error means for a batch.

Three kinds: transient (connection lost, server restarting, deadlock, serialization failure:
retry the same batch with backoff, never dead-letter), rejected (the data itself: a constraint or
value the database refuses — isolate the event and dead-letter it), and anything else (a bug:
crash loudly; the restart resumes from the stored offsets).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

import asyncpg
import structlog

log = structlog.get_logger(__name__)
T = TypeVar("T")
MAX_BACKOFF_S = 30.0


class Stopped(Exception):
    """The stop event was set while waiting to retry."""

TRANSIENT_SQLSTATE_CLASSES = ("08", "40", "53", "57", "58")  # connection, txn rollback, resources,
# operator intervention (admin shutdown, crash recovery), system error


def is_transient(error: BaseException) -> bool:
    """True when retrying the same work later can succeed."""
    if isinstance(error, (OSError, asyncio.TimeoutError, asyncpg.InterfaceError,
                          asyncpg.exceptions.ConnectionDoesNotExistError)):
        return True
    if isinstance(error, asyncpg.InternalClientError):
        # The client's protocol state broke, typically a connection the server dropped mid-query
        # (asyncpg can hand such a connection out again: MagicStack/asyncpg#784). Retrying on a
        # fresh connection is safe: the transaction either committed (the event-id claim makes
        # the retry a no-op) or rolled back.
        return True
    if isinstance(error, asyncpg.PostgresError):
        state = getattr(error, "sqlstate", "") or ""
        return state[:2] in TRANSIENT_SQLSTATE_CLASSES
    return False


def is_rejection(error: BaseException) -> bool:
    """True when the database refused the data itself (class 22 data exception, 23 integrity)."""
    if isinstance(error, asyncpg.PostgresError):
        state = getattr(error, "sqlstate", "") or ""
        return state[:2] in ("22", "23")
    return False


@asynccontextmanager
async def checked_out(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection that is closed, not returned to the pool, when work on it fails for
    any reason but the database refusing the data: its protocol state is then unknown, and a
    half-failed connection handed out again fails the next batch (seen after a server restart).
    The pool's other connections are then replaced on their next use.
    """
    async with pool.acquire() as conn:
        try:
            yield conn
        except BaseException as e:
            if not is_rejection(e):
                # A connection the server closed has already gone back to the pool, closed.
                with suppress(asyncpg.InterfaceError):
                    conn.terminate()
                # Whatever dropped this connection (a server restart, a failover) has likely
                # dropped the idle ones too: replace them all on their next use rather than
                # fail one retry per stale connection.
                await pool.expire_connections()
            raise


async def create_pool(dsn: str, stop: asyncio.Event | None = None, *, role: str | None = None,
                      **kwargs: Any) -> asyncpg.Pool:
    """A pool, retrying with backoff while the server is down (logged); raises when `stop` is set.

    A malformed DSN is rejected by settings validation before we get here. `role`
    (FINPASS_DATABASE_ROLE) is set at connection startup, so every connection of the pool works
    as that role (`SET ROLE`), also after the pool's RESET ALL between uses.
    """
    delay = 0.5
    if role:
        kwargs["server_settings"] = {**kwargs.get("server_settings", {}), "role": role}
    while True:
        try:
            pool: asyncpg.Pool = await asyncpg.create_pool(
                dsn, min_size=1, max_size=kwargs.pop("max_size", 4), command_timeout=120,
                **kwargs,
            )
        except Exception as e:
            if not is_transient(e) and not isinstance(e, asyncpg.CannotConnectNowError):
                raise
            log.warning("database_unavailable", error=str(e) or type(e).__name__,
                        retry_in_s=delay)
            if stop is not None and stop.is_set():
                raise
            await _sleep_or_stop(delay, stop)
            delay = min(delay * 2, 15.0)
        else:
            return pool


async def retry_transient(work: Callable[[], Awaitable[T]], *, during: str,
                          stop: asyncio.Event | None = None) -> T:
    """`await work()` until it succeeds, retrying transient errors with backoff (each logged as
    `database_unavailable`); anything else propagates. Raises `Stopped` if `stop` is set first.
    """
    delay = 0.5
    while True:
        try:
            return await work()
        except Exception as e:
            if not is_transient(e):
                raise
            log.warning("database_unavailable", during=during, error=str(e) or type(e).__name__,
                        retry_in_s=delay)
        if stop is not None and stop.is_set():
            raise Stopped
        await _sleep_or_stop(delay, stop)
        if stop is not None and stop.is_set():
            raise Stopped
        delay = min(delay * 2, MAX_BACKOFF_S)


async def _sleep_or_stop(delay: float, stop: asyncio.Event | None) -> None:
    if stop is None:
        await asyncio.sleep(delay)
        return
    try:
        await asyncio.wait_for(stop.wait(), timeout=delay)
    except TimeoutError:
        pass


async def schema_ready(conn: asyncpg.Pool | asyncpg.Connection) -> bool:
    """True when the pipeline's tables exist (migrations V3+ applied)."""
    found = await conn.fetchval("SELECT to_regclass('consumer_offsets') IS NOT NULL")
    return bool(found)
