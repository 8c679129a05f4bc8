"""The analyst surface (V10 + `finpass-pipeline report`) against a real PostgreSQL.

The module shares one fresh database migrated to the newest version and holding a small data set
with known answers (`seeded_db`); the migration tests get their own (`fresh_db`). Users U1..U5,
credentials C1..C7, payments P1..P9 and a handful of audit rows, all at fixed offsets from the
test's start. Times are days apart from every window edge, so
the database's `now()` (a little later than NOW) never changes an answer.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import shutil
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from finpass_pipeline.analyst.definitions import BY_NAME, REPORTS, resolve
from finpass_pipeline.analyst.reports import connect, fetch
from finpass_pipeline.dev.datagen import DatagenError, Sizes, generate
from finpass_pipeline.migrations import SCHEMA_DIR, migrate, rollback
from tests.support.pipeline_support import report_cli, scratch_database
from tests.support.services import Services

NOW = datetime.now(UTC).replace(microsecond=0)


def ago(days: float = 0, hours: float = 0, minutes: float = 0, seconds: float = 0) -> datetime:
    return NOW - timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def uid(n: int, kind: int = 0) -> UUID:
    return UUID(f"{kind:08x}-0000-4000-8000-{n:012x}")


U1, U2, U3, U4, U5 = (uid(n, 1) for n in range(1, 6))
C = {n: uid(n, 2) for n in range(1, 8)}
P = {n: uid(n, 3) for n in range(1, 10)}
H1, H2, H3, H4, H5 = (c * 64 for c in "abcde")  # the users' pseudonyms (U1..U5)
HASH = {U1: H1, U2: H2, U3: H3, U4: H4, U5: H5}
SHOP = "f" * 64  # the payee's pseudonym

USERS = [  # id, did, created_at, last_seen, email, phone, kyc_verified, kyc_verified_at, status
    (U1, "did:example:alice", ago(100), ago(1), "Alice@Example.COM", "+49 151 1234567", True,
     ago(5), "ACTIVE"),
    (U2, "did:example:bob", ago(200), ago(120), None, None, False, None, "ACTIVE"),
    (U3, "did:example:carol", ago(50), None, "carol@example.org", None, True, ago(40),
     "SUSPENDED"),
    (U4, "did:example:dave", ago(20), ago(2), None, "+1 (555) 010-9999", True, ago(10),
     "TERMINATED"),
    (U5, "did:example:erin", ago(95), ago(91), None, None, False, None, "ACTIVE"),
]
CREDENTIALS = [  # id, user_id, issuer_id, credential_type, issued_at, expires_at, status
    (C[1], U1, "did:web:iss-a", "KYC", ago(400), ago(35), "EXPIRED"),
    (C[2], U1, "did:web:iss-a", "AGE", ago(100), ago(-10), "VALID"),
    (C[3], U3, "did:web:iss-b", "KYC", ago(380), ago(-200), "VALID"),
    (C[4], U4, "did:web:iss-b", "ADDRESS", ago(30), ago(1), "VALID"),  # expiry job lags
    (C[5], U2, "did:web:iss-a", "KYC", ago(10), None, "EXPIRED"),  # expired early, no date
    (C[6], U1, "did:web:iss-a", "KYC", ago(5), ago(-100), "REVOKED"),
    (C[7], U2, "did:web:iss-c", "AGE", ago(400), ago(-5), "VALID"),
]
D = Decimal
PAYMENTS = [  # id, amount, currency, fee, status, created_at, authorized, captured, failed
    (P[1], D("100.00"), "EUR", D("1.00"), "CAPTURED", ago(2), ago(2, seconds=-1),
     ago(2, seconds=-60), None),
    (P[2], D("250.50"), "EUR", D("2.50"), "CAPTURED", ago(1.5), ago(1.5, seconds=-1),
     ago(1.5, seconds=-60), None),
    (P[3], D("15000.00"), "USD", D("100.00"), "CAPTURED", ago(3), ago(3, seconds=-1),
     ago(3, seconds=-60), None),
    (P[4], D("20.00"), "EUR", None, "PENDING", ago(2), None, None, None),
    (P[5], D("40.00"), "USD", None, "AUTHORIZED", ago(hours=30), ago(hours=30, seconds=-1),
     None, None),
    (P[6], D("60.00"), "EUR", None, "FAILED", ago(hours=5), None, None,
     ago(hours=5, seconds=-5)),
    (P[7], D("70.00"), "EUR", None, "FAILED", ago(3), None, None, ago(3, seconds=-5)),
    (P[8], D("12000.00"), "GBP", None, "REFUNDED", ago(40), ago(40, seconds=-1),
     ago(40, seconds=-60), None),
    (P[9], D("5.00"), "EUR", None, "PENDING", ago(hours=1), None, None, None),
]
BURST_START = ago(hours=4).replace(second=10)  # 35 events inside one minute
OLD_BURST = ago(3).replace(second=5)  # 12 events inside one minute, three days ago
AUDIT = (  # event_type, user_id_hash, ip, resource_type, resource_id, outcome, severity, corr, at
    [("AUTH_LOGIN_FAILED", H2, "203.0.113.9", "SESSION", f"s-b{i}", "FAILURE", "WARNING",
      f"req-b{i}", ago(hours=2, minutes=-i)) for i in range(6)]
    + [("AUTH_LOGIN_FAILED", H1, "203.0.113.1", "SESSION", f"s-a{i}", "FAILURE", "WARNING",
        f"req-a{i}", ago(hours=3, minutes=-i)) for i in range(4)]
    + [("AUTH_LOGIN_FAILED", None, "198.51.100.7", "SESSION", None, "FAILURE", "WARNING",
        f"req-x{i}", BURST_START + timedelta(seconds=i / 2)) for i in range(35)]
    + [("AUTH_LOGIN_SUCCEEDED", f"{i:064x}", "198.51.100.8", "SESSION", f"s-o{i}", "SUCCESS",
        "INFO", f"req-o{i}", OLD_BURST + timedelta(seconds=2 * i)) for i in range(12)]
    + [("PAYMENT_INITIATED", H1, "203.0.113.1", "PAYMENT", str(P[1]), "SUCCESS", "INFO",
        "chk-1", ago(2)),
       ("PAYMENT_AUTHORIZED", H1, "203.0.113.1", "PAYMENT", str(P[1]), "SUCCESS", "INFO",
        "chk-1", ago(2, seconds=-1)),
       ("USER_SEEN", H1, "203.0.113.1", "USER", str(U1), "SUCCESS", "INFO", "chk-1",
        ago(2, seconds=-2)),
       ("CREDENTIAL_ISSUED", H1, None, "CREDENTIAL", str(C[2]), "SUCCESS", "INFO", "chk-1",
        ago(2, seconds=-3)),
       ("AUTH_LOGIN_SUCCEEDED", H1, "203.0.113.1", "SESSION", "s-1", "SUCCESS", "INFO", "chk-1",
        ago(2, seconds=-4)),
       ("PAYMENT_CAPTURED", H1, "203.0.113.1", "PAYMENT", str(P[1]), "SUCCESS", "INFO", "chk-1",
        ago(2, seconds=-60)),
       ("PAYMENT_CAPTURED", H1, "203.0.113.1", "PAYMENT", "not-a-uuid", "REJECTED", "WARNING",
        "chk-1", ago(hours=1)),
       ("USER_REGISTERED", H2, None, "USER", str(U2), "SUCCESS", "INFO", "onb-2", ago(200))]
)


async def _seed(conn: Any) -> None:
    if await conn.fetchval("SELECT to_regproc('audit_ensure_partitions')") is not None:
        await conn.execute("SELECT audit_ensure_partitions(0, $1, now())", ago(1000))
    await conn.executemany(
        "INSERT INTO users (id, did, created_at, last_seen, email, phone, kyc_verified,"
        " kyc_verified_at, status, user_id_hash)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)", [(*u, HASH[u[0]]) for u in USERS])
    await conn.executemany(
        "INSERT INTO credentials (id, user_id, issuer_id, credential_type, credential_jwt,"
        " issued_at, expires_at, status, user_id_hash)"
        " VALUES ($1, $2, $3, $4, 'secret.jwt.' || $1::uuid::text, $5, $6, $7, $8)",
        [(*c, HASH[c[1]]) for c in CREDENTIALS])
    await conn.executemany(
        "INSERT INTO payments (id, payer_did, payee_did, amount, currency, fee_amount,"
        " tax_amount, total_amount, status, created_at, authorized_at, captured_at, failed_at,"
        " payer_id_hash, payee_id_hash)"
        " VALUES ($1, 'did:example:alice', 'did:web:shop', $2::numeric, $3, $4::numeric, 0,"
        " $2::numeric + COALESCE($4::numeric, 0),"
        " $5, $6, $7, $8, $9, $10, $11)", [(*p, H1, SHOP) for p in PAYMENTS])
    await conn.executemany(
        "INSERT INTO audit_events (event_type, user_id_hash, ip_address, resource_type,"
        " resource_id, action, outcome, severity, correlation_id, created_at, occurred_at)"
        " VALUES ($1, $2, $3, $4, $5, 'X', $6, $7, $8, $9, $9)",
        sorted(AUDIT, key=lambda a: a[8]))  # committed in time order, as a real log is


@pytest.fixture(scope="module")
async def seeded_db(services: Services) -> AsyncIterator[str]:
    """A fresh database at the newest version holding the known data set, for this module.

    Shared by the tests (they only read, or write what is rebuilt identically: the rollup), so
    the module stays fast; dropped at the end.
    """
    async with scratch_database(services.database_url) as dsn:
        await migrate(dsn)
        conn = await asyncpg.connect(dsn)
        try:
            await _seed(conn)
        finally:
            await conn.close()
        yield dsn


@pytest.fixture
async def reporter(seeded_db: str) -> AsyncIterator[Any]:
    conn = await connect(seeded_db)
    yield conn
    await conn.close()


@pytest.fixture(scope="module")
async def ip_hash(seeded_db: str) -> Any:
    """The analyst's digest of an IP address, under this database's opaque key (V15)."""
    conn = await asyncpg.connect(seeded_db)
    try:
        key: bytes = await conn.fetchval("SELECT key FROM analyst_opaque_key")
    finally:
        await conn.close()

    def digest(ip: str) -> str:
        inner = hashlib.sha256(key + b"ip:" + ip.encode()).digest()
        return hashlib.sha256(key + inner).hexdigest()
    return digest


async def run(conn: Any, name: str, **options: str) -> list[tuple[Any, ...]]:
    report = BY_NAME[name]
    _, rows = await fetch(conn, report, resolve(report, dict(options), datetime.now(UTC)))
    return rows


# --- users ---------------------------------------------------------------------------------

async def test_users_kyc_verified_lists_the_window_oldest_first(reporter: Any) -> None:
    """Only users verified inside [from, to), in verification order, with their columns."""
    assert await run(reporter, "users-kyc-verified") == [
        (H4, "TERMINATED", ago(10), ago(20), ago(2)),
        (H1, "ACTIVE", ago(5), ago(100), ago(1)),
    ]
    rows = await run(reporter, "users-kyc-verified", **{"from": "-60d", "to": "-7d"})
    assert [r[0] for r in rows] == [H3, H4]


async def test_users_inactive_counts_never_seen_users_from_registration(reporter: Any) -> None:
    """Inactive = last_seen (else created_at) before --since, longest inactive first."""
    assert await run(reporter, "users-inactive") == [
        (H2, "ACTIVE", ago(120), ago(120), ago(200), False),
        (H5, "ACTIVE", ago(91), ago(91), ago(95), False),
    ]
    assert [r[0] for r in await run(reporter, "users-inactive", since="-30d",
                                    status="SUSPENDED")] == [H3]


async def test_users_search_by_pseudonym_only(reporter: Any) -> None:
    """A whole pseudonym (exact) or a prefix of >= 8 hex digits; never a DID, email or phone."""
    assert await run(reporter, "users-search", query=H1) == [
        (H1, "ACTIVE", True, ago(100), ago(1), True)]
    assert [(r[0], r[5]) for r in await run(reporter, "users-search",
                                            query="BBBBBBBB")] == [(H2, False)]
    for query in ("did:example:alice", "did:example:", "alice@example.com", "+491511234567",
                  "aaaa"):
        assert await run(reporter, "users-search", query=query) == [], query


async def test_users_stats_per_status_and_in_total(reporter: Any) -> None:
    """Counts, KYC rate and recent activity per status, then the ALL row."""
    assert await run(reporter, "users-stats") == [
        ("ACTIVE", 3, 1, D("0.3333"), 1, 0),
        ("SUSPENDED", 1, 1, D("1.0000"), 0, 0),
        ("TERMINATED", 1, 1, D("1.0000"), 1, 1),
        ("ALL", 5, 3, D("0.6000"), 2, 1),
    ]


# --- credentials ---------------------------------------------------------------------------

async def test_credentials_expired_by_date_or_status(reporter: Any) -> None:
    """Past expires_at whatever the status, or EXPIRED without a date; latest first."""
    assert await run(reporter, "credentials-expired") == [
        (C[4], H4, "did:web:iss-b", "ADDRESS", "VALID", ago(30), ago(1)),
        (C[1], H1, "did:web:iss-a", "KYC", "EXPIRED", ago(400), ago(35)),
        (C[5], H2, "did:web:iss-a", "KYC", "EXPIRED", ago(10), None),
    ]
    assert [r[0] for r in await run(reporter, "credentials-expired", limit="2")] == [C[4], C[1]]


async def test_credentials_expiring_within_days(reporter: Any) -> None:
    """VALID credentials whose expiry falls in the next --days, soonest first."""
    assert await run(reporter, "credentials-expiring") == [
        (C[7], H2, "did:web:iss-c", "AGE", ago(400), ago(-5)),
        (C[2], H1, "did:web:iss-a", "AGE", ago(100), ago(-10)),
    ]
    assert [r[0] for r in await run(reporter, "credentials-expiring", days="7")] == [C[7]]


async def test_credentials_renewal_by_expiry_or_age(reporter: Any) -> None:
    """Expiring (or overdue) and over-age VALID credentials, by the earlier deadline."""
    assert [(r[0], r[6], r[7]) for r in await run(reporter, "credentials-renewal")] == [
        (C[7], ago(35), "EXPIRING_AND_OLD"),
        (C[3], ago(15), "OLD"),
        (C[4], ago(1), "EXPIRING"),
        (C[2], ago(-10), "EXPIRING"),
    ]
    assert [r[0] for r in await run(reporter, "credentials-renewal", limit="1")] == [C[7]]


async def test_credentials_stats_by_status_type_and_issuer(reporter: Any) -> None:
    """One pass, three groupings; status breakdown inside each group."""
    assert await run(reporter, "credentials-stats") == [
        ("issuer", "did:web:iss-a", 4, 1, 0, 1, 2),
        ("issuer", "did:web:iss-b", 2, 2, 0, 0, 0),
        ("issuer", "did:web:iss-c", 1, 1, 0, 0, 0),
        ("status", "VALID", 4, 4, 0, 0, 0),
        ("status", "EXPIRED", 2, 0, 0, 0, 2),
        ("status", "REVOKED", 1, 0, 0, 1, 0),
        ("type", "KYC", 4, 1, 0, 1, 2),
        ("type", "AGE", 2, 2, 0, 0, 0),
        ("type", "ADDRESS", 1, 1, 0, 0, 0),
    ]


# --- payments ------------------------------------------------------------------------------

async def test_payments_attention_stuck_then_recent_failures(reporter: Any) -> None:
    """Stuck PENDING/AUTHORIZED past --stuck-hours, FAILED within --failed-hours."""
    rows = await run(reporter, "payments-attention")
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in rows] == [
        (P[4], "STUCK_PENDING", "PENDING", D("20.00"), "EUR"),
        (P[5], "STUCK_AUTHORIZED", "AUTHORIZED", D("40.00"), "USD"),
        (P[6], "FAILED_RECENTLY", "FAILED", D("60.00"), "EUR"),
    ]
    assert [r[0] for r in await run(reporter, "payments-attention", stuck_hours="72",
                                    failed_hours="100")] == [P[6], P[7]]


async def test_payments_analytics_per_day_status_currency(reporter: Any) -> None:
    """Counts and NUMERIC sums per UTC day, status and currency of created_at in the window."""
    expected: dict[tuple[Any, ...], list[Any]] = {}
    for _pid, amount, cur, fee, status, created, *_ in PAYMENTS:
        if created >= ago(30):
            key = (created.date(), status, cur)
            acc = expected.setdefault(key, [0, D(0), D(0)])
            acc[0] += 1
            acc[1] += amount
            acc[2] += amount + (fee or 0)
    rows = await run(reporter, "payments-analytics")
    assert rows == [(*k, *v) for k, v in sorted(expected.items())]
    assert all(isinstance(r[4], Decimal) for r in rows)
    eur = await run(reporter, "payments-analytics", currency="EUR")
    assert {r[2] for r in eur} == {"EUR"} and len(eur) == len([k for k in expected
                                                              if k[2] == "EUR"])


async def test_payments_captured_totals_per_currency(reporter: Any) -> None:
    """Only CAPTURED, by captured_at; a refunded payment no longer counts."""
    assert await run(reporter, "payments-captured") == [
        ("EUR", 2, D("350.50"), D("3.50"), D("0.00"), D("354.00")),
        ("USD", 1, D("15000.00"), D("100.00"), D("0.00"), D("15100.00")),
    ]
    assert await run(reporter, "payments-captured", **{"from": "-60d"}, currency="GBP") == []


async def test_payments_high_value_over_threshold(reporter: Any) -> None:
    """amount >= --threshold in the window, largest first, optionally one currency."""
    rows = await run(reporter, "payments-high-value")
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [(P[3], D("15000.00"), "USD", "CAPTURED")]
    rows = await run(reporter, "payments-high-value", **{"from": "-60d"})
    assert [r[0] for r in rows] == [P[3], P[8]]
    rows = await run(reporter, "payments-high-value", **{"from": "-60d"}, currency="GBP",
                     threshold="11999.99")
    assert [r[0] for r in rows] == [P[8]]


# --- audit ---------------------------------------------------------------------------------

async def test_audit_suspicious_failures_rejections_and_ip_bursts(reporter: Any, ip_hash: Any
                                                                 ) -> None:
    """>= 5 failed logins for one user, REJECTED outcomes, >= 30 events from one IP in a minute
    (the IP as its opaque digest)."""
    burst = [BURST_START + timedelta(seconds=i / 2) for i in range(35)]
    assert await run(reporter, "audit-suspicious") == [
        ("IP_BURST", ip_hash("198.51.100.7"), 35, 0, burst[0], burst[-1]),
        ("LOGIN_FAILURES", H2, 6, 1, ago(hours=2), ago(hours=2, minutes=-5)),
        ("REJECTED", H1, 1, 1, ago(hours=1), ago(hours=1)),
    ]
    rows = await run(reporter, "audit-suspicious", min_failures="4", burst_per_minute="36")
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("LOGIN_FAILURES", H2, 6), ("LOGIN_FAILURES", H1, 4), ("REJECTED", H1, 1)]


def _expected_compliance(start: datetime, end: datetime) -> list[tuple[Any, ...]]:
    counts = Counter((a[0], a[6], a[5]) for a in AUDIT if start <= a[8] < end)
    return [(*k, n) for k, n in sorted(counts.items())]


async def test_audit_compliance_is_exact_with_or_without_the_rollup(seeded_db: str) -> None:
    """Counts by type/severity/outcome agree live, after a refresh, and for partial-day edges."""
    windows = [(ago(30), NOW + timedelta(minutes=5)), (ago(2, hours=12), ago(hours=1.5)),
               (ago(1000), NOW + timedelta(minutes=5)), (ago(hours=2.5), ago(hours=1.9))]
    conn = await connect(seeded_db)
    admin = await asyncpg.connect(seeded_db)
    try:
        for refreshed in (False, True):
            if refreshed:
                await admin.fetch("SELECT * FROM analyst.refresh_rollups(true)")
                assert await admin.fetchval("SELECT sum(events) FROM analyst.audit_daily") == len(
                    [a for a in AUDIT if a[8] < datetime.now(UTC).replace(
                        hour=0, minute=0, second=0, microsecond=0)])
            for start, end in windows:
                rows = await run(conn, "audit-compliance", **{"from": start.isoformat(),
                                                             "to": end.isoformat()})
                assert rows == _expected_compliance(start, end), (refreshed, start, end)
        # An incremental refresh recomputes only the last covered day onwards: same answer.
        result = await admin.fetchrow("SELECT * FROM analyst.refresh_rollups()")
        assert result["days_recomputed"] == 1
        assert await run(conn, "audit-compliance", **{"from": "-1000d"}) == \
            _expected_compliance(ago(1000), NOW + timedelta(minutes=5))
    finally:
        await conn.close()
        await admin.close()


async def test_audit_suspicious_bursts_agree_live_and_from_the_rollup(seeded_db: str,
                                                                     ip_hash: Any) -> None:
    """IP bursts over whole days from analyst.ip_bursts equal the live answer; below its floor
    (10 per minute) the report counts live."""
    windows = [{"from": "-7d"}, {"from": "-7d", "burst_per_minute": "12"},
               {"from": "-7d", "burst_per_minute": "5"},
               {"from": (OLD_BURST + timedelta(seconds=7)).isoformat(), "burst_per_minute": "3"}]
    conn = await connect(seeded_db)
    admin = await asyncpg.connect(seeded_db)
    try:
        await admin.execute("DELETE FROM analyst.rollup_state")  # no coverage: all live
        live = [await run(conn, "audit-suspicious", **w) for w in windows]
        await admin.fetch("SELECT * FROM analyst.refresh_rollups(true)")
        assert await admin.fetchval("SELECT events FROM analyst.ip_bursts WHERE ip_hash = $1",
                                    ip_hash("198.51.100.8")) == 12
        assert [await run(conn, "audit-suspicious", **w) for w in windows] == live
    finally:
        await conn.close()
        await admin.close()
    old = ("IP_BURST", ip_hash("198.51.100.8"), 12, 12, OLD_BURST,
           OLD_BURST + timedelta(seconds=22))
    assert old not in live[0] and old in live[1] and old in live[2]
    assert ("IP_BURST", ip_hash("198.51.100.8"), 8, 8, OLD_BURST + timedelta(seconds=8),
            OLD_BURST + timedelta(seconds=22)) in live[3]  # a window starting mid-minute


async def test_audit_user_timeline_in_recording_order(reporter: Any) -> None:
    """One user_id_hash's rows in created_at order, limited and windowed."""
    rows = await run(reporter, "audit-user-timeline", user_hash=H1)
    expected = sorted((a[8], a[0]) for a in AUDIT if a[1] == H1)
    assert [(r[0], r[2]) for r in rows] == expected
    rows = await run(reporter, "audit-user-timeline", user_hash=H1, limit="2",
                     **{"from": "-1d"})
    assert [r[2] for r in rows] == ["AUTH_LOGIN_FAILED", "AUTH_LOGIN_FAILED"]


