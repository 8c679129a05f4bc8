"""`Planner.decode` cannot raise, and names key faults (CONTRACT.md §5); no services needed."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.planner import REASON_MAX_CHARS, Planner, claimed_type, clean_reason
from finpass_pipeline.events import message_key, serialize_event, upcast
from tests.support.builders import FACTORIES


class _Rec:
    """The fields of aiokafka's ConsumerRecord that decode reads."""

    def __init__(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        self.topic, self.partition, self.offset, self.timestamp = topic, 0, 7, 0
        self.key, self.value = key, value


def decode(topic: str, key: bytes | None, value: bytes | None) -> Any:
    return Planner("finpass.").decode(_Rec(topic, key, value))


@given(st.sampled_from(["finpass.users", "finpass.payments", "elsewhere"]),
       st.none() | st.binary(max_size=40), st.none() | st.binary(max_size=400))
@settings(max_examples=500, deadline=None)
def test_decode_never_raises_on_any_bytes(topic: str, key: bytes | None,
                                          value: bytes | None) -> None:
    """Whatever the bytes, the result is a record with an event or a storable reason."""
    record = decode(topic, key, value)
    assert (record.event is None) != (record.reason is None) or record.reason is not None
    if record.reason is not None:
        assert "\x00" not in record.reason and "\n" not in record.reason
        assert 0 < len(record.reason) <= REASON_MAX_CHARS


def test_valid_events_with_their_key_pass() -> None:
    for event_type, factory in FACTORIES.items():
        event = factory()
        topic = "finpass." + {"user": "users", "credential": "credentials", "payment": "payments",
                              "auth": "security"}[event_type.partition(".")[0]]
        record = decode(topic, message_key(event), serialize_event(event))
        assert record.reason is None and record.event == upcast(event), event_type


def test_missing_and_wrong_keys_are_dead_letters_naming_both() -> None:
    event = FACTORIES["payment.captured"]()
    raw = serialize_event(event)
    expected = message_key(event).decode()
    missing = decode("finpass.payments", None, raw)
    assert missing.reason == f"message key missing: expected {expected!r}"
    # A non-canonical spelling of the same UUID is a different key: it may hash elsewhere.
    wrong = decode("finpass.payments", expected.upper().encode(), raw)
    assert wrong.reason == (f"message key {expected.upper()!r} differs from the subject's id "
                            f"{expected!r}")
    assert wrong.event == event  # kept for the dead letter's event_id and type


def test_clean_reason_is_one_bounded_line() -> None:
    assert clean_reason("a\x00b\nc") == "a\\u0000b c"
    long = clean_reason("x" * 5000)
    assert len(long) == REASON_MAX_CHARS and long.endswith("…")


def test_an_invalid_message_keeps_the_type_it_names() -> None:
    """So `dead-letters list --event-type payment.initiated` finds it: a known type named by an
    invalid message is kept with the letter; an unknown one, or none, is not."""
    raw = serialize_event(FACTORIES["payment.initiated"]()).replace(
        b'"schema_version":1', b'"schema_version":7')
    record = decode("finpass.payments", b"k", raw)
    assert record.event is None and record.reason.startswith("schema_version:")
    plan = Planner("finpass.").plan([record], limit=100)
    assert [d.event_type for d in plan.dead] == ["payment.initiated"]
    assert claimed_type(raw) == "payment.initiated"
    for value in (b'{"event_type": "payment.teleported"}', b'{"event_type": 5}', b"[1]",
                  b"not json", b"", None, b'{"event_type": "payment.initiated"' + b"}" * 3):
        assert claimed_type(value) is None, value
