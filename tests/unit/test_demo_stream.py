"""The demo stream: reproducible, complete, causally ordered; and `produce-demo` against Kafka."""

from __future__ import annotations

import asyncio
import itertools
import re
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from finpass_pipeline.dev.produce import produce_demo
from finpass_pipeline.events import (
    EVENT_TYPES,
    EventBase,
    message_key,
    parse_event,
    serialize_event,
    topic_suffix,
)
from finpass_pipeline.kafka import domain_topics, ensure_topics
from finpass_pipeline.settings import Settings
from producers.demo_stream import demo_events
from tests.unit.test_publisher import read_topics

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
TWO_DECIMALS = re.compile(r"^[0-9]+\.[0-9]{2}$")

# A payment's events, in order, are a prefix of one of these lifecycles.
LIFECYCLES = (
    ("initiated", "authorized", "captured", "refunded"),
    ("initiated", "authorized", "failed"),
    ("initiated", "authorized", "cancelled"),
    ("initiated", "failed"),
    ("initiated", "cancelled"),
)


@pytest.fixture(scope="module")
def stream() -> list[EventBase]:
    return list(demo_events(5000, 1000, 42, T0))


def test_same_seed_same_stream() -> None:
    """Same arguments give the same bytes (ids too); a shorter count is a prefix; seed matters."""
    first = [serialize_event(e) for e in demo_events(2000, 200, 7, T0)]
    assert first == [serialize_event(e) for e in demo_events(2000, 200, 7, T0)]
    assert first[:500] == [serialize_event(e) for e in demo_events(500, 200, 7, T0)]
    assert first != [serialize_event(e) for e in demo_events(2000, 200, 8, T0)]
    shifted = list(demo_events(2000, 200, 7, T0 + timedelta(days=1)))
    assert [e.event_id for e in shifted] == [parse_event(raw).event_id for raw in first]


def test_every_event_type_appears(stream: list[EventBase]) -> None:
    """5,000 events contain every event type of the contract, in a plausible mix."""
    counts = Counter(e.event_type for e in stream)
    assert set(counts) == set(EVENT_TYPES), set(EVENT_TYPES) - set(counts)
    assert len(stream) == 5000
    assert counts["payment.initiated"] > counts["payment.refunded"]
    assert counts["user.kyc_verified"] < counts["user.registered"]


def test_events_are_valid_on_the_wire(stream: list[EventBase]) -> None:
    """Every event survives serialise/parse unchanged and has a unique id."""
    assert all(parse_event(serialize_event(e)) == e for e in stream)
    assert len({e.event_id for e in stream}) == len(stream)


def test_money_has_exactly_two_decimals(stream: list[EventBase]) -> None:
    """Every amount, fee and tax is a 2-decimal string on the wire, in a 3-letter currency."""
    initiated = [e for e in stream if e.event_type == "payment.initiated"]
    assert initiated
    for event in initiated:
        data: dict[str, Any] = parse_event(serialize_event(event)).model_dump(mode="json")["data"]
        for field in ("amount", "fee_amount", "tax_amount"):
            assert TWO_DECIMALS.match(data[field]), (field, data[field])
        assert re.fullmatch(r"[A-Z]{3}", data["currency"])


def test_causal_order(stream: list[EventBase]) -> None:
    """Registration precedes a user's other events, credentials and payments; a credential's
    events follow its issue; a payment's follow its lifecycle with increasing occurred_at; and
    occurred_at never decreases per message key."""
    registered: set[str] = set()
    issued: set[str] = set()
    payments: dict[str, list[EventBase]] = {}
    last_at: dict[bytes, datetime] = {}
    for event in stream:
        data: Any = event.data
        kind = event.event_type
        key = message_key(event)
        assert event.occurred_at >= last_at.get(key, event.occurred_at), event
        last_at[key] = event.occurred_at
        if kind == "user.registered":
            assert data.did not in registered
            registered.add(data.did)
        elif kind.startswith(("user.", "auth.")):
            assert data.did is None or data.did in registered, event  # None: unknown username
        elif kind == "credential.issued":
            assert data.user_did in registered, event
            issued.add(str(data.credential_id))
        elif kind.startswith("credential."):
            assert str(data.credential_id) in issued, event
        elif kind == "payment.initiated":
            assert data.payer_did in registered, event
            payments[str(data.payment_id)] = [event]
        else:
            assert str(data.payment_id) in payments, event
            payments[str(data.payment_id)].append(event)
    for events in payments.values():
        steps = tuple(e.event_type.removeprefix("payment.") for e in events)
        assert any(life[:len(steps)] == steps for life in LIFECYCLES), steps
        times = [e.occurred_at for e in events]
        assert times == sorted(times) and len(set(times)) == len(times), steps
        assert all(later.causation_id == earlier.event_id
                   for earlier, later in itertools.pairwise(events))


@pytest.mark.integration
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


@pytest.mark.integration
async def test_produce_demo_respects_the_rate_cap(bootstrap: str, topic_prefix: str) -> None:
    """`rate` caps events per second; the counts returned cover every contract type."""
    settings = Settings(kafka_bootstrap_servers=bootstrap, topic_prefix=topic_prefix,
                        topic_partitions=3)
    await ensure_topics(settings)
    began = time.monotonic()
    counts = await produce_demo(settings, count=400, rate=1000, users=50, seed=1, progress=False)
    assert time.monotonic() - began >= 0.35
    assert list(counts) == list(EVENT_TYPES) and sum(counts.values()) == 400
