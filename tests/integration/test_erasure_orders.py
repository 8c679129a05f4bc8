"""An erased DID stays erased whatever the arrival order (CONTRACT.md §5 v1.1): the same events,
interleaved across topics in different orders and cut into different batches, end in the same
tables — events for the person applied after the erasure (late ones from other topics, or
everything in a replay) are applied without their personal data."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import pytest

from consumers.apply import Applier
from consumers.records import DeadLetter, Incoming, PartitionProgress
from consumers.store import Store, lock_key
from finpass_pipeline.audit.pseudonym import Pseudonymizer
from finpass_pipeline.db import create_pool
from finpass_pipeline.events import EventBase, parse_event, serialize_event
from finpass_pipeline.events.models import Subject
from finpass_pipeline.migrations import migrate
from finpass_pipeline.privacy.erasure import erased_form
from tests.support.builders import ev, initiated, issued, registered
from tests.support.pipeline_support import scratch_database
from tests.support.privacy import plain_users, snapshot, vault_for_tests

A, B = "did:example:erin-erased", "did:example:bo-kept"
A_EMAIL, A_PHONE, A_IP = "erin@example.org", "+44 20 7946 0001", "203.0.113.77"
A_UA, A_DEVICE = "ErinBrowser/1.0 (erin-laptop)", "fp-erin-0001"
ACTOR_A = {"did": A, "role": "USER", "ip_address": A_IP, "user_agent": A_UA,
           "device_fingerprint": A_DEVICE, "geolocation": "GB", "session_id": "s-erin"}
C_A, C_B, C_GHOST = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
P1, P2, P3 = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
USERS, CREDS, PAYS, SEC = "t.users", "t.credentials", "t.payments", "t.security"


def streams() -> dict[str, list[EventBase | tuple[bytes, bytes]]]:
    """Per topic (one partition each), in offset order; a (key, value) pair is a message that is
    dead-lettered (here: the right event under a wrong key)."""
    wrong_key = ev("auth.login_succeeded", did=A, session_id="s-bad", at=40, actor=ACTOR_A)
    return {
        USERS: [
            registered(A, email=A_EMAIL, phone=A_PHONE, metadata={"nickname": "erin"}, at=0,
                       actor=ACTOR_A),
            registered(B, email="bo@example.net", phone="+1 555 0100", at=1),
            ev("user.seen", did=A, at=20),
            ev("user.erasure_requested", did=A, reason="GDPR Art. 17", at=50, actor=ACTOR_A),
            ev("user.status_changed", did=A, status="TERMINATED", reason="erased", at=51),
            ev("user.seen", did=A, at=60, note=f"seen {A}"),
        ],
        CREDS: [
            issued(C_A, A, at=5, subject_did=A, verification_method=f"{A}#key-1",
                   credential_jwt="eyJhbGciOi.erin-secret-jwt.sig", actor=ACTOR_A),
            issued(C_B, B, at=6, subject_did=B, credential_jwt="eyJhbGciOi.bo-jwt.sig"),
            ev("credential.revoked", credential_id=C_A, reason="holder request", revoked_by=A,
               at=55, actor=ACTOR_A),
            ev("credential.suspended", credential_id=C_GHOST, reason=f"asked by {A}", at=56,
               actor=ACTOR_A),  # never issued: stays parked, payload redacted
        ],
        PAYS: [
            initiated(P1, A, payee_did=B, amount="120.00", fee_amount="1.20", at=10,
                      description="rent for Erin's flat", kyc_decision_token="kyc-erin",
                      invoice_note="Erin, flat 3", actor=ACTOR_A),
            ev("payment.authorized", payment_id=P1, transaction_id="tx-1", at=11),
            ev("payment.captured", payment_id=P1, at=12),
            initiated(P2, B, payee_did=A, amount="50.00", at=13),
            ev("payment.captured", payment_id=P2, at=14),  # AUTHORIZED needed: REJECTED
            initiated(P3, A, payee_did=B, amount="7.50", at=57, description="late one"),
            ev("payment.authorized", payment_id=P3, at=58, extra_note="by Erin"),
        ],
        SEC: [
            ev("auth.login_succeeded", did=A, session_id="s-erin", at=15, actor=ACTOR_A),
            ev("auth.login_failed", did=A, reason="bad password", at=16, actor=ACTOR_A),
            (b"s-bad", serialize_event(wrong_key)),  # keyed by the session: wrong
            ev("auth.login_succeeded", did=A, session_id="s-late", at=59, actor=ACTOR_A),
            ev("auth.login_succeeded", did=B, session_id="s-bo", at=61),
        ],
    }


STREAMS = streams()
"""Built once: every order below sends the very same events (same ids)."""
Item = tuple[str, int, EventBase | tuple[bytes, bytes]]


def interleave(order: str, seed: int) -> list[Item]:
    """Every topic's messages in offset order, merged across topics as `order` says."""
    per = {t: [(t, n, m) for n, m in enumerate(ms)] for t, ms in STREAMS.items()}
    if order == "users-first":
        return [i for t in (USERS, CREDS, PAYS, SEC) for i in per[t]]
    if order == "users-last":
        return [i for t in (CREDS, PAYS, SEC, USERS) for i in per[t]]
    rng = random.Random(seed)
    out: list[Item] = []
    while any(per.values()):
        topic = rng.choice([t for t, q in per.items() if q])
        out.append(per[topic].pop(0))
    return out


