"""Erasure, encryption at rest and the right of access end to end (issue #13), through the real
daemon, Kafka and PostgreSQL: two people, their credentials, payments and logins; one erased;
then the whole database is searched for what is left of them, and the topics are replayed
into a fresh database."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import uuid
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr

from consumers.apply import Applier
from consumers.records import Incoming, PartitionProgress
from consumers.store import Store
from finpass_pipeline.audit import cli as audit_cli
from finpass_pipeline.audit.pseudonym import Pseudonymizer
from finpass_pipeline.db import create_pool
from finpass_pipeline.events import parse_event, serialize_event
from finpass_pipeline.privacy import cli as privacy_cli
from finpass_pipeline.privacy.crypto import MasterKeyring
from finpass_pipeline.privacy.erasure import erased_form
from finpass_pipeline.privacy.vault import Vault, blind_index_key
from finpass_pipeline.settings import Settings
from tests.support.builders import ev, initiated, issued, registered
from tests.support.pipeline_support import (
    TEST_PII_MASTER_KEY,
    make_settings,
    prepare,
    running_daemon,
    scratch_database,
    send_events,
    send_raw,
    wait_caught_up,
)
from tests.support.privacy import (
    AUDIT_PERSONAL_COLUMNS_ERASED,
    plain_jwts,
    plain_users,
    snapshot,
    vault_for_tests,
)
from tests.support.services import Services

ALICE, BOB = "did:example:alice-to-forget", "did:example:bob-stays"
ALICE_MAIL, ALICE_PHONE = "alice.forget@example.org", "+49 151 0000 4242"
ALICE_JWT = "eyJhbGciOiJFZERTQSJ9.alice-credential-payload.c2lnbmF0dXJl"
ALICE_IP, ALICE_UA, ALICE_DEVICE = "198.51.100.42", "AliceAgent/7.1 (alice-phone)", "fp-alice-42"
BOB_MAIL, BOB_PHONE, BOB_JWT = "bob@example.net", "+1 555 0199", "eyJhbGciOi.bob.sig"
ALICE_ACTOR = {"did": ALICE, "role": "USER", "ip_address": ALICE_IP, "user_agent": ALICE_UA,
               "device_fingerprint": ALICE_DEVICE, "geolocation": "DE", "session_id": "s-a1"}
BOB_ACTOR = {"did": BOB, "role": "USER", "ip_address": "192.0.2.7", "user_agent": "BobUA/2",
             "device_fingerprint": "fp-bob", "session_id": "s-b1"}
C_ALICE, C_BOB, C_GHOST = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
P1, P2, P3, P4 = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


def before_erasure() -> list[Any]:
    return [
        registered(ALICE, email=ALICE_MAIL, phone=ALICE_PHONE, metadata={"name": "Alice F."},
                   actor=ALICE_ACTOR),
        registered(BOB, email=BOB_MAIL, phone=BOB_PHONE, at=1, actor=BOB_ACTOR),
        issued(C_ALICE, ALICE, at=2, credential_jwt=ALICE_JWT, subject_did=ALICE,
               verification_method=f"{ALICE}#key-1", actor=ALICE_ACTOR),
        issued(C_BOB, BOB, at=3, credential_jwt=BOB_JWT, subject_did=BOB),
        initiated(P1, ALICE, payee_did=BOB, amount="100.00", fee_amount="0.50", at=4,
                  description="Alice pays Bob back", actor=ALICE_ACTOR),
        ev("payment.authorized", payment_id=P1, transaction_id="tx-p1", at=5),
        ev("payment.captured", payment_id=P1, at=6),
        initiated(P2, BOB, payee_did=ALICE, amount="30.00", at=7, actor=BOB_ACTOR),
        ev("payment.authorized", payment_id=P2, at=8),
        ev("payment.captured", payment_id=P2, at=9),
        initiated(P3, ALICE, payee_did="did:web:shop.example", amount="12.34", at=10),
        ev("payment.failed", payment_id=P3, failure_reason="card declined", at=11),
        ev("auth.login_succeeded", did=ALICE, session_id="s-a1", at=12, actor=ALICE_ACTOR),
        ev("auth.login_failed", did=ALICE, reason="wrong password", at=13, actor=ALICE_ACTOR),
        ev("auth.login_succeeded", did=BOB, session_id="s-b1", at=14, actor=BOB_ACTOR),
        ev("credential.suspended", credential_id=C_GHOST, reason="holder asked", at=15,
           actor=ALICE_ACTOR),  # its credential never comes: parked, with Alice in it
    ]


def after_erasure() -> list[Any]:
    """Late events for Alice from other topics (and her own topic)."""
    return [
        ev("auth.login_succeeded", did=ALICE, session_id="s-a2", at=31, actor=ALICE_ACTOR),
        initiated(P4, ALICE, payee_did=BOB, amount="5.00", at=32, description="late",
                  actor=ALICE_ACTOR),
        ev("credential.revoked", credential_id=C_ALICE, reason="holder erased", revoked_by=ALICE,
           at=33, actor=ALICE_ACTOR),
        ev("user.seen", did=ALICE, at=34, actor=ALICE_ACTOR),
    ]


def dump(dsn: str) -> tuple[str, str]:
    """`pg_dump` of the whole database with every bytea (COPY's `\\\\x...` hex) decoded and
    appended: (everything, everything but the audit_events tables' data)."""
    text = subprocess.run(["pg_dump", "--no-owner", "-d", dsn], capture_output=True, text=True,
                          check=True, timeout=120).stdout

    def decoded(part: str) -> str:
        blobs = [bytes.fromhex(h).decode("utf-8", "replace")
                 for h in re.findall(r"\\\\x((?:[0-9a-f]{2})+)", part)]
        return part + "\n" + "\n".join(blobs)

    blocks = re.split(r"(?m)^(?=COPY )", text)
    outside = "".join(b for b in blocks if not b.startswith("COPY public.audit_events"))
    return decoded(text), decoded(outside)


async def sums(dsn: str, payer: str) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [tuple(r) for r in await conn.fetch(
            "SELECT status, currency, sum(amount), sum(total_amount), count(*) FROM payments "
            "WHERE payer_did = $1 GROUP BY 1, 2 ORDER BY 1, 2", payer)]
    finally:
        await conn.close()


async def snap(dsn: str) -> dict[str, list[tuple[object, ...]]]:
    conn = await asyncpg.connect(dsn)
    try:
        return await snapshot(conn)
    finally:
        await conn.close()


@pytest.mark.timeout(300)
async def test_erasure_end_to_end(settings: Settings, services: Services,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Two people; one erased. The dump holds none of her email, phone, DID, JWT or IP (audit
    rows' actor columns: at the merge switch); the other is intact and decrypts; her payments
    keep their sums; `audit verify` passes; a replay into a fresh database gives the same tables;
    `privacy export` decrypts, through finpass_privacy, and is audited."""
    dsn = settings.database_url
    first, late = before_erasure(), after_erasure()
    wrong_key = ev("auth.login_succeeded", did=ALICE, session_id="s-x", at=16, actor=ALICE_ACTOR)
    erase = ev("user.erasure_requested", did=ALICE, reason="GDPR Art. 17", at=30,
               actor=ALICE_ACTOR)
    total = len(first) + 1 + 1 + len(late)
    async with running_daemon(settings):
        await send_events(settings, first)
        await send_raw(settings, [("security", b"s-x", serialize_event(wrong_key))])
        await wait_caught_up(settings, len(first) + 1)
        before = await sums(dsn, ALICE)
        await send_events(settings, [erase])
        await wait_caught_up(settings, len(first) + 2)
        await send_events(settings, late)
        await wait_caught_up(settings, total)

    everything, outside_audit = dump(dsn)
    assert '"session_id":"s-x"' in outside_audit  # the dead letter's bytea, decoded: searched
    if not AUDIT_PERSONAL_COLUMNS_ERASED:
        assert ALICE_IP in everything  # audit rows' actor columns, until the merge
    for secret in (ALICE, ALICE_MAIL, ALICE_PHONE, ALICE_JWT, "alice-credential-payload"):
        assert secret not in everything, secret
    actor_scope = everything if AUDIT_PERSONAL_COLUMNS_ERASED else outside_audit
    for secret in (ALICE_IP, ALICE_UA, ALICE_DEVICE):
        assert secret not in actor_scope, secret
    assert BOB_MAIL not in everything and BOB_JWT not in everything  # sealed at rest

    conn = await asyncpg.connect(dsn)
    try:
        _, pz = vault_for_tests()
        gone = erased_form(pz.hash(ALICE))
        users = await plain_users(conn)
        assert users[BOB] == (BOB_MAIL, BOB_PHONE) and users[gone] == (None, None)
        assert (await plain_jwts(conn))[str(C_BOB)] == BOB_JWT
        assert (await plain_jwts(conn))[str(C_ALICE)] is None
        assert await conn.fetchval("SELECT count(*) FROM parked_events") == 1
        assert await conn.fetchval("SELECT count(*) FROM dead_letter_events") == 1
        assert await conn.fetchval("SELECT count(*) FROM audit_events "
                                   "WHERE event_type = 'USER_ERASURE_REQUESTED'") == 1
    finally:
        await conn.close()
    after = await sums(dsn, gone)
    late_row = ("PENDING", "EUR", Decimal("5.00"), Decimal("5.00"), 1)
    assert [r for r in after if r != late_row] == before
    assert await sums(dsn, ALICE) == []
    assert await audit_cli.verify(settings, say=lambda _: None) == 0

    # A replay of the same topics from offset 0 into a fresh database: the same tables.
    original = await snap(dsn)
    async with scratch_database(services.database_url) as fresh:
        replay = make_settings(fresh, settings.kafka_bootstrap_servers, settings.topic_prefix)
        await prepare(replay)
        async with running_daemon(replay):
            await wait_caught_up(replay, total)
        replayed = await snap(fresh)
    for table, rows in original.items():
        assert replayed[table] == rows, table

    # Right of access: Bob's data decrypted, read as finpass_privacy, audited.
    capsys.readouterr()
    assert await privacy_cli.export(settings, BOB, "test access request") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["users"][0]["email"] == BOB_MAIL and doc["users"][0]["phone"] == BOB_PHONE
    assert [c["credential_jwt"] for c in doc["credentials"]] == [BOB_JWT]
    assert {str(p["id"]) for p in doc["payments"]} == {str(P1), str(P2), str(P4)}
    assert doc["audit_events"] and doc["access_log"][-1]["purpose"] == "test access request"
    assert doc["access_log"][-1]["current_user_name"] == "finpass_owner"  # SECURITY DEFINER
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow("SELECT user_id_hash, chain_id FROM audit_events "
                                  "WHERE event_type = 'PRIVACY_EXPORT'")
        assert tuple(row) == (pz.hash(BOB), "finpass.ops.privacy:0")
    finally:
        await conn.close()
    assert await audit_cli.verify(settings, say=lambda _: None) == 0
    # Alice's export: nothing personal is left to give.
    capsys.readouterr()
    assert await privacy_cli.export(settings, ALICE, "erased?") == 0
    alice = json.loads(capsys.readouterr().out)
    assert alice["person_key"]["erased_at"] is not None
    assert alice["users"][0]["did"] == gone and alice["users"][0]["email"] is None
    assert alice["credentials"][0]["credential_jwt"] is None


async def test_rotate_key_rewraps_every_live_data_key(fresh_db: str, bootstrap: str,
                                                      topic_prefix: str) -> None:
    """Data keys wrapped under m1 are re-wrapped under m2 by `privacy rotate-key`; afterwards
    the fields open with m2 alone, erased people stay without a key, and it is audited."""
    old = make_settings(fresh_db, bootstrap, topic_prefix)
    await prepare(old)
    pz = Pseudonymizer(b"test-audit-key", "k1")
    pool = await create_pool(fresh_db)
    try:
        store = Store(pool, "g", Applier(pz), vault=Vault(old.pii_keyring(), blind_index_key(pz)))
        events = [registered(ALICE, email=ALICE_MAIL), registered(BOB, email=BOB_MAIL, at=1),
                  issued(C_BOB, BOB, at=2, credential_jwt=BOB_JWT),
                  ev("user.erasure_requested", did=ALICE, at=3)]
        raws = [serialize_event(e) for e in events]
        await store.commit_batch(
            [Incoming(parse_event(r), "t.users", 0, n, r) for n, r in enumerate(raws)], [],
            {("t.users", 0): PartitionProgress(len(raws), 0)})
    finally:
        await pool.close()
    m2 = base64.b64encode(os.urandom(32)).decode()
    new = old.model_copy(update={"pii_master_key": SecretStr(m2), "pii_master_key_id": "m2",
                                 "pii_master_keys": SecretStr(f"m1:{TEST_PII_MASTER_KEY}")})
    said: list[str] = []
    assert await privacy_cli.rotate_key(new, batch_size=1, say=said.append) == 0
    assert said == ["re-wrapped 1 data key(s) under master key 'm2'; 0 still under other keys"]
    only_m2 = MasterKeyring("m2", {"m2": base64.b64decode(m2)})
    conn = await asyncpg.connect(fresh_db)
    try:
        keys = [tuple(r) for r in await conn.fetch(
            "SELECT user_id_hash, master_key_id, erased_at IS NOT NULL FROM person_keys "
            "ORDER BY 1")]
        assert sorted(keys) == sorted([(pz.hash(BOB), "m2", False), (pz.hash(ALICE), None, True)])
        assert (await plain_users(conn, keyring=only_m2))[BOB] == (BOB_MAIL, None)
        assert (await plain_jwts(conn, keyring=only_m2))[str(C_BOB)] == BOB_JWT
        assert await conn.fetchval("SELECT count(*) FROM audit_events "
                                   "WHERE event_type = 'PRIVACY_KEY_ROTATED'") == 1
    finally:
        await conn.close()
    assert await audit_cli.verify(new, say=lambda _: None) == 0


async def test_raw_personal_data_only_through_the_audited_function(settings: Settings) -> None:
    """finpass_privacy reads no table directly; each call of privacy_subject_data() is logged
    before it returns; finpass_analyst can neither call it nor read person_keys, the access log
    or the sealed columns."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL ROLE finpass_privacy")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch("SELECT did FROM users")
        async with conn.transaction():
            await conn.execute("SET LOCAL ROLE finpass_privacy")
            doc = json.loads(await conn.fetchval(
                "SELECT privacy_subject_data('ab', 'did:example:nobody', 'audit test')::text"))
        assert doc["users"] == [] and doc["access_log"][-1]["purpose"] == "audit test"
        assert await conn.fetchval("SELECT count(*) FROM privacy_access_log") == 1
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM privacy_access_log")
        for sql in ("SELECT * FROM person_keys", "SELECT * FROM privacy_access_log",
                    "SELECT email_enc FROM users", "SELECT credential_jwt_enc FROM credentials",
                    "SELECT privacy_subject_data('ab', 'did:example:x', 'why')"):
            async with conn.transaction():
                await conn.execute("SET LOCAL ROLE finpass_analyst")
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.fetch(sql)
    finally:
        await conn.close()


async def test_seal_legacy_seals_rows_written_before_v16(settings: Settings) -> None:
    """Plaintext email, phone and JWT of rows written before V16 (inserted here by hand) are
    sealed by `privacy seal-legacy`, their plaintext NULLed, and open again with the key."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        uid = uuid.uuid4()
        await conn.execute("INSERT INTO users (id, did, email, phone) VALUES ($1, $2, $3, $4)",
                           uid, BOB, BOB_MAIL, BOB_PHONE)
        await conn.execute(
            "INSERT INTO credentials (id, user_id, issuer_id, credential_type, credential_jwt) "
            "VALUES ($1, $2, 'did:web:issuer', 'KYC', $3)", C_BOB, uid, BOB_JWT)
        said: list[str] = []
        assert await privacy_cli.seal_legacy(settings, batch_size=1, say=said.append) == 0
        assert said == ["sealed 1 user row(s) and 1 credential row(s)"]
        assert await conn.fetchval("SELECT count(*) FROM users WHERE email IS NOT NULL "
                                   "OR phone IS NOT NULL") == 0
        assert await conn.fetchval("SELECT count(*) FROM credentials "
                                   "WHERE credential_jwt IS NOT NULL") == 0
        assert (await plain_users(conn))[BOB] == (BOB_MAIL, BOB_PHONE)
        assert (await plain_jwts(conn))[str(C_BOB)] == BOB_JWT
    finally:
        await conn.close()
