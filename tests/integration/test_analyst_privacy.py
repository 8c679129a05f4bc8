"""Analysts see pseudonyms, not people (CONTRACT.md §5 v1.1; V15), proven as `finpass_analyst`.

People with every kind of personal data (DID, email, phone, JWT, IP address, user agent, device
fingerprint, session id) go through the real consumer. Then, connected as the analyst role, the
test asks the catalog what the role can reach — every relation and column it may SELECT, every
function it may EXECUTE — reads all of it, runs every report, and finds none of those values.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from consumers.rows import user_id_for
from finpass_pipeline.analyst import dictionary
from finpass_pipeline.analyst.definitions import REPORTS, resolve
from finpass_pipeline.analyst.pseudonyms import backfill
from finpass_pipeline.events import Actor, EventBase
from finpass_pipeline.settings import Settings
from tests.support.builders import (
    credential_issued,
    credential_revoked,
    login_failed,
    login_succeeded,
    new_id,
    payment_authorized,
    payment_captured,
    payment_failed,
    payment_initiated,
    user_kyc_verified,
    user_registered,
    user_seen,
    user_status_changed,
)
from tests.support.pipeline_support import cli, running_daemon, send_events, wait_caught_up

KEY = b"test-audit-key"  # make_settings' audit key


def pseudonym(did: str) -> str:
    return hmac.new(KEY, did.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Person:
    label: str
    did: str
    email: str
    phone: str
    ip: str
    user_agent: str
    fingerprint: str
    session: str

    def actor(self) -> Actor:
        return Actor(did=self.did, role="USER", session_id=self.session, ip_address=self.ip,
                     user_agent=self.user_agent, geolocation="DE",
                     device_fingerprint=self.fingerprint)

    def secrets(self) -> dict[str, str]:
        """Every value that identifies this person and must not reach an analyst."""
        return {"did": self.did, "email": self.email.lower(), "phone": self.phone,
                "phone digits": re.sub(r"\D", "", self.phone), "ip": self.ip,
                "user agent": self.user_agent.lower(), "fingerprint": self.fingerprint,
                "session": self.session, "users.id": str(user_id_for(self.did))}


PEOPLE = [
    Person("alice", "did:example:alice-7f3a9c", "Alice.Liddell@example.com", "+49 151 2345678",
           "203.0.113.77", "Mozilla/5.0 (X11; Linux x86_64) AliceBrowser/1.0",
           "fp-alice-0a1b2c3d4e", "sess-alice-91f0"),
    Person("bob", "did:example:bob-0c2d4e", "bob.builder@example.org", "+44 20 7946 0958",
           "198.51.100.23", "BobApp/2.3 (iPhone; iOS 17.1)", "fp-bob-5f6a7b8c9d",
           "sess-bob-33aa"),
]


def _events(people: list[Person]) -> tuple[list[EventBase], list[str]]:
    """Every event type that carries personal data, for each person; and their JWTs."""
    alice, bob = people
    events: list[EventBase] = []
    jwts: list[str] = []
    for p in people:
        cred = new_id()
        issued = credential_issued(cred, p.did, subject_did=p.did, actor=p.actor(),
                                   correlation_id=f"corr-{p.label}")
        jwts.append(issued.data.credential_jwt)
        events += [
            user_registered(p.did, email=p.email, phone=p.phone, actor=p.actor(),
                            metadata={"contact": p.email, "device": p.fingerprint},
                            correlation_id=f"corr-{p.label}"),
            user_kyc_verified(p.did, actor=p.actor()),
            user_seen(p.did, actor=p.actor()),
            issued,
            credential_revoked(cred, reason=f"asked by {p.email}", revoked_by=p.did,
                               actor=p.actor()),
            login_succeeded(p.did, session_id=p.session, actor=p.actor()),
            login_failed(f"otp to {p.phone} from {p.ip} refused", did=p.did, actor=p.actor()),
            user_status_changed(p.did, status="SUSPENDED",
                                reason=f"review of {p.did} ({p.email})", actor=p.actor()),
        ]
    pay, failed = new_id(), new_id()
    events += [
        payment_initiated(pay, payer_did=alice.did, payee_did=bob.did, amount="125.50",
                          currency="EUR", description=f"rent for {bob.email}",
                          reference_id=f"inv {alice.phone}", actor=alice.actor(),
                          correlation_id="corr-pay", note=f"call {alice.phone}",
                          device_seen=alice.fingerprint),
        payment_authorized(pay, actor=alice.actor(), correlation_id="corr-pay"),
        payment_captured(pay, actor=alice.actor(), correlation_id="corr-pay"),
        payment_initiated(failed, payer_did=bob.did, payee_did=alice.did, amount="9.99",
                          currency="EUR", actor=bob.actor()),
        payment_failed(failed, failure_reason=f"card of {bob.did} declined at {bob.ip}",
                       actor=bob.actor()),
    ]
    return events, jwts


@dataclass
class Reachable:
    relations: dict[str, list[str]]  # "schema.name" -> readable columns
    functions: list[tuple[str, str, str, bool]]  # (schema, name, identity args, definer)


async def _reachable(conn: asyncpg.Connection) -> Reachable:
    """What the current role may read or run, from the catalog's privilege functions."""
    relations: dict[str, list[str]] = {}
    for r in await conn.fetch(
            "SELECT c.oid, format('%I.%I', n.nspname, c.relname) AS name"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')"
            " AND n.nspname NOT LIKE 'pg\\_%' AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')"
            " AND has_schema_privilege(current_user, n.oid, 'USAGE')"
            " AND (has_table_privilege(current_user, c.oid, 'SELECT')"
            "      OR has_any_column_privilege(current_user, c.oid, 'SELECT'))"):
        cols = await conn.fetch(
            "SELECT format('%I', attname) AS col FROM pg_attribute WHERE attrelid = $1"
            " AND attnum > 0 AND NOT attisdropped"
            " AND has_column_privilege(current_user, attrelid, attnum, 'SELECT')"
            " ORDER BY attnum", r["oid"])
        relations[r["name"]] = [c["col"] for c in cols]
    functions = [(f["nspname"], f["proname"], f["args"], f["prosecdef"]) for f in await conn.fetch(
        "SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid) AS args,"
        " p.prosecdef FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')"
        " AND n.nspname NOT LIKE 'pg\\_%' AND p.prorettype <> 'trigger'::regtype"
        " AND has_schema_privilege(current_user, n.oid, 'USAGE')"
        " AND has_function_privilege(current_user, p.oid, 'EXECUTE') ORDER BY 1, 2")]
    return Reachable(relations, functions)


