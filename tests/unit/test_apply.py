"""Pure logic of the consumer, without services: the state machines, parking, pseudonyms."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.apply import (
    CREDENTIAL_TRANSITIONS,
    PAYMENT_TRANSITIONS,
    Applier,
    BatchState,
)
from consumers.records import Incoming
from finpass_pipeline.audit.pseudonym import Pseudonymizer
from finpass_pipeline.events import EventBase, upcast
from tests.support.builders import ev, initiated, issued, registered

PZ = Pseudonymizer(b"unit-key", "k9")

PAYMENT_STEPS: dict[str, dict[str, Any]] = {
    "payment.authorized": {},
    "payment.captured": {},
    "payment.failed": {"failure_reason": "declined"},
    "payment.refunded": {"refund_reason": "asked"},
    "payment.cancelled": {},
}
CREDENTIAL_STEPS: dict[str, dict[str, Any]] = {
    "credential.revoked": {"reason": "compromised"},
    "credential.suspended": {},
    "credential.reinstated": {},
    "credential.expired": {},
}


def run(events: list[EventBase]) -> BatchState:
    state = BatchState()
    applier = Applier(PZ)
    for offset, e in enumerate(events):
        applier.apply(state, Incoming(upcast(e), "t.x", 0, offset, b""))
    return state


def outcome_of(state: BatchState, event: EventBase) -> str:
    return next(a.outcome for a in state.audit if a.event_id == event.event_id)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(sorted(PAYMENT_STEPS)), max_size=8))
def test_payment_state_machine_moves_only_forward(steps: list[str]) -> None:
    """Any sequence of payment events: allowed transitions apply, others are REJECTED and
    change nothing; exactly one audit row per event."""
    pid = uuid.uuid4()
    events: list[EventBase] = [initiated(pid)]
    events += [ev(t, payment_id=pid, at=i + 1, **PAYMENT_STEPS[t]) for i, t in enumerate(steps)]
    state = run(events)
    assert len(state.audit) == len(events)
    status = "PENDING"
    for e in events[1:]:
        allowed, target = PAYMENT_TRANSITIONS[e.event_type]
        expected = "SUCCESS" if status in allowed else "REJECTED"
        assert outcome_of(state, e) == expected
        if expected == "SUCCESS":
            status = target
    row = state.payments[str(pid)]
    assert row is not None and row.status == status


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(sorted(CREDENTIAL_STEPS)), max_size=8))
def test_credential_state_machine(steps: list[str]) -> None:
    """Credential transitions follow CREDENTIAL_TRANSITIONS; REVOKED is final."""
    cid, did = uuid.uuid4(), "did:example:unit"
    events: list[EventBase] = [registered(did), issued(cid, did, at=1)]
    events += [ev(t, credential_id=cid, at=i + 2, **CREDENTIAL_STEPS[t])
               for i, t in enumerate(steps)]
    state = run(events)
    status = "VALID"
    for e in events[2:]:
        allowed, target = CREDENTIAL_TRANSITIONS[e.event_type]
        ok = status in allowed
        assert outcome_of(state, e) == ("SUCCESS" if ok else "REJECTED")
        status = target if ok else status
    row = state.credentials[str(cid)]
    assert row is not None and row.status == status


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=10))
def test_last_seen_never_moves_backwards(seconds: list[int]) -> None:
    """user.seen in any order leaves last_seen at the latest time seen."""
    did = "did:example:seen"
    events = [registered(did)] + [ev("user.seen", did=did, at=s) for s in seconds]
    user = run(events).users[did]
    assert user is not None and user.last_seen == max(e.occurred_at for e in events[1:])


def test_events_before_their_subject_are_parked() -> None:
    """A credential before its user, a capture before its payment: parked, no audit row."""
    state = run([issued(uuid.uuid4(), "did:example:nobody"),
                 ev("payment.captured", payment_id=uuid.uuid4())])
    assert [s.kind for _, s in state.to_park] == ["user", "payment"]
    assert state.audit == []


def test_pseudonym_is_hmac_sha256_hex_and_scrub_removes_dids() -> None:
    """user_id_hash is HMAC-SHA-256(key, DID) as 64 hex chars; scrub replaces nested DIDs."""
    did = "did:example:alice"
    expected = hmac.new(b"unit-key", did.encode(), hashlib.sha256).hexdigest()
    assert PZ.hash(did) == expected and len(expected) == 64
    scrubbed: Any = PZ.scrub({"a": did, "b": [did, "x"], "c": {"d": did}, "n": 1})
    assert scrubbed == {"a": f"hmac:{expected}", "b": [f"hmac:{expected}", "x"],
                        "c": {"d": f"hmac:{expected}"}, "n": 1}


def test_audit_rows_never_hold_a_raw_did() -> None:
    """Subject, actor, payee and unknown data fields holding DIDs are all pseudonymised."""
    did, pid = "did:example:carol", uuid.uuid4()
    events = [
        registered(did, note="friend of did:example:dave"),
        initiated(pid, payer=did, payee_did="did:example:shop", referrer="did:example:eve"),
        ev("user.seen", did=did, at=5, actor={"did": "did:example:admin", "role": "ADMIN"}),
    ]
    state = run(events)
    assert len(state.audit) == 3
    for row in state.audit:
        assert "did:example" not in repr(row.record())
        assert row.user_id_hash == PZ.hash(did) and row.hash_key_id == "k9"


def test_text_lengthened_by_pseudonyms_is_fitted_to_its_column_and_kept_whole() -> None:
    """A session id at its 255-character limit naming DIDs grows when they become `hmac:<64
    hex>`: the column gets a marked 255-character prefix, details.full_text the whole."""
    did = "did:example:x"
    session = (" ".join([did] * 18))[:255]
    assert len(session) <= 255 and session.count(did) >= 17
    state = run([registered(did, session_id=session)])
    (row,) = state.audit
    whole = PZ.scrub_text(session)
    assert len(whole) > 255 and "did:" not in whole
    assert row.session_id is not None and len(row.session_id) == 255
    assert row.session_id == whole[:254] + "…"
    assert json.loads(row.details or "{}")["full_text"] == {"session_id": whole}
    assert "did:example" not in repr(row.record())


def test_text_that_fits_is_not_marked() -> None:
    did = "did:example:y"
    state = run([registered(did, session_id=f"s-{did}")])
    (row,) = state.audit
    assert row.session_id == f"s-hmac:{PZ.hash(did)}"
    assert row.details is None or "full_text" not in row.details


def test_a_session_id_sent_in_data_is_used_only_when_it_is_text() -> None:
    """An unknown `data.session_id` names the audit row's session when it is text; any other
    JSON value (here a number) is ignored for it and kept in `details.extra`, and the event
    still applies (it used to fail in the text scrubber and be dead-lettered)."""
    did = "did:example:s1"
    actor = {"session_id": "s-actor"}
    state = run([registered(did), ev("user.seen", at=1, did=did, session_id="s-data"),
                 ev("user.seen", at=2, did=did, session_id=5, actor=actor)])
    assert [a.outcome for a in state.audit] == ["SUCCESS", "SUCCESS", "SUCCESS"]
    assert [a.session_id for a in state.audit[1:]] == ["s-data", "s-actor"]
    assert json.loads(state.audit[2].details or "{}")["extra"] == {"session_id": 5}


def test_domain_rows_carry_the_audit_rows_pseudonyms_from_one_hmac() -> None:
    """users/credentials/payments get the same pseudonym as the audit row's user_id_hash (V15),
    and each DID's HMAC is computed once for both (issue #12 counts µs per event)."""
    calls: list[str] = []
    pz = Pseudonymizer(b"unit-key", "k9")
    real = pz._hash

    def counted(did: str) -> str:
        calls.append(did)
        return real(did)
    pz.hash = counted  # type: ignore[assignment]  # count every pseudonym asked for
    cid, pid = uuid.uuid4(), uuid.uuid4()
    events: list[EventBase] = [registered("did:example:a"), registered("did:example:b"),
                               issued(cid, "did:example:a", subject_did="did:example:a"),
                               initiated(pid, payer="did:example:a", payee_did="did:example:b")]
    state = BatchState()
    applier = Applier(pz)
    for offset, e in enumerate(events):
        applier.apply(state, Incoming(upcast(e), "t.x", 0, offset, b""))
    a, b = (hmac.new(b"unit-key", d.encode(), hashlib.sha256).hexdigest()
            for d in ("did:example:a", "did:example:b"))
    user_a, user_b = state.users["did:example:a"], state.users["did:example:b"]
    assert user_a is not None and user_b is not None
    assert (user_a.user_id_hash, user_b.user_id_hash) == (a, b)
    cred, pay = state.credentials[str(cid)], state.payments[str(pid)]
    assert cred is not None and (cred.user_id_hash, cred.subject_id_hash) == (a, a)
    assert pay is not None and (pay.payer_id_hash, pay.payee_id_hash) == (a, b)
    assert [r.user_id_hash for r in state.audit] == [a, b, a, a]
    assert json.loads(state.audit[3].details or "{}")["payee"] == b
    # a: registered, issued (holder; the subject is the holder: reused), initiated (payer);
    # b: registered, initiated (payee). The audit rows reuse them (actors are pseudonymised too).
    assert (calls.count("did:example:a"), calls.count("did:example:b")) == (3, 2)
