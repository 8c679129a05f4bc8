"""Connecting to PostgreSQL and deciding what a database error means for a batch.

Two kinds matter to the consumer (CONTRACT.md §5 "Never stop on a message"):
- infrastructure (`is_infrastructure`): the connection, the server, the schema or the rights, not
  the data. Transient ones (connection lost, server restarting, deadlock, serialization failure)
  and configuration ones (a missing table, a revoked grant, a full disk) alike: retry the same
  batch with backoff, never dead-letter — an operator's fix lets it through.
- anything else (a constraint, a value out of range, an index row too large, an encoding the
  client refuses, even an exception in our own code): the consumer bisects the batch, and the
  one message the error is pinned on is dead-lettered with it. `is_rejection` (class 22/23) is the
  subset that leaves the connection usable.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import structlog

from finpass_pipeline.errors import FinpassError
from finpass_pipeline.retry import Backoff, Stopped

log = structlog.get_logger(__name__)
T = TypeVar("T")

TRANSIENT_SQLSTATE_CLASSES = ("08", "40", "53", "57", "58")  # connection, txn rollback, resources,
# operator intervention (admin shutdown, crash recovery), system error


# Errors no message content can cause: the role or database (28, 3D), the schema or a grant
# (42: statements use parameters, so a 42 is our schema, not the data), prerequisite state (55,
# e.g. lock not available), configuration (F0) and internal errors (XX).
CONFIGURATION_SQLSTATE_CLASSES = ("28", "3D", "42", "55", "F0", "XX")


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


def is_infrastructure(error: BaseException) -> bool:
    """True when the error is the infrastructure's (transient or configuration), never one
    message's: retry with backoff rather than dead-letter."""
    if is_transient(error):
        return True
    if isinstance(error, asyncpg.PostgresError):
        state = getattr(error, "sqlstate", "") or ""
        return state[:2] in CONFIGURATION_SQLSTATE_CLASSES
    return False


def describe(error: BaseException) -> str:
    """One line for logs and dead-letter reasons: `SQLSTATE 54000: index row size ...`."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    state = getattr(error, "sqlstate", None) if isinstance(error, asyncpg.PostgresError) else None
    return f"SQLSTATE {state}: {text}" if state else f"{type(error).__name__}: {text}"


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


def _role_settings(role: str | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    """`role` (FINPASS_DATABASE_ROLE) set at connection startup, so the session works as that
    role (`SET ROLE`), also after a pool's RESET ALL between uses."""
    if role:
        kwargs["server_settings"] = {**kwargs.get("server_settings", {}), "role": role}
    return kwargs


async def connect(dsn: str, *, role: str | None = None, **kwargs: Any) -> asyncpg.Connection:
    """One connection, as `role` when given (the one-shot commands)."""
    conn: asyncpg.Connection = await asyncpg.connect(dsn, **_role_settings(role, kwargs))
    return conn


async def create_pool(dsn: str, *, role: str | None = None, **kwargs: Any) -> asyncpg.Pool:
    """The daemon's pool. It connects on first use and keeps no idle floor (min_size 0): after
    `checked_out` expires the connections, none is re-made until the retry needs it, so no
    connection sits idle through a backoff wait while the server restarts. Connecting, and
    waiting for a server that is down, is therefore the first query's business
    (`retry_transient`). A malformed DSN is rejected by settings validation before we get here.
    """
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn, min_size=0, max_size=kwargs.pop("max_size", 4), command_timeout=120,
        **_role_settings(role, kwargs))
    return pool


async def retry_transient(work: Callable[[], Awaitable[T]], *, during: str,
                          stop: asyncio.Event | None = None,
                          on_retry: Callable[[], None] | None = None) -> T:
    """`await work()` until it succeeds, retrying transient errors with backoff (each logged as
    `database_unavailable`); anything else propagates. Raises `Stopped` if `stop` is set first.
    """
    backoff = Backoff(on_retry=on_retry)
    while True:
        try:
            return await work()
        except Exception as e:
            if not is_transient(e):
                raise
            log.warning("database_unavailable", during=during, error=str(e) or type(e).__name__,
                        retry_in_s=backoff.delay)
        if stop is not None and stop.is_set():
            raise Stopped
        await backoff.wait(stop)
        if stop is not None and stop.is_set():
            raise Stopped


async def schema_ready(conn: asyncpg.Pool | asyncpg.Connection) -> bool:
    """True when the pipeline's tables exist (migrations V3+ applied)."""
    found = await conn.fetchval("SELECT to_regclass('consumer_offsets') IS NOT NULL")
    return bool(found)


def with_database(dsn: str, name: str) -> str:
    """`dsn` pointing at database `name` on the same server."""
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


async def create_database(admin_dsn: str, name: str) -> str:
    """Create the empty database `name` on the server of `admin_dsn`; returns its DSN."""
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return with_database(admin_dsn, name)


async def drop_database(admin_dsn: str, name: str) -> None:
    """Drop `name` if it exists, disconnecting whoever is still in it."""
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@asynccontextmanager
async def scratch_database(admin_dsn: str, name: str) -> AsyncIterator[str]:
    """DSN of the brand-new, empty database `name`, dropped when the block ends (tests, benches).
    """
    dsn = await create_database(admin_dsn, name)
    try:
        yield dsn
    finally:
        await drop_database(admin_dsn, name)


@asynccontextmanager
async def command_connection(dsn: str, role: str | None, table: str, *,
                             missing: str | None = None,
                             error: type[FinpassError] = FinpassError
                             ) -> AsyncIterator[asyncpg.Connection]:
    """One connection for an operator command, once `table` is known to exist. Connection and
    database errors become one-line `error`s; `missing` is the message when the table is not
    there (default: run migrate)."""
    try:
        conn = await connect(dsn, role=role)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        raise error(f"cannot connect to PostgreSQL: {e}") from e
    try:
        if await conn.fetchval("SELECT to_regclass($1)", table) is None:
            raise error(missing or f"table {table} is missing: run `finpass-pipeline migrate` "
                        "against this database")
        yield conn
    except asyncpg.PostgresError as e:
        raise error(f"database error: {type(e).__name__}: {e}") from e
    finally:
        await conn.close()