def _leaks(where: str, rows: Iterable[Iterable[Any]], people: list[Person],
           jwts: list[str]) -> list[str]:
    found = []
    secrets = [(p.label, kind, v) for p in people for kind, v in p.secrets().items()]
    secrets += [("jwt", "credential_jwt", j) for j in jwts]
    secrets += [("jwt", "jwt part", j.split(".")[1]) for j in jwts]
    for row in rows:
        text = " | ".join("" if v is None else str(v) for v in row).lower()
        found += [f"{where}: {label}'s {kind}" for label, kind, value in secrets
                  if value.lower() in text]
    return found


async def _as_analyst(dsn: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn, server_settings={"TimeZone": "UTC"})
    await conn.execute("SET ROLE finpass_analyst")
    assert await conn.fetchval("SELECT current_user") == "finpass_analyst"
    return conn


# Functions the role may run that the test knows how to call, and what it passes.
HELPERS: dict[str, str] = {
    "analyst.rollup_window": "SELECT * FROM analyst.rollup_window('ip_bursts', '-infinity',"
                             " 'infinity')",
    "analyst.ip_bursts_between": "SELECT * FROM analyst.ip_bursts_between('-infinity',"
                                 " 'infinity', 1)",
    "analyst.mask_personal": "SELECT analyst.mask_personal('nothing personal')",
    "analyst.mask_details": "SELECT analyst.mask_details('{\"extra\": {\"a\": 1}}')",
    "public.audit_partitions": "SELECT * FROM public.audit_partitions()",
}
REPORT_FUNCTIONS = {m.group() for r in REPORTS if (m := re.search(r"analyst\.\w+", r.sql))}


