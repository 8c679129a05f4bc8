"""`produce-demo` against Kafka: the seeded stream, exactly, and the rate cap."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter

from finpass_pipeline.dev.produce import produce_demo
from finpass_pipeline.events import EVENT_TYPES, parse_event, topic_suffix
from finpass_pipeline.kafka import domain_topics, ensure_topics
from finpass_pipeline.settings import Settings
from producers.demo_stream import demo_events
from tests.support.builders import T0
from tests.support.pipeline_support import read_topics


async def test_produce_demo_command_publishes_the_stream(base_env: dict[str, str],
                                                         bootstrap: str, topic_prefix: str
                                                         ) -> None:
    """`finpass-pipeline produce-demo --count 500` creates the topics and publishes exactly the
    seeded stream: per-topic counts and event ids match, and it reports its rate."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "finpass_pipeline.cli", "produce-demo", "--count", "500",
        "--users", "100", "--seed", "5", env=base_env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, err.decode()
    assert "events/s" in out.decode() and "payment.initiated" in out.decode()
    assert "500/500 events" in err.decode()  # plain progress lines: stderr is not a terminal

    expected = list(demo_events(500, 100, 5, T0))  # the same stream, shifted in time
    settings = Settings(kafka_bootstrap_servers=bootstrap, topic_prefix=topic_prefix)
    records = await read_topics(bootstrap, domain_topics(settings))
    assert Counter(r.topic for r in records) == Counter(
        settings.topic(topic_suffix(e.event_type)) for e in expected)
    assert sorted(parse_event(r.value).event_id for r in records) == sorted(
        e.event_id for e in expected)


async def test_produce_demo_respects_the_rate_cap(bootstrap: str, topic_prefix: str) -> None:
    """`rate` caps events per second; the counts returned cover every contract type."""
    settings = Settings(kafka_bootstrap_servers=bootstrap, topic_prefix=topic_prefix,
                        topic_partitions=3)
    await ensure_topics(settings)
    began = time.monotonic()
    counts = await produce_demo(settings, count=400, rate=1000, users=50, seed=1, progress=False)
    assert time.monotonic() - began >= 0.35
    assert list(counts) == list(EVENT_TYPES) and sum(counts.values()) == 400
