"""Connections the server dropped: a PostgreSQL restart terminates every pooled connection; the
next batch must fail only with errors the daemon retries, on a connection that is then
discarded."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from finpass_pipeline.db import checked_out, is_transient


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