async def run(dsn: str, items: list[Item], batch: int) -> dict[str, list[tuple[object, ...]]]:
    await migrate(dsn)
    pool = await create_pool(dsn)
    vault, _ = vault_for_tests()
    store = Store(pool, "g", Applier(Pseudonymizer(b"test-audit-key", "k1")), vault=vault)
    try:
        for start in range(0, len(items), batch):
            chunk = items[start:start + batch]
            events, dead, progress = [], [], {}
            for topic, offset, m in chunk:
                progress[(topic, 0)] = PartitionProgress(offset + 1, 0)
                if isinstance(m, tuple):
                    dead.append(DeadLetter(topic, 0, offset, m[0], m[1], "message key differs"))
                else:
                    raw = serialize_event(m)
                    events.append(Incoming(parse_event(raw), topic, 0, offset, raw,
                                           m.message_key()))
            await store.commit_batch(events, dead, progress)
        async with pool.acquire() as conn:
            return await snapshot(conn)
    finally:
        await pool.close()


@pytest.fixture
async def reference(services: object) -> AsyncIterator[dict[str, list[tuple[object, ...]]]]:
    """Users topic first, one event per transaction: the erasure precedes every other topic's
    events, which are all "late"."""
    del services
    from tests.support.services import discover_services

    with discover_services() as found:
        async with scratch_database(found.database_url) as dsn:
            yield await run(dsn, interleave("users-first", 0), 1)


@pytest.mark.parametrize(("order", "seed", "batch"), [
    ("users-last", 0, 1), ("users-last", 0, 100), ("users-first", 0, 100),
    ("random", 1, 1), ("random", 2, 3), ("random", 3, 7), ("random", 4, 2),
])
async def test_same_end_state_in_any_order(fresh_db: str, reference: dict[str, list[tuple[
        object, ...]]], order: str, seed: int, batch: int) -> None:
    """Erasure before or after the other topics' events, in any batch cut: the same tables."""
    got = await run(fresh_db, interleave(order, seed), batch)
    for table, rows in reference.items():
        assert got[table] == rows, table


async def test_the_erased_state_holds_no_personal_data(fresh_db: str) -> None:
    """After the erasure (here: everything else arrived first), nothing readable of the person is
    left outside audit_events: the DID is its pseudonym form, contact data and JWT are gone
    (and the data key), the payments keep their amounts; the other person is intact."""
    await run(fresh_db, interleave("users-last", 0), 100)
    conn = await asyncpg.connect(fresh_db)
    try:
        _, pz = vault_for_tests()
        gone = erased_form(pz.hash(A))
        values = []
        for table in ("users", "credentials", "credential_status", "payments", "parked_events",
                      "dead_letter_events", "person_keys"):
            for r in await conn.fetch(f"SELECT * FROM {table}"):
                values += [v.decode(errors="replace") if isinstance(v, bytes) else str(v)
                           for v in r.values()]
        text = " ".join(values)
        for secret in (A, A_EMAIL, A_PHONE, A_IP, A_UA, A_DEVICE, "erin-secret-jwt", "Erin"):
            assert secret not in text, secret
        assert await conn.fetchval("SELECT count(*) FROM users WHERE did = $1", gone) == 1
        assert await conn.fetchval("SELECT wrapped_key FROM person_keys WHERE user_id_hash = $1",
                                   pz.hash(A)) is None
        paid = await conn.fetch("SELECT payer_did, payee_did, amount, total_amount, status "
                                "FROM payments ORDER BY created_at")
        assert [tuple(r) for r in paid] == [
            (gone, B, Decimal("120.00"), Decimal("121.20"), "CAPTURED"),
            (B, gone, Decimal("50.00"), Decimal("50.00"), "PENDING"),
            (gone, B, Decimal("7.50"), Decimal("7.50"), "AUTHORIZED")]
        assert (await plain_users(conn))[B] == ("bo@example.net", "+1 555 0100")
        assert await conn.fetchval("SELECT count(*) FROM audit_events WHERE "
                                   "event_type = 'USER_ERASURE_REQUESTED'") == 1
        assert await conn.fetchval(
            "SELECT count(*) FROM audit_events WHERE position($1 IN audit_events::text) > 0",
            A) == 0  # audit rows never hold a raw DID
    finally:
        await conn.close()


async def test_a_batch_naming_a_person_waits_for_their_erasure(fresh_db: str) -> None:
    """Two consumers: while an erasure's transaction holds the person's lock, a batch that only
    mentions them (a payment) waits, then sees the tombstone and stores the DID erased — never
    a raw DID committed beside the erasure."""
    await migrate(fresh_db)
    pool = await create_pool(fresh_db)
    vault, pz = vault_for_tests()
    store = Store(pool, "g", Applier(pz), vault=vault)
    holder = await asyncpg.connect(fresh_db)
    try:
        tx = holder.transaction()
        await tx.start()
        await holder.execute("SELECT pg_advisory_xact_lock($1)", lock_key(Subject("user", A)))
        pay = initiated(P1, A, payee_did=B, amount="1.00")
        raw = serialize_event(pay)
        batch = asyncio.create_task(store.commit_batch(
            [Incoming(parse_event(raw), PAYS, 0, 0, raw)], [],
            {(PAYS, 0): PartitionProgress(1, 0)}))
        done, _ = await asyncio.wait({batch}, timeout=1.0)
        assert not done, "the payment batch did not wait for the erasure's lock"
        await holder.execute(  # what the erasure commits: the tombstone
            "INSERT INTO person_keys (user_id_hash, hash_key_id, erased_at) "
            "VALUES ($1, 'k1', now())", pz.hash(A))
        await tx.commit()
        await asyncio.wait_for(batch, timeout=30)
        assert await holder.fetchval("SELECT payer_did FROM payments") == erased_form(pz.hash(A))
    finally:
        await holder.close()
        await pool.close()
