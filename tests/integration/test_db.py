"""`checked_out` against a real PostgreSQL: it discards a connection unless the data was
refused."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from finpass_pipeline.db import checked_out


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
