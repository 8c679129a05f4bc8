"""The consumer daemon against the real broker and database: CONTRACT §3 row by row."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from decimal import Decimal
from typing import Any

import asyncpg

from finpass_pipeline.settings import Settings
from tests.support.builders import T0, ev, initiated, issued, registered
from tests.support.pipeline_support import (
    count,
    fetch,
    running_daemon,
    send_events,
    send_raw,
    wait_caught_up,
)
from tests.support.privacy import plain_users


def pseudonym(did: str) -> str:
    return hmac.new(b"test-audit-key", did.encode(), hashlib.sha256).hexdigest()


async def one(s: Settings, sql: str, *args: object) -> dict[str, Any]:
    rows = await fetch(s.database_url, sql, *args)
    assert len(rows) == 1, f"expected one row for {sql!r}, got {len(rows)}"
    return dict(rows[0])


async def audit_for(s: Settings, event_id: uuid.UUID) -> dict[str, object]:
    return await one(s, "SELECT * FROM audit_events WHERE event_id = $1", event_id)


async def test_user_lifecycle_rows_and_audit(settings: Settings) -> None:
    """user.registered/kyc_verified/status_changed/seen and auth.* land as §3 says, audited."""
    did = "did:example:alice"
    events = [
        registered(did, email="alice@example.com", phone="+49 30 1234", metadata={"tier": "gold"},
                   at=0),
        ev("user.kyc_verified", did=did, verified_at="2026-11-01T12:05:00+02:00", at=10),
        ev("user.seen", did=did, at=100),
        ev("user.seen", did=did, at=50),  # older: last_seen must not move back
        ev("auth.login_succeeded", did=did, session_id="s-1", at=60,
           actor={"did": did, "ip_address": "203.0.113.7", "role": "USER"}),
        ev("auth.login_failed", did=did, reason="bad password", at=70,
           actor={"ip_address": "198.51.100.9", "session_id": "s-2"}),
        ev("user.status_changed", did=did, status="SUSPENDED", reason="fraud review", at=80),
    ]
    await send_events(settings, events)
    async with running_daemon(settings):
        await wait_caught_up(settings, len(events))
    user = await one(settings, "SELECT * FROM users WHERE did = $1", did)
    assert user["email"] is None and user["phone"] is None  # sealed (docs/privacy.md)
    conn = await asyncpg.connect(settings.database_url)
    try:
        assert (await plain_users(conn))[did] == ("alice@example.com", "+49 30 1234")
    finally:
        await conn.close()
    assert user["status"] == "SUSPENDED"
    assert user["kyc_verified"] is True
    assert user["kyc_verified_at"].isoformat() == "2026-11-01T10:05:00+00:00"
    assert user["last_seen"] == T0.replace(second=0) + (events[2].occurred_at - T0)
    assert user["created_at"] == T0
    assert '"tier":"gold"' in str(user["metadata"])

    audits = await fetch(settings.database_url,
                         "SELECT * FROM audit_events ORDER BY occurred_at, event_type")
    assert len(audits) == len(events)
    assert {a["event_type"] for a in audits} == {
        "USER_REGISTERED", "USER_KYC_VERIFIED", "USER_SEEN", "AUTH_LOGIN_SUCCEEDED",
        "AUTH_LOGIN_FAILED", "USER_STATUS_CHANGED"}
    for a, e in zip(audits, sorted(events, key=lambda x: (x.occurred_at,
                                                            x.event_type.upper())), strict=True):
        # id = event_id: `audit prove --event-id` finds the row by its primary key (V19).
        assert a["id"] == a["event_id"] == e.event_id
        assert a["correlation_id"] == e.correlation_id
        assert a["user_id_hash"] == pseudonym(did)
        assert a["source_system"] == "tests"
        assert a["hash_key_id"] == "k1"
    failed = await audit_for(settings, events[5].event_id)
    assert (failed["severity"], failed["outcome"]) == ("WARNING", "FAILURE")
    assert failed["ip_address"] == "198.51.100.9" and failed["session_id"] == "s-2"
    login = await audit_for(settings, events[4].event_id)
    assert login["performed_by"] == pseudonym(did) and login["performed_by_role"] == "USER"
    # No raw DID anywhere in the audit log.
    dump = await fetch(settings.database_url, "SELECT a::text AS t FROM audit_events a")
    assert not any("did:example" in r["t"] for r in dump)


async def test_credential_lifecycle(settings: Settings) -> None:
    """credential.issued inserts credentials + status; revoke, suspend, reinstate, expire."""
    did = "did:example:bob"
    c1, c2, c3 = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    events = [
        registered(did),
        issued(c1, did, at=1, expires_at="2027-11-01T00:00:00Z", nonce="n-1",
               revocation_handle="rh-1", proof_type="Ed25519Signature2020"),
        issued(c2, did, at=2),
        issued(c3, did, at=3),
        ev("credential.revoked", credential_id=c1, reason="key compromise",
           revoked_by="did:example:issuer", at=10),
        ev("credential.suspended", credential_id=c2, reason="investigation", at=11),
        ev("credential.reinstated", credential_id=c2, at=12),
        ev("credential.expired", credential_id=c3, at=13),
    ]
    await send_events(settings, events)
    async with running_daemon(settings):
        await wait_caught_up(settings, len(events))
    r1 = await one(settings, "SELECT * FROM credentials WHERE id = $1", c1)
    assert r1["status"] == "REVOKED" and r1["revocation_reason"] == "key compromise"
    assert r1["revoked_by"] == "did:example:issuer"
    assert r1["credential_hash"] == hashlib.sha256(f"jwt.{c1}.sig".encode()).hexdigest()
    assert r1["nonce"] == "n-1" and r1["revocation_handle"] == "rh-1"
    assert r1["revoked_at"] == events[4].occurred_at
    statuses = {r["credential_id"]: r["status"] for r in await fetch(
        settings.database_url, "SELECT credential_id, status FROM credential_status")}
    assert statuses == {c1: "REVOKED", c2: "VALID", c3: "EXPIRED"}
    owner = await one(settings, "SELECT u.did FROM credentials c JOIN users u "
                                "ON u.id = c.user_id WHERE c.id = $1", c2)
    assert owner["did"] == did
    revoked = await audit_for(settings, events[4].event_id)
    assert revoked["resource_type"] == "CREDENTIAL" and revoked["resource_id"] == str(c1)
    assert revoked["user_id_hash"] == pseudonym(did)


async def test_payment_lifecycles_and_disallowed_transitions(settings: Settings) -> None:
    """Forward-only payment state machine; a disallowed transition is audited REJECTED/WARNING."""
    p1, p2, p3 = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    events = [
        initiated(p1, amount="1250.00", fee_amount="2.50", tax_amount="0.01", at=0,
                  payment_type="RECURRING", reference_id="inv-1"),
        ev("payment.authorized", payment_id=p1, transaction_id="tx-1", at=1),
        ev("payment.captured", payment_id=p1, at=2),
        ev("payment.captured", payment_id=p1, at=3),  # second capture: rejected
        ev("payment.refunded", payment_id=p1, refund_reason="customer request", at=4),
        ev("payment.captured", payment_id=p1, at=5),  # capture after refund: rejected
        initiated(p2, at=0),
        ev("payment.failed", payment_id=p2, failure_reason="insufficient funds", at=1),
        initiated(p3, at=0),
        ev("payment.cancelled", payment_id=p3, reason="user abort", at=1),
    ]
    await send_events(settings, events)
    async with running_daemon(settings):
        await wait_caught_up(settings, len(events))
    r1 = await one(settings, "SELECT * FROM payments WHERE id = $1", p1)
    assert r1["status"] == "REFUNDED"
    assert r1["amount"] == Decimal("1250.00") and r1["total_amount"] == Decimal("1252.51")
    assert r1["transaction_id"] == "tx-1" and r1["payment_type"] == "RECURRING"
    assert r1["captured_at"] == events[2].occurred_at == r1["completed_at"]
    assert r1["refunded_at"] == events[4].occurred_at
    assert r1["refund_reason"] == "customer request"
    r2 = await one(settings, "SELECT status, failure_reason, failed_at FROM payments "
                             "WHERE id = $1", p2)
    assert (r2["status"], r2["failure_reason"]) == ("FAILED", "insufficient funds")
    r3 = await one(settings, "SELECT status FROM payments WHERE id = $1", p3)
    assert r3["status"] == "CANCELLED"
    for rejected in (events[3], events[5]):
        a = await audit_for(settings, rejected.event_id)
        assert (a["outcome"], a["severity"]) == ("REJECTED", "WARNING")
        assert a["event_type"] == "PAYMENT_CAPTURED"
    ok = await audit_for(settings, events[2].event_id)
    assert (ok["outcome"], ok["severity"]) == ("SUCCESS", "INFO")
    assert ok["user_id_hash"] == pseudonym("did:example:payer")


async def test_duplicates_apply_once(settings: Settings) -> None:
    """The same event_id delivered five times changes the database exactly once."""
    p = uuid.uuid4()
    init = initiated(p)
    auth = ev("payment.authorized", payment_id=p, at=1)
    await send_events(settings, [init, *[auth] * 5, init])
    async with running_daemon(settings):
        await wait_caught_up(settings, 7)
    assert (await one(settings, "SELECT status FROM payments WHERE id = $1", p))["status"] == (
        "AUTHORIZED")
    rows = await fetch(settings.database_url, "SELECT event_id FROM audit_events")
    assert sorted(r["event_id"] for r in rows) == sorted([init.event_id, auth.event_id])


async def test_late_subjects_are_parked_then_applied(settings: Settings) -> None:
    """A credential before its user, a capture before its payment: applied when they arrive."""
    did, c, p = "did:example:late", uuid.uuid4(), uuid.uuid4()
    early = [
        issued(c, did, at=5),
        ev("credential.suspended", credential_id=c, at=6),
        ev("user.seen", did=did, at=7),
        ev("payment.authorized", payment_id=p, at=2),
    ]
    await send_events(settings, early)
    async with running_daemon(settings):
        await wait_caught_up(settings, len(early))
        parked = await fetch(settings.database_url, "SELECT count(*) AS n FROM parked_events")
        assert parked[0]["n"] == 4
        await send_events(settings, [registered(did, at=0), initiated(p, at=1)])
        await wait_caught_up(settings, len(early) + 2)
    assert (await one(settings, "SELECT status FROM credentials WHERE id = $1", c))[
        "status"] == "SUSPENDED"
    assert (await one(settings, "SELECT last_seen FROM users WHERE did = $1", did))[
        "last_seen"] == early[2].occurred_at
    assert (await one(settings, "SELECT status FROM payments WHERE id = $1", p))[
        "status"] == "AUTHORIZED"
    assert (await fetch(settings.database_url, "SELECT count(*) AS n FROM parked_events"))[0][
        "n"] == 0
    assert len(await fetch(settings.database_url, "SELECT 1 FROM audit_events")) == 6


async def test_parked_event_whose_pseudonymised_text_outgrows_its_column(
        settings: Settings) -> None:
    """A credential event parked before its user, whose actor's session id (at its 255
    limit) names DIDs: once pseudonymised it no longer fits the column. When the user
    arrives both apply; nothing is dead-lettered, the column holds a marked prefix and
    details.full_text the whole text, and no raw DID is stored."""
    did, c = "did:example:longtext", uuid.uuid4()
    session = (" ".join([did] * 12))[:255]
    early = issued(c, did, at=5, actor={"did": did, "session_id": session})
    await send_events(settings, [early])
    async with running_daemon(settings):
        await wait_caught_up(settings, 1)
        await send_events(settings, [registered(did, at=0)])
        await wait_caught_up(settings, 2)
    dsn = settings.database_url
    assert await count(dsn, "SELECT count(*) FROM dead_letter_events") == 0
    assert await count(dsn, "SELECT count(*) FROM parked_events") == 0
    assert await count(dsn, "SELECT count(*) FROM credentials") == 1
    row = await one(settings, "SELECT session_id, details FROM audit_events WHERE event_id = $1",
                    early.event_id)
    assert len(row["session_id"]) == 255 and row["session_id"].endswith("…")
    whole = json.loads(row["details"])["full_text"]["session_id"]
    assert whole.startswith(row["session_id"][:-1]) and len(whole) > 255
    assert await count(dsn, "SELECT count(*) FROM audit_events "
                            "WHERE concat_ws(' ', session_id, details) LIKE '%did:example%'") == 0


async def test_poison_messages_dead_lettered_and_flow_continues(settings: Settings) -> None:
    """Invalid messages go to the dead-letter table/topic with a reason; valid ones still apply."""
    p = uuid.uuid4()
    await send_raw(settings, [
        ("payments", b"k", b"\xff\xfe not utf-8"),
        ("payments", b"k", b"{not json"),
        ("payments", b"k", b"[1, 2]"),
    ])
    await send_events(settings, [initiated(p)])
    async with running_daemon(settings):
        await wait_caught_up(settings, 4)
    dead = await fetch(settings.database_url,
                       "SELECT reason, raw_value, kafka_offset FROM dead_letter_events "
                       "ORDER BY kafka_offset")
    assert [d["raw_value"] for d in dead] == [b"\xff\xfe not utf-8", b"{not json", b"[1, 2]"]
    assert all(d["reason"] for d in dead)
    assert (await one(settings, "SELECT status FROM payments WHERE id = $1", p))[
        "status"] == "PENDING"