@pytest.fixture
async def piped(settings: Settings) -> AsyncIterator[tuple[Settings, list[str]]]:
    """The people's events applied by the real consumer; yields the settings and their JWTs."""
    events, jwts = _events(PEOPLE)
    await send_events(settings, events)
    async with running_daemon(settings):
        await wait_caught_up(settings, len(events))
    admin = await asyncpg.connect(settings.database_url)
    try:
        # The raw data is really there (else the test below would prove nothing).
        assert await admin.fetchval("SELECT count(*) FROM users WHERE email_enc IS NOT NULL") == 2
        assert await admin.fetchval("SELECT count(*) FROM audit_events WHERE ip_address = $1",
                                    PEOPLE[0].ip) > 3
        assert await admin.fetchval("SELECT count(*) FROM payments") == 2
        await admin.fetch("SELECT * FROM analyst.refresh_rollups(true)")
        await admin.execute("ANALYZE")  # fills pg_statistic: the role must not see it either
    finally:
        await admin.close()
    yield settings, jwts


async def test_analyst_can_reach_no_personal_data(piped: tuple[Settings, list[str]]) -> None:
    """Every relation, column and function finpass_analyst can reach, read in full, and every
    report: no DID, email, phone, JWT, IP, user agent, fingerprint or session of anyone."""
    settings, jwts = piped
    conn = await _as_analyst(settings.database_url)
    try:
        reach = await _reachable(conn)
        # The role reaches the analyst schema only (and V5's partition listing).
        assert {r.split(".")[0] for r in reach.relations} == {"analyst"}, reach.relations
        assert {"analyst.users", "analyst.credentials", "analyst.payments",
                "analyst.audit_events"} <= set(reach.relations)
        leaks: list[str] = []
        total = 0
        for rel, cols in reach.relations.items():
            assert cols, f"{rel}: reachable but no readable column"
            rows = await conn.fetch(f"SELECT {', '.join(cols)} FROM {rel}")  # quoted by format
            total += len(rows)
            leaks += _leaks(rel, rows, PEOPLE, jwts)
        assert total >= 2 + 2 + 2 + 21  # users, credentials, payments, one audit row per event

        names = {f"{s}.{n}" for s, n, _, _ in reach.functions}
        unknown = {f"{s}.{n}({a})" for s, n, a, definer in reach.functions
                   if f"{s}.{n}" not in REPORT_FUNCTIONS | set(HELPERS)
                   and (definer or s == "analyst")}
        assert not unknown, f"reachable functions this test does not exercise: {unknown}"
        assert REPORT_FUNCTIONS <= names
        for name, sql in HELPERS.items():
            if name in names:
                leaks += _leaks(name, await conn.fetch(sql), PEOPLE, jwts)

        alice = pseudonym(PEOPLE[0].did)
        given = {"query": alice, "user_hash": alice, "correlation_id": "corr-pay",
                 "from": "-400d", "since": "now", "days": "3650", "max_age_days": "1",
                 "threshold": "0", "min_failures": "1", "burst_per_minute": "1",
                 "failed_hours": "100", "active_days": "3650"}
        outputs: dict[str, list[asyncpg.Record]] = {}
        for report in REPORTS:
            options: dict[str, str | None] = {p.name: given[p.name] for p in report.params
                                              if p.name in given}
            args = resolve(report, options, datetime.now(UTC))
            outputs[report.name] = rows = await conn.fetch(report.sql, *args)
            leaks += _leaks(f"report {report.name}", rows, PEOPLE, jwts)
        for corr in ("corr-alice", "corr-bob"):
            rows = await conn.fetch("SELECT * FROM analyst.correlation_trail($1)", corr)
            assert rows
            leaks += _leaks(f"correlation_trail({corr})", rows, PEOPLE, jwts)

        # Nothing PostgreSQL itself shows about the tables (planner statistics).
        assert await conn.fetchval("SELECT count(*) FROM pg_stats WHERE schemaname = 'public'"
                                   ) == 0
        assert leaks == []

        # ... and the reports still identify people, by pseudonym.
        bob = pseudonym(PEOPLE[1].did)
        assert {r["user_id_hash"] for r in outputs["users-kyc-verified"]} == {alice, bob}
        assert [r["user_id_hash"] for r in outputs["users-search"]] == [alice]
        assert {(r["payer_id_hash"], r["payee_id_hash"])
                for r in outputs["payments-high-value"]} == {(alice, bob), (bob, alice)}
        assert {r["subject"] for r in outputs["audit-suspicious"]
                if r["kind"] == "LOGIN_FAILURES"} == {alice, bob}
        assert {r["user_id_hash"] for r in outputs["audit-correlation-trail"]} == {alice}
        # alice's rows: 8 of her own events and 3 of the payment she made
        assert len(outputs["audit-user-timeline"]) == 11
    finally:
        await conn.close()


