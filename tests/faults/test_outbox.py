"""The outbox relay killed with SIGKILL mid-stream and restarted: nothing lost, key order kept.
(The outbox and relay otherwise: tests/integration/test_outbox.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import uuid
from pathlib import Path

import asyncpg

from finpass_pipeline.settings import Settings
from producers import outbox
from producers.publisher import correlation
from tests.support.pipeline_support import all_sent, published_ids, seen, sent_count, wait_for


async def relay_process(env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    """`finpass-pipeline outbox-relay` as a real process (small batches: many commits to kill)."""
    with log.open("ab") as out:  # the child holds its own descriptor
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "finpass_pipeline.cli", "outbox-relay", "--batch-size", "100",
            env=env, stdout=out, stderr=asyncio.subprocess.STDOUT,
        )


async def test_relay_killed_mid_stream_loses_nothing_and_keeps_key_order(
        outbox_settings: Settings, outbox_conn: asyncpg.Connection, base_env: dict[str, str],
        tmp_path: Path) -> None:
    """SIGKILL the relay subprocess mid-stream and restart it: every event published at least
    once, each key's events first seen in enqueue order, every row marked sent."""
    dids = [f"did:example:user-{k:03d}" for k in range(250)]
    with correlation("req-outbox-kill"):
        events = [seen(dids[i % len(dids)], i) for i in range(5000)]
    for start in range(0, len(events), 500):
        async with outbox_conn.transaction():
            await outbox.enqueue_many(outbox_conn, events[start:start + 500])
    env = base_env | {"FINPASS_OUTBOX_DATABASE_URL": outbox_settings.database_url,
                      "FINPASS_LOG_FORMAT": "json"}
    log = tmp_path / "relay.log"

    first = await relay_process(env, log)
    blocker = await asyncpg.connect(outbox_settings.database_url)
    try:
        await wait_for(lambda: _sent_at_least(outbox_conn, 1000), what="the relay to get going",
                       interval=0.02)
        # Hold the relay at the worst instant: SHARE mode lets it lock and publish a batch but
        # not mark it sent, so the kill lands after Kafka's acks and before the commit.
        async with blocker.transaction():
            await blocker.execute("LOCK TABLE event_outbox IN SHARE MODE")
            await wait_for(lambda: _relay_blocked(outbox_conn),
                           what="the relay to wait on its mark", interval=0.02)
            with contextlib.suppress(ProcessLookupError):  # it may have died: see the log
                first.send_signal(signal.SIGKILL)
            await first.wait()
    finally:
        with contextlib.suppress(ProcessLookupError):
            first.send_signal(signal.SIGKILL)
        await first.wait()
        await blocker.close()
    sent_when_killed = await sent_count(outbox_conn)
    assert 1000 <= sent_when_killed < len(events), "the kill must land mid-stream"

    second = await relay_process(env, log)
    try:
        await wait_for(lambda: all_sent(outbox_conn), what="the restarted relay to finish",
                       interval=0.02)
    finally:
        with contextlib.suppress(ProcessLookupError):
            second.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(second.wait(), timeout=30)
    assert code == 0, log.read_text()

    ids = await published_ids(outbox_settings)
    assert set(ids) == {e.event_id for e in events}
    seqs = {e.event_id: i for i, e in enumerate(events)}
    first_seen: dict[str, list[int]] = {}
    already: set[uuid.UUID] = set()
    for event_id in ids:  # per partition in offset order; a key lives on one partition
        if event_id not in already:
            already.add(event_id)
            first_seen.setdefault(dids[seqs[event_id] % len(dids)], []).append(seqs[event_id])
    assert all(s == sorted(s) for s in first_seen.values())
    assert await all_sent(outbox_conn)
    assert len(ids) > len(events), "the batch acknowledged before the kill is published again"


async def _relay_blocked(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval(
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'event_outbox'::regclass"))


async def _sent_at_least(conn: asyncpg.Connection, n: int) -> bool:
    return await sent_count(conn) >= n
