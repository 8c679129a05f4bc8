"""The model of CONTRACT.md §3 that tests/integration/test_batching_invariance.py checks every
run against, on the fixed cases CONTRACT.md §5 names: it must be right for that comparison to
mean anything."""

from __future__ import annotations

import uuid
from datetime import timedelta

from tests.support.builders import T0, ev, initiated, issued, registered
from tests.support.streams import Stream, model_of


def test_model_of_the_fixed_cases() -> None:
    """The model itself, on the cases CONTRACT §5 names (no services needed)."""
    p, did = uuid.uuid4(), "did:example:m"
    auth = ev("payment.authorized", payment_id=p, at=1)
    stream = Stream(parts=[([auth, initiated(p, did, at=0),
                             ev("payment.captured", payment_id=p, at=2), auth], [])])
    m = model_of(stream)
    assert m.payments == {p: "CAPTURED"} and not m.parked and not m.rejected
    assert len(m.audited) == 3
    q = uuid.uuid4()
    cap = ev("payment.captured", payment_id=q, at=1)
    m = model_of(Stream(parts=[([initiated(q, at=0), cap], [])]))
    assert m.payments == {q: "PENDING"} and m.rejected == {cap.event_id}
    c = uuid.uuid4()
    seen = ev("user.seen", did=did, at=9)
    login = ev("auth.login_succeeded", did=did, at=5)
    m = model_of(Stream(parts=[([issued(c, did), seen, login, registered(did, at=0),
                                 ev("credential.expired", credential_id=c)], [])]))
    assert m.credentials == {c: "EXPIRED"} and not m.parked
    assert m.users[did].last_seen == T0 + timedelta(seconds=9)
    m = model_of(Stream(parts=[([issued(c, "did:example:nobody"),
                                 ev("credential.revoked", credential_id=c, reason="r")], [])]))
    assert len(m.parked) == 2 and not m.credentials
