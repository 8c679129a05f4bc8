"""`finpass-pipeline prune`: old claims and sent outbox rows go; parked claims, unsent rows and
everything inside the window stay."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import asyncpg

from finpass_pipeline.migrations import migrate
from finpass_pipeline.prune import CLAIMS, OUTBOX, PruneResult, prune
from producers.outbox import install
from tests.support.pipeline_support import cli


async def _claims(conn: asyncpg.Connection, now: datetime) -> None:
    """3,000 applied claims one every 29 minutes back to 60 days ago, 40 old parked ones."""
    rows = [(uuid.uuid4(), "APPLIED", now - timedelta(minutes=29 * i)) for i in range(3_000)]
    rows += [(uuid.uuid4(), "PARKED", now - timedelta(days=50, minutes=i)) for i in range(40)]
    await conn.executemany(
        "INSERT INTO processed_events (event_id, event_type, topic, kafka_partition, "
        "kafka_offset, state, processed_at) VALUES ($1, 'user.seen', 't', 0, 0, $2, $3)", rows)


async def test_prune_claims_keeps_parked_and_recent(fresh_db: str) -> None:
    await migrate(fresh_db)
    conn = await asyncpg.connect(fresh_db)
    try:
        now = await conn.fetchval("SELECT now()")
        await _claims(conn, now)
        old = "state = 'APPLIED' AND processed_at < now() - interval '30 days'"
        expected = await conn.fetchval(f"SELECT count(*) FROM processed_events WHERE {old}")
        assert 1_400 < expected < 1_600

        dry = await prune(conn, CLAIMS, timedelta(days=30), dry_run=True)
        assert dry.deleted == expected
        assert await conn.fetchval("SELECT count(*) FROM processed_events") == 3_040

        seen: list[datetime] = []

        def progress(r: PruneResult) -> None:
            assert r.reached is not None
            seen.append(r.reached)

        done = await prune(conn, CLAIMS, timedelta(days=30), batch_size=100, progress=progress)
        assert done.deleted == expected
        assert seen == sorted(seen) and len(seen) == done.slices > 5
        assert await conn.fetchval(f"SELECT count(*) FROM processed_events WHERE {old}") == 0
        assert await conn.fetchval(
            "SELECT count(*) FROM processed_events WHERE state = 'PARKED'") == 40
        assert await conn.fetchval("SELECT count(*) FROM processed_events") == 3_040 - expected
        again = await prune(conn, CLAIMS, timedelta(days=30))
        assert again.deleted == 0
    finally:
        await conn.close()


async def test_prune_outbox_deletes_only_sent_rows(fresh_db: str) -> None:
    conn = await asyncpg.connect(fresh_db)
    try:
        async with conn.transaction():
            await install(conn)
        now = await conn.fetchval("SELECT now()")
        rows = [(uuid.uuid4(), now - timedelta(days=d), now - timedelta(days=d) if sent else None)
                for d, sent in [(40, True), (35, True), (40, False), (5, True), (1, False)]]
        await conn.executemany(
            "INSERT INTO event_outbox (event_id, topic, payload, created_at, sent_at) "
            "VALUES ($1, 'users', '\\x00', $2, $3)", rows)
        done = await prune(conn, OUTBOX, timedelta(days=30))
        assert done.deleted == 2
        left = {r["event_id"] for r in await conn.fetch("SELECT event_id FROM event_outbox")}
        assert left == {rows[2][0], rows[3][0], rows[4][0]}
    finally:
        await conn.close()


async def test_prune_command(fresh_db: str) -> None:
    await migrate(fresh_db)
    conn = await asyncpg.connect(fresh_db)
    try:
        await _claims(conn, await conn.fetchval("SELECT now()"))
    finally:
        await conn.close()
    env = {"FINPASS_DATABASE_URL": fresh_db}
    dry = cli("prune", "--older-than", "45d", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "processed_events: would delete 765 row(s) older than" in dry.stdout
    assert "claims of parked events are always kept" in dry.stdout
    # The pipeline's own role may prune its claims.
    done = cli("prune", "--older-than", "45d",
               env={**env, "FINPASS_DATABASE_ROLE": "finpass_writer"})
    assert done.returncode == 0, done.stderr
    assert "processed_events: deleted 765 row(s)" in done.stdout
    bad = cli("prune", "--older-than", "0d", env=env)
    assert bad.returncode == 2
    assert "'0d' must be longer than zero" in bad.stderr
    missing = cli("prune", "--outbox", env=env)
    assert missing.returncode == 1
    assert "table event_outbox not found" in missing.stderr
