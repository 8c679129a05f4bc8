"""Where an event goes and what it is about (CONTRACT.md §1 and §3): topic, key, audit names.

Re-exported by `finpass_pipeline.events`; import from there. What an event is *about* (its
subject, key and action) the event models answer themselves (`events.models.EventBase`).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from finpass_pipeline.events.models import EventBase

DOMAIN_TOPIC_SUFFIXES = ("users", "credentials", "payments", "security")
"""Topic names after the prefix (default `finpass.`), one per event domain."""

DEAD_LETTER_SUFFIX = "dead-letter"
"""Topic name after the prefix for events the pipeline could not apply."""

_SUFFIX_BY_DOMAIN = {
    "user": "users",
    "credential": "credentials",
    "payment": "payments",
    "auth": "security",
}


def topic_suffix(event_type: str) -> str:
    """The topic (without prefix) that carries `event_type`: `"payment.captured"` -> `"payments"`.

    Decided by the part before the dot, so a future `payment.*` type routes without a change here.
    Raises `ValueError` for a domain the contract does not know.
    """
    domain = event_type.partition(".")[0]
    try:
        return _SUFFIX_BY_DOMAIN[domain]
    except KeyError:
        raise ValueError(f"unknown event domain in event_type {event_type!r}") from None


def message_key(event: EventBase) -> bytes:
    """The Kafka key (UTF-8) that keeps one aggregate's events in order on one partition:
    user.* -> the user's DID; credential.* -> credential id; payment.* -> payment id;
    auth.* -> the DID, else the session id (actor's, then data's), else the event id.
    Each event model answers it (`EventBase.message_key`); this is the function form."""
    return event.message_key()


@functools.lru_cache(maxsize=256)
def audit_event_type(event_type: str) -> str:
    """`audit_events.event_type`: `"payment.captured"` -> `"PAYMENT_CAPTURED"` (asked once per
    audit row: cached, there are only a few types)."""
    return event_type.replace(".", "_").upper()