async def test_pseudonyms_join_users_credentials_payments_and_audit(
        piped: tuple[Settings, list[str]]) -> None:
    """The consumer wrote each row's pseudonym = the audit rows' user_id_hash, so analysts join."""
    settings, _ = piped
    conn = await _as_analyst(settings.database_url)
    try:
        alice, bob = (pseudonym(p.did) for p in PEOPLE)
        assert {r[0] for r in await conn.fetch("SELECT user_id_hash FROM analyst.users")} == {
            alice, bob}
        assert await conn.fetchval(
            "SELECT count(*) FROM analyst.credentials c JOIN analyst.users u"
            " USING (user_id_hash) WHERE c.subject_id_hash = c.user_id_hash") == 2
        row = await conn.fetchrow(
            "SELECT sum(p.amount) AS paid, count(DISTINCT a.id) AS audited"
            " FROM analyst.payments p JOIN analyst.users u ON u.user_id_hash = p.payer_id_hash"
            " JOIN analyst.audit_events a ON a.user_id_hash = u.user_id_hash"
            " AND a.resource_type = 'PAYMENT' AND a.resource_id = p.id::text"
            " WHERE u.user_id_hash = $1", alice)
        assert (str(row["paid"]), row["audited"]) == ("376.50", 3)  # 125.50 x 3 audit rows
        # Unknown event fields reach analysts by name only; free text is masked.
        details = await conn.fetchval(
            "SELECT details FROM analyst.audit_events WHERE event_type = 'PAYMENT_INITIATED'"
            " AND user_id_hash = $1", alice)
        assert '"extra_fields": ["device_seen", "note"]' in details
        reason = await conn.fetchval("SELECT revocation_reason FROM analyst.credentials"
                                     " WHERE user_id_hash = $1", alice)
        assert reason == "asked by [email]"
        ips = await conn.fetch("SELECT DISTINCT ip_hash FROM analyst.audit_events"
                               " WHERE ip_hash IS NOT NULL")
        assert len(ips) == 2 and all(re.fullmatch(r"[0-9a-f]{64}", r[0]) for r in ips)
    finally:
        await conn.close()


