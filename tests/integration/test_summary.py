"""`summary`'s consumer rate is over the seconds with commits, not the span from the first to the
last (issue "Running it": it reported 115 events/s by averaging over idle time)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from finpass_pipeline.dev.demo import summarize
from finpass_pipeline.settings import Settings


async def test_rate_counts_only_seconds_with_commits(settings: Settings) -> None:
    t0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
    # 6 events in the second t0, 4 an hour later: two active seconds, an idle hour between.
    times = [t0, t0, t0 + timedelta(milliseconds=500), t0, t0, t0,
             *[t0 + timedelta(hours=1, milliseconds=100 * i) for i in range(4)]]
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.executemany(
            "INSERT INTO processed_events (event_id, event_type, topic, kafka_partition, "
            "kafka_offset, state, processed_at) VALUES ($1, 'user.seen', 't', 0, $2, "
            "'APPLIED', $3)", [(uuid.uuid4(), i, at) for i, at in enumerate(times)])
    finally:
        await conn.close()
    summary = await summarize(settings)
    assert (summary.consumed, summary.seconds, summary.events_per_second) == (10, 2.0, 5.0)
    later = await summarize(settings, since=t0 + timedelta(minutes=30))
    assert (later.consumed, later.seconds, later.events_per_second) == (4, 1.0, 4.0)