async def test_audit_correlation_trail_joins_the_rows_it_touched(reporter: Any) -> None:
    """Payment and credential rows by resource id, the user by pseudonym; sessions and bad ids
    join nothing; no DID anywhere."""
    rows = await run(reporter, "audit-correlation-trail", correlation_id="chk-1")
    assert [(r[2], r[7], r[9], r[10], r[11], r[12], r[13]) for r in rows] == [
        ("PAYMENT_INITIATED", "PAYMENT", True, "CAPTURED", D("100.00"), "EUR", None),
        ("PAYMENT_AUTHORIZED", "PAYMENT", True, "CAPTURED", D("100.00"), "EUR", None),
        ("USER_SEEN", "USER", True, "ACTIVE", None, None, None),
        ("CREDENTIAL_ISSUED", "CREDENTIAL", True, "VALID", None, None, "AGE"),
        ("AUTH_LOGIN_SUCCEEDED", "SESSION", False, None, None, None, None),
        ("PAYMENT_CAPTURED", "PAYMENT", True, "CAPTURED", D("100.00"), "EUR", None),
        ("PAYMENT_CAPTURED", "PAYMENT", False, None, None, None, None),
    ]
    assert {r[6] for r in rows} == {H1}
    assert rows[2][8] == H1  # a USER resource is named by its pseudonym, not users.id
    assert all(len(r) == 15 for r in rows)  # no did column any more
    assert await run(reporter, "audit-correlation-trail", correlation_id="nope") == []