async def test_backfill_fills_pseudonyms_of_rows_written_before_v15(settings: Settings) -> None:
    """Rows without pseudonyms (written before V15) show NULL, never a DID, until
    `analyst backfill` computes them with the pipeline's key; --all recomputes them all."""
    dids = [f"did:example:old-{i}" for i in range(7)]
    admin = await asyncpg.connect(settings.database_url)
    try:
        await admin.executemany("INSERT INTO users (id, did) VALUES ($1, $2)",
                                [(user_id_for(d), d) for d in dids])
        await admin.executemany(
            "INSERT INTO credentials (id, user_id, issuer_id, credential_type, credential_jwt,"
            " subject_did) VALUES ($1, $2, 'did:web:iss', 'KYC', $3, $4)",
            [(UUID(int=i + 1), user_id_for(d), f"jwt-{i}", d) for i, d in enumerate(dids)])
        await admin.executemany(
            "INSERT INTO payments (id, payer_did, payee_did, amount) VALUES ($1, $2, $3, 1)",
            [(UUID(int=100 + i), d, dids[0]) for i, d in enumerate(dids)])
        analyst = await _as_analyst(settings.database_url)
        try:
            assert await analyst.fetchval(
                "SELECT count(*) FROM analyst.users WHERE user_id_hash IS NULL") == 7
            changed = await backfill(settings, batch_size=3)
            assert changed == {"users.user_id_hash": 7, "credentials.subject_id_hash": 7,
                               "payments.payer_id_hash": 7, "payments.payee_id_hash": 7,
                               "credentials.user_id_hash": 7}
            assert {r[0] for r in await analyst.fetch(
                "SELECT user_id_hash FROM analyst.users")} == {pseudonym(d) for d in dids}
            assert await analyst.fetchval(
                "SELECT count(*) FROM analyst.credentials c JOIN analyst.users u"
                " USING (user_id_hash) WHERE c.subject_id_hash = u.user_id_hash") == 7
            assert await analyst.fetchval(
                "SELECT count(*) FROM analyst.payments WHERE payee_id_hash = $1",
                pseudonym(dids[0])) == 7
        finally:
            await analyst.close()
        assert set((await backfill(settings)).values()) == {0}  # nothing left to do
        await admin.execute("UPDATE users SET user_id_hash = 'stale'")
        assert (await backfill(settings, every=True))["users.user_id_hash"] == 7
    finally:
        await admin.close()


async def test_data_dictionary_is_generated_from_comments_and_matches_the_doc(
        fresh_db: str) -> None:
    """Every view, table, column and function the role reaches has a COMMENT, and
    docs/analyst.md's data dictionary is exactly what `analyst dictionary` generates."""
    from finpass_pipeline.migrations import migrate

    await migrate(fresh_db)
    conn = await asyncpg.connect(fresh_db)
    try:
        found = await dictionary.read(conn)
    finally:
        await conn.close()
    assert found.uncommented() == []
    assert {f"{r.schema}.{r.name}" for r in found.relations} >= {
        "analyst.users", "analyst.credentials", "analyst.payments", "analyst.audit_events"}
    generated = await dictionary.generate(fresh_db, None)
    assert generated == dictionary.render(found)
    assert dictionary.section(dictionary.DOC.read_text(encoding="utf-8")) == generated, (
        "docs/analyst.md is stale: run `finpass-pipeline analyst dictionary --write`")
    assert dictionary.apply(generated, dictionary.DOC, "check") == 0


def test_the_analyst_commands_check_the_doc_and_backfill(fresh_db: str, tmp_path: Path) -> None:
    """`analyst dictionary --check` exits 0 on docs/analyst.md and 1 (one line) on a stale
    copy; `--write` fixes the copy; `analyst backfill` reports per column and exits 0."""
    env = {"FINPASS_DATABASE_URL": fresh_db, "FINPASS_AUDIT_HASH_KEY": "k"}
    assert cli("migrate", env=env).returncode == 0
    assert cli("analyst", "dictionary", "--check", env=env).returncode == 0
    stale = tmp_path / "analyst.md"
    stale.write_text("# Analysts\n", encoding="utf-8")
    checked = cli("analyst", "dictionary", "--check", "--doc", str(stale), env=env)
    assert checked.returncode == 1 and "analyst dictionary --write" in checked.stderr
    assert cli("analyst", "dictionary", "--write", "--doc", str(stale), env=env).returncode == 0
    assert cli("analyst", "dictionary", "--check", "--doc", str(stale), env=env).returncode == 0
    assert stale.read_text(encoding="utf-8").startswith("# Analysts\n\n## Data dictionary\n")
    filled = cli("analyst", "backfill", env=env)
    assert filled.returncode == 0, filled.stderr
    assert "users.user_id_hash: 0 row(s)" in filled.stdout
    nokey = cli("analyst", "backfill", env={"FINPASS_DATABASE_URL": fresh_db})
    assert nokey.returncode == 2 and "FINPASS_AUDIT_HASH_KEY" in nokey.stderr
