"""Where an event goes and what it is about (CONTRACT.md §1 and §3): topic, key, audit names.

Re-exported by `finpass_pipeline.events`; import from there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from finpass_pipeline.events import EventBase

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


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def message_key(event: EventBase) -> bytes:
    """The Kafka key (UTF-8) that keeps one aggregate's events in order on one partition.

    user.* -> the user's DID; credential.* -> credential id; payment.* -> payment id;
    auth.* -> the DID, else the session id (actor's, then data's), else the event id.
    """
    domain = event.event_type.partition(".")[0]
    data = event.data
    key: str | None
    if domain == "credential":
        key = str(data.credential_id) if hasattr(data, "credential_id") else None
    elif domain == "payment":
        key = str(data.payment_id) if hasattr(data, "payment_id") else None
    elif domain == "auth":
        key = (
            _text(getattr(data, "did", None))
            or _text(event.actor.session_id if event.actor else None)
            or _text(getattr(data, "session_id", None))
        )
    else:
        key = _text(getattr(data, "did", None))
    # No aggregate to order by: any partition will do, and the event id spreads them evenly.
    return (key or str(event.event_id)).encode()


def subject_did(event: EventBase) -> str | None:
    """The DID the event's audit row is about (`user_id_hash`), when the event itself names it.

    user.* and auth.* -> `data.did`; credential.issued -> `data.user_did`; payment.initiated ->
    `data.payer_did`. Other credential.* and payment.* events return None: the consumer looks the
    owner up from the stored credential or payment.
    """
    domain = event.event_type.partition(".")[0]
    if domain in ("user", "auth"):
        return _text(getattr(event.data, "did", None))
    if event.event_type == "credential.issued":
        return _text(getattr(event.data, "user_did", None))
    if event.event_type == "payment.initiated":
        return _text(getattr(event.data, "payer_did", None))
    return None


def audit_event_type(event_type: str) -> str:
    """`audit_events.event_type`: `"payment.captured"` -> `"PAYMENT_CAPTURED"`."""
    return event_type.replace(".", "_").upper()