# --- the role ------------------------------------------------------------------------------

async def _as_analyst(dsn: str) -> Any:
    conn = await asyncpg.connect(dsn, server_settings={"TimeZone": "UTC"})
    await conn.execute("SET ROLE finpass_analyst")
    return conn


async def test_analyst_role_reads_only_the_pseudonymous_views(seeded_db: str) -> None:
    """Every base table is refused (V15); the analyst views hold the rows, by pseudonym."""
    conn = await _as_analyst(seeded_db)
    try:
        for sql in ("SELECT email FROM users", "SELECT did FROM users", "SELECT id FROM users",
                    "SELECT credential_jwt FROM credentials", "SELECT id FROM credentials",
                    "SELECT status FROM credential_status", "SELECT amount FROM payments",
                    "SELECT event_type FROM audit_events", "SELECT key FROM analyst_opaque_key",
                    "SELECT raw_value FROM dead_letter_events"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                await conn.fetch(sql)
        assert await conn.fetchval("SELECT count(*) FROM analyst.users") == 5
        assert await conn.fetchval("SELECT count(*) FROM analyst.users WHERE has_email") == 2
        assert await conn.fetchval("SELECT count(*) FROM analyst.credentials") == 7
        assert await conn.fetchval("SELECT count(*) FROM analyst.audit_events") == len(AUDIT)
        assert await conn.fetchval("SELECT sum(amount) FROM analyst.payments") > 0
        # Joins across users, payments and audit work by pseudonym.
        assert await conn.fetchval(
            "SELECT count(*) FROM analyst.payments p JOIN analyst.users u"
            " ON u.user_id_hash = p.payer_id_hash") == len(PAYMENTS)
        assert await conn.fetchval(
            "SELECT count(*) FROM analyst.audit_events a JOIN analyst.users u"
            " USING (user_id_hash)") == len([a for a in AUDIT if a[1] in (H1, H2)])
    finally:
        await conn.close()


async def test_analyst_role_runs_every_report_but_writes_nothing(seeded_db: str) -> None:
    """Every report works as finpass_analyst; INSERT/UPDATE/DELETE/TRUNCATE/CREATE are refused."""
    conn = await _as_analyst(seeded_db)
    try:
        samples = {"query": H1, "user_hash": H1, "correlation_id": "chk-1"}
        for report in REPORTS:
            given = {p.name: samples[p.name] for p in report.params if p.required}
            args = resolve(report, dict(given), datetime.now(UTC))
            await conn.fetch(report.sql, *args)
        search = await conn.fetch("SELECT * FROM analyst.search_users($1)", H1)
        assert [r["user_id_hash"] for r in search] == [H1]
        tables = await conn.fetch(
            "SELECT format('%I.%I', n.nspname, c.relname) AS name, c.relkind::text AS kind,"
            " (SELECT attname FROM pg_attribute WHERE attrelid = c.oid AND attnum = 1) AS col"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname IN ('public', 'analyst') AND c.relkind IN ('r', 'p', 'v')")
        assert len(tables) >= 12
        for t in tables:
            writes = [f"INSERT INTO {t['name']} DEFAULT VALUES",
                      f"UPDATE {t['name']} SET {t['col']} = {t['col']}",
                      f"DELETE FROM {t['name']}"]
            if t["kind"] != "v":  # a view cannot be truncated by anyone
                writes.append(f"TRUNCATE {t['name']}")
            # A join view is not updatable by anyone: refused before privileges are checked.
            refusals: tuple[type[Exception], ...] = (asyncpg.InsufficientPrivilegeError,) + (
                (asyncpg.ObjectNotInPrerequisiteStateError,) if t["kind"] == "v" else ())
            for sql in writes:
                with pytest.raises(refusals):
                    await conn.execute(sql)
        for sql in ("SELECT analyst.refresh_rollups()", "CREATE TABLE analyst.x (i int)",
                    "CREATE TABLE public.x (i int)"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(sql)
    finally:
        await conn.close()


# --- the command line ----------------------------------------------------------------------


def test_cli_csv_is_the_default_when_piped(seeded_db: str, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Header row, NUMERIC with every digit, one line per row."""
    code, out, _ = report_cli(capsys, monkeypatch, seeded_db, "payments-captured")
    assert code == 0
    assert out == ("currency,payments,amount,fees,taxes,total_amount\n"
                   "EUR,2,350.50,3.50,0.00,354.00\nUSD,1,15000.00,100.00,0.00,15100.00\n")
    code, out, _ = report_cli(capsys, monkeypatch, seeded_db,
                              "credentials-expired", "--format", "csv")
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[1] == [str(C[4]), H4, "did:web:iss-b", "ADDRESS", "VALID",
                       ago(30).isoformat(), ago(1).isoformat()]
    assert rows[3][-1] == ""  # NULL


def test_cli_json_keeps_decimals_as_strings_and_iso_times(
        seeded_db: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An array of objects; money as strings, timestamps ISO 8601 with offset, NULL as null."""
    code, out, _ = report_cli(capsys, monkeypatch, seeded_db,
                              "payments-captured", "--format", "json")
    assert code == 0
    assert json.loads(out) == [
        {"currency": "EUR", "payments": 2, "amount": "350.50", "fees": "3.50", "taxes": "0.00",
         "total_amount": "354.00"},
        {"currency": "USD", "payments": 1, "amount": "15000.00", "fees": "100.00",
         "taxes": "0.00", "total_amount": "15100.00"}]
    code, out, _ = report_cli(capsys, monkeypatch, seeded_db,
                              "credentials-expired", "--format", "json")
    last = json.loads(out)[-1]
    assert last["expires_at"] is None and last["issued_at"] == ago(10).isoformat()
    code, out, _ = report_cli(capsys, monkeypatch, seeded_db, "users-search", "--query", "nobody",
                        "--format", "json")
    assert json.loads(out) == []


def test_cli_table_is_aligned(seeded_db: str, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """--format table draws one aligned table with a header and a row count."""
    code, out, _ = report_cli(capsys, monkeypatch, seeded_db,
                              "payments-captured", "--format", "table")
    assert code == 0
    lines = [line for line in out.splitlines() if "│" in line or "┃" in line]
    assert len(lines) == 3 and len({len(line) for line in lines}) == 1
    assert "total_amount" in lines[0] and "15100.00" in lines[2] and "2 row(s)" in out


# --- the migration -------------------------------------------------------------------------

_CATALOG = {
    "namespaces": "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%'"
                  " AND nspname <> 'information_schema' ORDER BY 1",
    "relations": "SELECT n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n"
                 " ON n.oid = c.relnamespace WHERE n.nspname IN ('public', 'analyst')"
                 " ORDER BY 1, 2",
    "indexes": "SELECT schemaname, indexname, indexdef FROM pg_indexes"
               " WHERE schemaname IN ('public', 'analyst') ORDER BY 1, 2",
    "functions": "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n"
                 " ON n.oid = p.pronamespace WHERE n.nspname IN ('public', 'analyst') ORDER BY 1",
    # Effective privileges: a NULL ACL and its explicit default compare equal.
    "table_acl": "SELECT c.relname, a.grantee::regrole::text, a.privilege_type"
                 " FROM pg_class c, aclexplode(COALESCE(c.relacl, acldefault('r', c.relowner))) a"
                 " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v')"
                 " ORDER BY 1, 2, 3",
    "column_acl": "SELECT c.relname, t.attname, a.grantee::regrole::text, a.privilege_type"
                  " FROM pg_attribute t JOIN pg_class c ON c.oid = t.attrelid,"
                  " aclexplode(t.attacl) a WHERE c.relnamespace = 'public'::regnamespace"
                  " ORDER BY 1, 2, 3, 4",
}


async def _catalog(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    conn = await asyncpg.connect(dsn)
    try:
        return {k: [tuple(r) for r in await conn.fetch(q)] for k, q in _CATALOG.items()}
    finally:
        await conn.close()


async def test_v10_then_u10_leaves_the_schema_and_privileges_as_before(fresh_db: str) -> None:
    """Objects, indexes, functions and effective privileges after U10 equal those before V10."""
    below = max(v for v in await migrate(fresh_db) if v < 10)
    await rollback(fresh_db, to=below)
    before = await _catalog(fresh_db)
    await migrate(fresh_db, target=10)
    during = await _catalog(fresh_db)
    assert ("analyst",) in during["namespaces"] and len(during["functions"]) > len(
        before["functions"])
    assert ("users", "did", "finpass_analyst", "SELECT") in during["column_acl"]
    assert await rollback(fresh_db, to=below) == [10]
    assert await _catalog(fresh_db) == before
    conn = await asyncpg.connect(fresh_db)
    try:  # the role outlives the rollback (cluster-wide), holding nothing in this database
        assert await conn.fetchval("SELECT count(*) FROM pg_roles WHERE rolname ="
                                   " 'finpass_analyst'") == 1
        assert not await conn.fetchval(
            "SELECT has_any_column_privilege('finpass_analyst', 'users', 'SELECT')")
    finally:
        await conn.close()


async def test_v15_then_u15_leaves_the_schema_and_privileges_as_before(fresh_db: str) -> None:
    """U15 restores V10/V12's analyst surface exactly: objects, indexes, functions (with their
    result types) and effective privileges, the analyst's column grants included."""
    await migrate(fresh_db, target=14)
    before = await _catalog(fresh_db)
    conn = await asyncpg.connect(fresh_db)
    try:
        results = "SELECT p.oid::regprocedure::text, pg_get_function_result(p.oid) FROM pg_proc p"\
                  " WHERE p.pronamespace = 'analyst'::regnamespace ORDER BY 1"
        results_before = await conn.fetch(results)
        await migrate(fresh_db, target=15)
        during = await _catalog(fresh_db)
        assert ("users", "did", "finpass_analyst", "SELECT") not in during["column_acl"]
        assert not await conn.fetchval(
            "SELECT has_any_column_privilege('finpass_analyst', 'users', 'SELECT')")
        assert await rollback(fresh_db, to=14) == [15]
        assert await _catalog(fresh_db) == before
        assert await conn.fetch(results) == results_before
    finally:
        await conn.close()


async def test_runner_applies_v10_after_a_gap_and_undoes_it(fresh_db: str, tmp_path: Path
                                                            ) -> None:
    """Versions 4..9 may be absent: V1-V3 then V10 apply in order; U10 alone undoes it."""
    schema = tmp_path / "schema"
    schema.mkdir()
    for name in ("V1__init.sql", "V2__production_schema.sql", "U2__production_schema.sql",
                 "V3__pipeline.sql", "U3__pipeline.sql", "V10__analyst_surface.sql",
                 "U10__analyst_surface.sql"):
        shutil.copy(SCHEMA_DIR / name, schema / name)
    assert await migrate(fresh_db, schema_dir=schema) == [1, 2, 3, 10]
    assert await rollback(fresh_db, to=3, schema_dir=schema) == [10]
    assert await migrate(fresh_db, schema_dir=schema) == [10]


# --- the data generator --------------------------------------------------------------------

async def test_datagen_loads_exact_counts_of_consistent_rows(fresh_db: str) -> None:
    """Exact row counts, valid indexes, audit rows that name real rows; a second load refused."""
    await migrate(fresh_db)
    sizes = Sizes(users=300, credentials=600, payments=600, audit=6000, days=60)
    result = await generate(fresh_db, sizes, b"test-key", "k1", seed=7)
    assert result.rows["audit_events"] == 6000 and result.rows["users"] == 300
    conn = await asyncpg.connect(fresh_db)
    try:
        counts = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM users) AS u, (SELECT count(*) FROM credentials) AS c,"
            " (SELECT count(*) FROM credential_status) AS s, (SELECT count(*) FROM payments) AS p,"
            " (SELECT count(*) FROM audit_events) AS a")
        assert tuple(counts) == (300, 600, 600, 600, 6000)
        assert await conn.fetchval("SELECT count(*) FROM pg_index WHERE NOT indisvalid") == 0
        orphans = await conn.fetchval(
            "SELECT count(*) FROM audit_events a WHERE (a.resource_type = 'PAYMENT' AND NOT"
            " EXISTS (SELECT 1 FROM payments p WHERE p.id::text = a.resource_id)) OR"
            " (a.resource_type = 'CREDENTIAL' AND NOT EXISTS (SELECT 1 FROM credentials c"
            " WHERE c.id::text = a.resource_id)) OR (a.resource_type = 'USER' AND NOT EXISTS"
            " (SELECT 1 FROM users u WHERE u.id::text = a.resource_id))")
        assert orphans == 0
        pairs = await conn.fetch(
            "SELECT u.did, a.user_id_hash FROM users u JOIN audit_events a"
            " ON a.resource_id = u.id::text AND a.event_type = 'USER_REGISTERED'")
        assert len(pairs) == 300 and all(
            h == hmac.new(b"test-key", d.encode(), hashlib.sha256).hexdigest() for d, h in pairs)
        assert await conn.fetchval(  # each payment's status has its audit event, in the past
            "SELECT count(*) FROM payments p WHERE (p.status <> 'PENDING' AND NOT EXISTS"
            " (SELECT 1 FROM audit_events a WHERE a.resource_id = p.id::text"
            " AND a.event_type = 'PAYMENT_' || p.status AND a.outcome = 'SUCCESS'))"
            " OR GREATEST(p.authorized_at, p.captured_at, p.failed_at, p.refunded_at) > now()"
        ) == 0
        assert await conn.fetchval(  # last_seen is the latest login/seen event of each user
            "SELECT count(*) FROM users u WHERE u.last_seen < (SELECT max(a.created_at) - "
            " interval '2 seconds' FROM audit_events a WHERE a.resource_id = u.id::text"
            " AND a.event_type = 'USER_SEEN')") == 0
    finally:
        await conn.close()
    with pytest.raises(DatagenError, match="not empty"):
        await generate(fresh_db, sizes, b"test-key", "k1")


async def test_audit_listings_are_in_commit_order_not_by_id(fresh_db: str) -> None:
    """Rows committed together share created_at: listings follow the commit (audit_seq), not
    the random row id (CONTRACT.md §5 "Audit order"). Ids are chosen descending here, so an
    ORDER BY created_at, id would list them backwards."""
    await migrate(fresh_db)
    conn = await asyncpg.connect(fresh_db)
    try:
        if await conn.fetchval("SELECT to_regproc('audit_ensure_partitions')") is not None:
            await conn.execute("SELECT audit_ensure_partitions(0, $1, now())", ago(10))
        at = ago(1)
        rows = [(UUID(int=(15 - i) << 120), f"step-{i}") for i in range(12)]
        await conn.executemany(
            "INSERT INTO audit_events (id, event_type, user_id_hash, resource_type, action,"
            " outcome, severity, correlation_id, description, created_at, occurred_at)"
            " VALUES ($1, 'USER_SEEN', $3, 'USER', 'X', 'SUCCESS', 'INFO', 'one-batch', $2,"
            " $4, $4)", [(i, d, H1, at) for i, d in rows])
        timeline = await conn.fetch("SELECT description FROM analyst.user_timeline($1)", H1)
        assert [r["description"] for r in timeline] == [d for _, d in rows]
        trail = await conn.fetch("SELECT event_type FROM analyst.correlation_trail('one-batch')")
        assert len(trail) == len(rows)
        ordered = await conn.fetch("SELECT id FROM audit_events ORDER BY audit_seq")
        assert [r["id"] for r in ordered] == [i for i, _ in rows]
    finally:
        await conn.close()
