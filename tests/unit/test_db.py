"""What a database error means for a batch, and connections the server dropped.

A PostgreSQL restart terminates every pooled connection; the next batch must fail only with
errors the daemon retries, on a connection that is then discarded.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from finpass_pipeline.db import (
    checked_out,
    describe,
    is_infrastructure,
    is_rejection,
    is_transient,
)


@pytest.mark.parametrize(("error", "infrastructure"), [
    (asyncpg.exceptions.UndefinedTableError("relation does not exist"), True),  # 42P01
    (asyncpg.exceptions.InsufficientPrivilegeError("permission denied"), True),  # 42501
    (asyncpg.exceptions.InvalidAuthorizationSpecificationError("no such role"), True),  # 28000
    (asyncpg.exceptions.LockNotAvailableError("could not obtain lock"), True),  # 55P03
    (asyncpg.exceptions.DiskFullError("no space left"), True),  # 53100
    (asyncpg.exceptions.InternalServerError("internal"), True),  # XX000
    (asyncpg.exceptions.ProgramLimitExceededError("index row size exceeds"), False),  # 54000
    (asyncpg.exceptions.RaiseError("a trigger refused it"), False),  # P0001
    (asyncpg.exceptions.UniqueViolationError("duplicate key"), False),
    (asyncpg.exceptions.DataError("invalid input for query argument $1"), False),  # client side
    (KeyError("a bug this message triggers"), False),
])
def test_infrastructure_or_the_message(error: BaseException, infrastructure: bool) -> None:
    """Infrastructure is retried; anything else is bisected and pinned on one message
    (CONTRACT.md §5), whatever its SQLSTATE."""
    assert is_infrastructure(error) is infrastructure


def test_describe_names_the_sqlstate() -> None:
    assert describe(asyncpg.exceptions.ProgramLimitExceededError("index row too big\nDETAIL")) == (
        "SQLSTATE 54000: index row too big")
    assert describe(KeyError("x")) == "KeyError: 'x'"


@pytest.mark.parametrize(("error", "transient", "rejection"), [
    (ConnectionRefusedError(111, "Connect call failed"), True, False),
    (TimeoutError(), True, False),
    (asyncpg.exceptions.ConnectionDoesNotExistError("closed in the middle"), True, False),
    (asyncpg.InternalClientError("cannot switch to state 15; another operation (2)"), True,
     False),
    (asyncpg.exceptions.AdminShutdownError("terminating connection"), True, False),
    (asyncpg.exceptions.CannotConnectNowError("the database system is shutting down"), True,
     False),
    (asyncpg.exceptions.DeadlockDetectedError("deadlock detected"), True, False),
    (asyncpg.exceptions.SerializationError("could not serialize"), True, False),
    (asyncpg.exceptions.UniqueViolationError("duplicate key"), False, True),
    (asyncpg.exceptions.StringDataRightTruncationError("value too long"), False, True),
    (asyncpg.exceptions.UndefinedTableError("relation does not exist"), False, False),
    (ValueError("a bug"), False, False),
    # A value the client cannot encode (2**70 for a bigint) is reported as class 22: the data.
    (asyncpg.exceptions.DataError("invalid input for query argument $1"), False, True),
])
def test_error_classification(error: BaseException, transient: bool, rejection: bool) -> None:
    assert is_transient(error) is transient
    assert is_rejection(error) is rejection


@pytest.mark.integration
async def test_server_terminated_connections_fail_transiently_then_recover(fresh_db: str) -> None:
    """The server terminates the idle pooled connection 200 times, at varied delays before the
    next transaction: every failure is one the daemon retries, and the retry succeeds."""
    pool = await asyncpg.create_pool(fresh_db, min_size=1, max_size=2)
    admin = await asyncpg.connect(fresh_db)
    failures: list[str] = []
    try:
        for i in range(200):
            pid = await pool.fetchval("SELECT pg_backend_pid()")
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
            await asyncio.sleep((i % 10) * 0.0005)
            for _attempt in range(3):
                try:
                    async with checked_out(pool) as conn, conn.transaction():
                        assert await conn.fetchval("SELECT 1") == 1
                    break
                except Exception as e:  # noqa: BLE001  (classified below)
                    assert is_transient(e), f"{type(e).__name__}: {e} must be retried"
                    failures.append(type(e).__name__)
            else:
                pytest.fail(f"no recovery after termination {i}: {failures[-3:]}")
    finally:
        await admin.close()
        await pool.close()
    # The scenario really happened: the first transaction after a termination often fails.
    assert len(failures) >= 20  # 80-90 of 200 here


@pytest.mark.integration
async def test_checked_out_discards_a_connection_unless_the_data_was_refused(
        fresh_db: str) -> None:
    pool = await asyncpg.create_pool(fresh_db, min_size=1, max_size=1)
    try:
        await pool.execute("CREATE TABLE t (k int PRIMARY KEY)")
        pid = await pool.fetchval("SELECT pg_backend_pid()")
        with pytest.raises(asyncpg.UniqueViolationError):
            async with checked_out(pool) as conn, conn.transaction():
                await conn.execute("INSERT INTO t VALUES (1), (1)")
        assert await pool.fetchval("SELECT pg_backend_pid()") == pid  # kept: it is healthy
        with pytest.raises(asyncio.TimeoutError):
            async with checked_out(pool) as conn, conn.transaction():
                await conn.execute("SELECT pg_sleep(5)", timeout=0.2)
        assert await pool.fetchval("SELECT pg_backend_pid()") != pid  # closed, replaced
    finally:
        await pool.close()
