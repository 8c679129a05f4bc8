"""The demo stream: reproducible, complete, causally ordered. (`produce-demo` against Kafka:
tests/integration/test_demo_stream.py.)"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest

from finpass_pipeline.events import (
    EVENT_TYPES,
    EventBase,
    message_key,
    parse_event,
    serialize_event,
)
from producers.demo_stream import demo_events
from tests.support.builders import T0

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
        for value in (data["amount"]["value"], data["fee_amount"], data["tax_amount"]):
            assert TWO_DECIMALS.match(value), value
        assert re.fullmatch(r"[A-Z]{3}", data["amount"]["currency"])


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
