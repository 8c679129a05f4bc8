"""Schema migrations against a real PostgreSQL: the seed's schema, data migration, undo, locking.

Every test gets a brand-new database (`fresh_db`). Tests of the runner itself use a private copy
of V1/V2/U2 (`schema_copy`), so they can edit files and do not depend on later V3+ scripts.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from finpass_pipeline.dev.index_cost import SEED_INDEXES as COST_SEED_INDEXES
from finpass_pipeline.migrations import (
    ADVISORY_LOCK_KEY,
    SCHEMA_DIR,
    MigrationError,
    migrate,
    rollback,
    status,
)
from tests.support import REPO_ROOT

TS = "timestamp with time zone"  # the seed's TIMESTAMP, as decided in V2's header
NOW = "CURRENT_TIMESTAMP"
UUID_DEFAULT = "gen_random_uuid()"


def vc(n: int) -> str:
    return f"character varying({n})"


# The seed's DDL (M1.7 "Enhanced Tables"), column by column: (name, type, NOT NULL, default).
# Defaults are written as PostgreSQL prints them, minus a trailing `::character varying`.
SEED_COLUMNS: dict[str, list[tuple[str, str, bool, str | None]]] = {
    "users": [
        ("id", "uuid", True, UUID_DEFAULT),
        ("did", "text", True, None),
        ("created_at", TS, True, NOW),
        ("last_seen", TS, False, None),
        ("email", vc(255), False, None),
        ("phone", vc(50), False, None),
        ("kyc_verified", "boolean", True, "false"),
        ("kyc_verified_at", TS, False, None),
        ("status", vc(20), True, "'ACTIVE'"),
        ("metadata", "text", False, None),
        ("updated_at", TS, True, NOW),
    ],
    "credentials": [
        ("id", "uuid", True, UUID_DEFAULT),
        ("user_id", "uuid", True, None),
        ("issuer_id", "text", True, None),
        ("credential_type", "text", True, None),
        ("credential_jwt", "text", True, None),
        ("issued_at", TS, True, NOW),
        ("expires_at", TS, False, None),
        ("status", vc(20), True, "'VALID'"),
        ("revoked_at", TS, False, None),
        ("revocation_handle", vc(255), False, None),
        ("revocation_reason", vc(100), False, None),
        ("revoked_by", vc(255), False, None),
        ("credential_hash", vc(255), False, None),
        ("nonce", vc(255), False, None),
        ("subject_did", vc(255), False, None),
        ("verification_method", vc(100), False, None),
        ("proof_type", vc(50), False, None),
        ("proof_created_at", TS, False, None),
        ("proof_purpose", vc(50), False, None),
        ("metadata", "text", False, None),
        ("created_at", TS, True, NOW),
        ("updated_at", TS, True, NOW),
    ],
    "payments": [
        ("id", "uuid", True, UUID_DEFAULT),
        ("payer_did", "text", True, None),
        ("payee_did", "text", True, None),
        ("amount", "numeric(18,2)", True, None),
        ("currency", vc(3), True, "'USD'"),
        ("status", vc(20), True, "'PENDING'"),
        ("payment_type", vc(20), True, "'ONE_TIME'"),
        ("kyc_decision_token", vc(500), False, None),
        ("payment_method", vc(50), False, None),
        ("transaction_id", vc(255), False, None),
        ("reference_id", vc(255), False, None),
        ("description", vc(500), False, None),
        ("fee_amount", "numeric(18,2)", False, None),
        ("tax_amount", "numeric(18,2)", False, None),
        ("total_amount", "numeric(18,2)", False, None),
        ("authorized_at", TS, False, None),
        ("captured_at", TS, False, None),
        ("failed_at", TS, False, None),
        ("refunded_at", TS, False, None),
        ("failure_reason", vc(500), False, None),
        ("refund_reason", vc(500), False, None),
        ("metadata", "text", False, None),
        ("created_at", TS, True, NOW),
        ("updated_at", TS, True, NOW),
        ("completed_at", TS, False, None),
    ],
    "audit_events": [
        ("id", "uuid", True, UUID_DEFAULT),
        ("event_type", vc(50), True, None),
        ("user_id_hash", vc(64), False, None),
        ("session_id", vc(255), False, None),
        ("ip_address", vc(45), False, None),
        ("user_agent", vc(500), False, None),
        ("tenant_id", vc(255), False, None),
        ("resource_id", vc(255), False, None),
        ("resource_type", vc(100), False, None),
        ("action", vc(100), False, None),
        ("outcome", vc(20), False, None),
        ("severity", vc(20), False, "'INFO'"),
        ("description", vc(1000), False, None),
        ("details", "text", False, None),
        ("previous_values", "text", False, None),
        ("new_values", "text", False, None),
        ("performed_by", vc(255), False, None),
        ("performed_by_role", vc(100), False, None),
        ("source_system", vc(100), False, None),
        ("correlation_id", vc(255), False, None),
        ("request_id", vc(255), False, None),
        ("duration_ms", "bigint", False, None),
        ("error_code", vc(100), False, None),
        ("error_message", vc(1000), False, None),
        ("stack_trace", "text", False, None),
        ("client_version", vc(50), False, None),
        ("api_version", vc(50), False, None),
        ("geolocation", vc(255), False, None),
        ("device_fingerprint", vc(255), False, None),
        ("compliance_flags", vc(255), False, None),
        ("retention_days", "integer", False, None),
        ("created_at", TS, True, NOW),
    ],
}

# The seed's PRIMARY KEY / UNIQUE / REFERENCES clauses.
SEED_CONSTRAINTS = {
    ("users", "PRIMARY KEY (id)"),
    ("users", "UNIQUE (did)"),
    ("credentials", "PRIMARY KEY (id)"),
    ("credentials", "FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE"),
    ("credentials", "UNIQUE (credential_hash)"),
    ("payments", "PRIMARY KEY (id)"),
    ("payments", "UNIQUE (transaction_id)"),
    ("audit_events", "PRIMARY KEY (id)"),
}

# The seed's index list: name -> (table, column).
SEED_INDEXES = {
    "idx_users_did": ("users", "did"),
    "idx_users_status": ("users", "status"),
    "idx_users_kyc_verified": ("users", "kyc_verified"),
    "idx_users_last_seen": ("users", "last_seen"),
    "idx_credentials_user_id": ("credentials", "user_id"),
    "idx_credentials_status": ("credentials", "status"),
    "idx_credentials_issuer_id": ("credentials", "issuer_id"),
    "idx_credentials_expires_at": ("credentials", "expires_at"),
    "idx_credentials_revocation_handle": ("credentials", "revocation_handle"),
    "idx_credentials_credential_hash": ("credentials", "credential_hash"),
    "idx_payments_payer_did": ("payments", "payer_did"),
    "idx_payments_payee_did": ("payments", "payee_did"),
    "idx_payments_status": ("payments", "status"),
    "idx_payments_transaction_id": ("payments", "transaction_id"),
    "idx_payments_created_at": ("payments", "created_at"),
    "idx_audit_events_event_type": ("audit_events", "event_type"),
    "idx_audit_events_created_at": ("audit_events", "created_at"),
    "idx_audit_events_user_id_hash": ("audit_events", "user_id_hash"),
    "idx_audit_events_severity": ("audit_events", "severity"),
    "idx_audit_events_correlation_id": ("audit_events", "correlation_id"),
}


@pytest.fixture
def schema_copy(tmp_path: Path) -> Path:
    """A private copy of V1, V2 and U2 that a test may edit."""
    directory = tmp_path / "schema"
    directory.mkdir()
    for name in ("V1__init.sql", "V2__production_schema.sql", "U2__production_schema.sql"):
        shutil.copy(SCHEMA_DIR / name, directory / name)
    return directory


async def _columns(conn: Any, table: str) -> list[tuple[str, str, bool, str | None]]:
    rows = await conn.fetch(
        """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid) AS default
        FROM pg_attribute a
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum
        """,
        table,
    )
    return [
        (
            r["attname"],
            r["type"],
            r["attnotnull"],
            r["default"].removesuffix("::character varying") if r["default"] else None,
        )
        for r in rows
    ]


async def _catalog(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    """Everything in schema `public` that a migration can change, in a comparable form."""
    queries = {
        "relations": "SELECT relname, relkind FROM pg_class"
        " WHERE relnamespace = 'public'::regnamespace ORDER BY 1",
        "columns": """
            SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod),
                   a.attnotnull, pg_get_expr(d.adbin, d.adrelid)
            FROM pg_attribute a
            JOIN pg_class c ON c.oid = a.attrelid
            LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
              AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY 1, 2""",
        "constraints": "SELECT conrelid::regclass::text, conname, contype,"
        " pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2",
        "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes"
        " WHERE schemaname = 'public' ORDER BY 1, 2",
        "triggers": "SELECT tgrelid::regclass::text, tgname FROM pg_trigger"
        " WHERE NOT tgisinternal ORDER BY 1, 2",
        "functions": "SELECT proname FROM pg_proc"
        " WHERE pronamespace = 'public'::regnamespace ORDER BY 1",
    }
    conn = await asyncpg.connect(dsn)
    try:
        return {k: [tuple(r) for r in await conn.fetch(q)] for k, q in queries.items()}
    finally:
        await conn.close()


async def _seed_v1(conn: Any) -> dict[str, Any]:
    """V1 rows: two users, three credentials, two of which already have a status row."""
    created = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    alice = await conn.fetchval(
        "INSERT INTO users (did, created_at) VALUES ('did:example:alice', $1) RETURNING id", created
    )
    bob = await conn.fetchval("INSERT INTO users (did) VALUES ('did:example:bob') RETURNING id")
    jwts = ["eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln", "eyJhbGciOiJFUzI1NiJ9.eyJiIjoxfQ.c2lnMg",
            "not-a-jwt\\with a backslash \u00e9"]  # TEXT allows it; the hash must still work
    creds = []
    for user, jwt in zip((alice, alice, bob), jwts, strict=True):
        creds.append(await conn.fetchval(
            "INSERT INTO credentials (user_id, issuer_id, credential_type, credential_jwt,"
            " issued_at, created_at) VALUES ($1, 'did:example:issuer', 'KYC', $2, $3, $3)"
            " RETURNING id",
            user, jwt, created,
        ))
    await conn.execute(
        "INSERT INTO credential_status (credential_id, status)"
        " VALUES ($1, 'VALID'), ($2, 'REVOKED')",
        creds[0], creds[1],
    )
    return {"users": [alice, bob], "credentials": creds, "jwts": jwts, "created": created}


async def _rows(conn: Any, table: str, columns: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await conn.fetch(f"SELECT {columns} FROM {table} ORDER BY 1")]


V1_ROWS = {
    "users": "id, did, created_at",
    "credentials": "id, user_id, issuer_id, credential_type, credential_jwt, issued_at, created_at",
    "credential_status": "credential_id, id, status, created_at, updated_at",
}


async def test_fresh_migrate_builds_every_seed_column_constraint_and_index(fresh_db: str) -> None:
    """V1+V2 on an empty database give exactly the seed's tables, columns, keys and 20 indexes."""
    assert await migrate(fresh_db, target=2) == [1, 2]
    conn = await asyncpg.connect(fresh_db)
    try:
        for table, expected in SEED_COLUMNS.items():
            # By name: ALTER TABLE appends V2's columns after V1's, so the order differs.
            actual = {c[0]: c for c in await _columns(conn, table)}
            assert actual == {c[0]: c for c in expected}, table

        constraints = {
            (r[0], r[1]) for r in await conn.fetch(
                "SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint"
                " WHERE connamespace = 'public'::regnamespace AND contype IN ('p', 'u', 'f')"
            )
        }
        assert constraints >= SEED_CONSTRAINTS

        indexes = {
            r["name"]: (r["table"], list(r["columns"])) for r in await conn.fetch(
                """
                SELECT i.relname AS name, t.relname AS table,
                       array_agg(a.attname ORDER BY k.ord) AS columns
                FROM pg_index x
                JOIN pg_class i ON i.oid = x.indexrelid
                JOIN pg_class t ON t.oid = x.indrelid
                CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, ord)
                JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
                WHERE i.relname LIKE 'idx\\_%'
                GROUP BY i.relname, t.relname
                """
            )
        }
        assert indexes == {name: (t, [c]) for name, (t, c) in SEED_INDEXES.items()}
    finally:
        await conn.close()


async def test_status_columns_reject_values_outside_their_enum(fresh_db: str) -> None:
    """The named CHECK constraints refuse unknown statuses, payment types and severities."""
    await migrate(fresh_db, target=2)
    conn = await asyncpg.connect(fresh_db)
    try:
        user = await conn.fetchval("INSERT INTO users (did) VALUES ('did:x') RETURNING id")
        bad = {
            "ck_users_status": "UPDATE users SET status = 'DELETED'",
            "ck_credentials_status": "INSERT INTO credentials (user_id, issuer_id,"
            f" credential_type, credential_jwt, status) VALUES ('{user}', 'i', 't', 'j', 'GONE')",
            "ck_payments_status": "INSERT INTO payments (payer_did, payee_did, amount, status)"
            " VALUES ('a', 'b', 1, 'SETTLED')",
            "ck_payments_payment_type": "INSERT INTO payments (payer_did, payee_did, amount,"
            " payment_type) VALUES ('a', 'b', 1, 'INSTALMENT')",
            "ck_audit_events_severity": "INSERT INTO audit_events (event_type, severity)"
            " VALUES ('X', 'DEBUG')",
        }
        for name, sql in bad.items():
            with pytest.raises(asyncpg.CheckViolationError) as caught:
                await conn.execute(sql)
            assert caught.value.constraint_name == name
        await conn.execute("INSERT INTO audit_events (event_type, severity) VALUES ('X', NULL)")
    finally:
        await conn.close()


async def test_v2_keeps_v1_rows_and_initialises_new_columns(fresh_db: str) -> None:
    """V1 rows survive V2 with the seed's initial values and one credential_status row each."""
    await migrate(fresh_db, target=1)
    conn = await asyncpg.connect(fresh_db)
    try:
        seeded = await _seed_v1(conn)
        before = {t: await _rows(conn, t, c) for t, c in V1_ROWS.items()}
        started = await conn.fetchval("SELECT clock_timestamp()")
        assert await migrate(fresh_db, target=2) == [2]
        finished = await conn.fetchval("SELECT clock_timestamp()")

        for table, columns in V1_ROWS.items():
            after = await _rows(conn, table, columns)
            assert set(before[table]) <= set(after), table
        assert len(await _rows(conn, "users", "id")) == 2
        assert len(await _rows(conn, "credentials", "id")) == 3

        for user in await conn.fetch("SELECT * FROM users"):
            assert user["status"] == "ACTIVE"
            assert user["kyc_verified"] is False
            assert started <= user["updated_at"] <= finished
            for column in ("last_seen", "email", "phone", "kyc_verified_at", "metadata"):
                assert user[column] is None

        creds = {r["id"]: r for r in await conn.fetch("SELECT * FROM credentials")}
        first, revoked, third = seeded["credentials"]
        for cred_id, jwt in zip(seeded["credentials"], seeded["jwts"], strict=True):
            assert creds[cred_id]["credential_hash"] == hashlib.sha256(jwt.encode()).hexdigest()
            assert started <= creds[cred_id]["updated_at"] <= finished
        assert creds[first]["status"] == "VALID"
        assert creds[third]["status"] == "VALID"
        # V1 already recorded the revocation: V2 must not resurrect the credential.
        assert creds[revoked]["status"] == "REVOKED"

        statuses = {r["credential_id"]: r for r in await conn.fetch(
            "SELECT * FROM credential_status"
        )}
        assert set(statuses) == set(seeded["credentials"])
        new_row = statuses[third]
        assert new_row["status"] == "VALID"
        assert new_row["created_at"] == seeded["created"]
        assert new_row["status_changed_at"] == seeded["created"]
        assert started <= new_row["updated_at"] <= finished
        assert statuses[revoked]["status"] == "REVOKED"
        assert statuses[revoked]["reason"] is None
    finally:
        await conn.close()


async def test_rollback_to_1_restores_exactly_the_v1_schema_and_rows(fresh_db: str) -> None:
    """U2 after V2 leaves the catalog identical to a V1-only database, V1 rows intact."""
    await migrate(fresh_db, target=1)
    conn = await asyncpg.connect(fresh_db)
    try:
        await _seed_v1(conn)
        rows_v1 = {t: await _rows(conn, t, c) for t, c in V1_ROWS.items()}
        catalog_v1 = await _catalog(fresh_db)

        assert await migrate(fresh_db, target=2) == [2]
        await conn.execute(
            "INSERT INTO payments (payer_did, payee_did, amount) VALUES ('a', 'b', '1.00')"
        )
        assert await rollback(fresh_db, to=1) == [2]

        assert await _catalog(fresh_db) == catalog_v1
        assert await _rows(conn, "users", V1_ROWS["users"]) == rows_v1["users"]
        assert await _rows(conn, "credentials", V1_ROWS["credentials"]) == rows_v1["credentials"]
        statuses = await _rows(conn, "credential_status", V1_ROWS["credential_status"])
        assert set(rows_v1["credential_status"]) <= set(statuses)
        assert len(statuses) == 3  # V2's rows stay: one per credential, as V1 intends
        assert [s.applied for s in await status(fresh_db)][:2] == [True, False]

        # The undo is complete enough for V2 to run again on top of it.
        assert await migrate(fresh_db, target=2) == [2]
    finally:
        await conn.close()


async def test_concurrent_migrate_processes_apply_each_version_once(
    fresh_db: str, schema_copy: Path
) -> None:
    """Two OS processes migrating at once: one applies V1+V2, the other waits and applies none."""
    code = (
        "import asyncio, json, sys\n"
        "from pathlib import Path\n"
        "from finpass_pipeline.migrations import migrate\n"
        "done = asyncio.run(migrate(sys.argv[1], schema_dir=Path(sys.argv[2])))\n"
        "print('RESULT ' + json.dumps(done))\n"
    )
    holder = await asyncpg.connect(fresh_db)
    try:
        # Hold the lock so both processes are provably inside migrate() at the same time.
        await holder.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-c", code, fresh_db, str(schema_copy), cwd=REPO_ROOT,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            for _ in range(2)
        ]
        deadline = time.monotonic() + 60
        while await holder.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ) < 2:
            assert time.monotonic() < deadline, "the two runs never queued on the lock"
            await asyncio.sleep(0.05)
        await holder.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)

        results = []
        for proc in procs:
            out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
            assert proc.returncode == 0, err.decode()
            line = next(s for s in out.decode().splitlines() if s.startswith("RESULT "))
            results.append(json.loads(line.removeprefix("RESULT ")))
        assert sorted(results) == [[], [1, 2]]
        history = await holder.fetch("SELECT version FROM schema_history ORDER BY version")
        assert [r["version"] for r in history] == [1, 2]
    finally:
        await holder.close()


async def test_edited_applied_migration_is_refused_naming_the_file(
    fresh_db: str, schema_copy: Path
) -> None:
    """A V script changed after it ran stops migrate() before anything new is applied."""
    assert await migrate(fresh_db, schema_dir=schema_copy) == [1, 2]
    v2 = schema_copy / "V2__production_schema.sql"
    v2.write_text(v2.read_text() + "\nCREATE INDEX idx_sneaky ON users(email);\n")
    (schema_copy / "V3__next.sql").write_text("CREATE TABLE next_thing (id INT);\n")

    with pytest.raises(MigrationError, match=r"V2__production_schema\.sql was edited after it"
                       r" was applied \(checksum [0-9a-f]{64} != recorded [0-9a-f]{64}\)"):
        await migrate(fresh_db, schema_dir=schema_copy)

    states = {s.version: s for s in await status(fresh_db, schema_dir=schema_copy)}
    assert (states[1].checksum_ok, states[2].checksum_ok, states[3].checksum_ok) == (
        True, False, None
    )
    assert not states[3].applied  # validation ran before V3 could


async def test_applied_migration_whose_file_is_gone_is_refused(
    fresh_db: str, schema_copy: Path
) -> None:
    """Deleting an applied V script is an error naming the missing file."""
    await migrate(fresh_db, schema_dir=schema_copy)
    (schema_copy / "V1__init.sql").unlink()
    with pytest.raises(MigrationError, match=r"version 1 is applied but .*V1__init\.sql is miss"):
        await migrate(fresh_db, schema_dir=schema_copy)
    states = await status(fresh_db, schema_dir=schema_copy)
    assert (states[0].file, states[0].checksum_ok, states[0].description) == (None, False, "init")


async def test_rollback_past_a_missing_undo_file_errors_and_changes_nothing(
    fresh_db: str, schema_copy: Path
) -> None:
    """rollback() names the missing U script and undoes nothing, not even the versions it could."""
    await migrate(fresh_db, schema_dir=schema_copy)
    with pytest.raises(MigrationError, match=r"undo script .*U1__init\.sql is missing"):
        await rollback(fresh_db, to=0, schema_dir=schema_copy)

    (schema_copy / "U2__production_schema.sql").unlink()
    with pytest.raises(MigrationError, match=r"undo script .*U2__production_schema\.sql is miss"):
        await rollback(fresh_db, to=1, schema_dir=schema_copy)

    assert [s.applied for s in await status(fresh_db, schema_dir=schema_copy)] == [True, True]
    conn = await asyncpg.connect(fresh_db)
    try:
        assert await conn.fetchval("SELECT to_regclass('payments')") is not None
    finally:
        await conn.close()


async def test_later_versions_apply_and_undo_in_order(fresh_db: str, schema_copy: Path) -> None:
    """The runner takes any number of versions: V3 applies after V2 and is undone before it."""
    (schema_copy / "V3__payment_notes.sql").write_text(
        "ALTER TABLE payments ADD COLUMN note TEXT;\n"
    )
    (schema_copy / "U3__payment_notes.sql").write_text("ALTER TABLE payments DROP COLUMN note;\n")
    assert await migrate(fresh_db, target=2, schema_dir=schema_copy) == [1, 2]
    assert await migrate(fresh_db, schema_dir=schema_copy) == [3]
    assert await migrate(fresh_db, schema_dir=schema_copy) == []

    states = await status(fresh_db, schema_dir=schema_copy)
    assert [(s.version, s.description, s.applied, s.checksum_ok) for s in states] == [
        (1, "init", True, True),
        (2, "production schema", True, True),
        (3, "payment notes", True, True),
    ]
    assert all(s.installed_at is not None and s.installed_at.tzinfo for s in states)
    assert states[0].undo_file is None
    assert states[2].undo_file == schema_copy / "U3__payment_notes.sql"

    assert await rollback(fresh_db, to=1, schema_dir=schema_copy) == [3, 2]
    assert await rollback(fresh_db, to=1, schema_dir=schema_copy) == []
    assert [s.applied for s in await status(fresh_db, schema_dir=schema_copy)] == [
        True, False, False
    ]


async def test_failing_script_leaves_no_trace_and_names_its_line(
    fresh_db: str, schema_copy: Path
) -> None:
    """A failing V script is rolled back whole, with no history row; the error gives file:line."""
    (schema_copy / "V3__broken.sql").write_text(
        "CREATE TABLE half_done (id INT);\n\nSELECT no_such_function();\n"
    )
    with pytest.raises(MigrationError, match=r"V3__broken\.sql failed at line 3 .*no_such_func"):
        await migrate(fresh_db, schema_dir=schema_copy)
    conn = await asyncpg.connect(fresh_db)
    try:
        assert await conn.fetchval("SELECT to_regclass('half_done')") is None
        assert await conn.fetchval("SELECT max(version) FROM schema_history") == 2
    finally:
        await conn.close()


async def test_ambiguous_script_sets_are_refused(fresh_db: str, schema_copy: Path) -> None:
    """Misnamed, duplicate and out-of-order scripts are errors, never silently skipped."""
    await migrate(fresh_db, schema_dir=schema_copy)

    (schema_copy / "V3_single_underscore.sql").write_text("SELECT 1;\n")
    with pytest.raises(MigrationError, match=r"V3_single_underscore\.sql is not named"):
        await migrate(fresh_db, schema_dir=schema_copy)
    (schema_copy / "V3_single_underscore.sql").unlink()

    (schema_copy / "V2__production_schema_rollback.sql").write_text("SELECT 1;\n")
    with pytest.raises(MigrationError, match=r"both claim V2"):
        await migrate(fresh_db, schema_dir=schema_copy)
    (schema_copy / "V2__production_schema_rollback.sql").unlink()

    await rollback(fresh_db, to=1, schema_dir=schema_copy)
    (schema_copy / "V3__later.sql").write_text("SELECT 1;\n")
    (schema_copy / "V2__production_schema.sql").unlink()
    await migrate(fresh_db, schema_dir=schema_copy)  # applies V3 over V1
    shutil.copy(SCHEMA_DIR / "V2__production_schema.sql", schema_copy)
    with pytest.raises(MigrationError, match=r"V2__production_schema\.sql is pending but vers"):
        await migrate(fresh_db, schema_dir=schema_copy)


async def test_status_of_an_untouched_database_lists_pending_without_creating_anything(
    fresh_db: str,
) -> None:
    """status() is read-only: every version pending, and no schema_history table appears."""
    states = await status(fresh_db)
    assert [s.version for s in states][:2] == [1, 2]
    assert not any(s.applied or s.installed_at or s.checksum_ok is not None for s in states)
    assert states[0].file == SCHEMA_DIR / "V1__init.sql"
    assert await _catalog(fresh_db) == {
        "relations": [], "columns": [], "constraints": [], "indexes": [], "triggers": [],
        "functions": [],
    }


async def test_v12_numbers_existing_audit_rows_and_undoes_exactly(fresh_db: str) -> None:
    """An upgraded log gets audit_seq in its best surviving order (created_at, chain_id,
    chain_seq, id), new rows continue after it, and U12 leaves the V11 catalog."""
    await migrate(fresh_db, target=11)
    conn = await asyncpg.connect(fresh_db)
    try:
        await conn.execute("SELECT audit_ensure_partitions(0, '2026-11-01'::timestamptz, now())")
        at = "2026-11-30T12:00:00Z"
        rows = [  # (id, chain_id, chain_seq, created_at): inserted out of order on purpose
            ("00000000-0000-0000-0000-00000000000c", "c:0", 2, at),
            ("00000000-0000-0000-0000-00000000000a", "c:1", 1, at),
            ("00000000-0000-0000-0000-00000000000b", "c:0", 1, at),
            ("00000000-0000-0000-0000-000000000001", None, None, "2026-11-30T13:00:00Z"),
            ("00000000-0000-0000-0000-0000000000ff", None, None, "2026-11-30T11:00:00Z"),
        ]
        for rid, chain, seq, created in rows:
            await conn.execute(
                "INSERT INTO audit_events (id, event_type, action, outcome, severity, chain_id,"
                " chain_seq, row_hash, created_at) VALUES ($1, 'USER_SEEN', 'SEEN', 'SUCCESS',"
                " 'INFO', $2, $3, CASE WHEN $2::text IS NULL THEN NULL ELSE repeat('0', 64) END,"
                " $4::text::timestamptz)", uuid.UUID(rid), chain, seq, created)
        await conn.execute(
            "INSERT INTO processed_events (event_id, event_type, topic, kafka_partition,"
            " kafka_offset, state) VALUES (gen_random_uuid(), 'user.seen', 't', 0, 0, 'APPLIED')")
        catalog_v11 = await _catalog(fresh_db)

        assert await migrate(fresh_db, target=12) == [12]
        ordered = [str(r["id"])[-2:] for r in await conn.fetch(
            "SELECT id FROM audit_events ORDER BY audit_seq")]
        assert ordered == ["ff", "0b", "0c", "0a", "01"]
        assert await conn.fetchval("SELECT max(audit_seq) FROM audit_events") == 5
        await conn.execute(
            "INSERT INTO audit_events (event_type, action, outcome, severity) VALUES "
            "('USER_SEEN', 'SEEN', 'SUCCESS', 'INFO')")
        assert await conn.fetchval("SELECT max(audit_seq) FROM audit_events") == 6
        assert await conn.fetchval(
            "SELECT count(*) FROM processed_events WHERE content_digest IS NULL") == 1
        # Still append-only after the one-off numbering.
        with pytest.raises(asyncpg.PostgresError):
            await conn.execute("UPDATE audit_events SET audit_seq = 0")
        assert await rollback(fresh_db, to=11) == [12]
        assert await _catalog(fresh_db) == catalog_v11
        assert await migrate(fresh_db, target=12) == [12]
    finally:
        await conn.close()


# Read by no report and no statement of the pipeline (docs/indexes.md).
V19_DROPPED = {
    "idx_audit_events_event_id", "idx_audit_events_resource", "idx_audit_events_user_created",
    "idx_audit_events_audit_seq", "idx_payments_payer_id_hash", "idx_users_email_index",
    "idx_users_phone_index", "idx_person_keys_master_key",
}


async def test_v19_drops_only_its_indexes_and_u19_recreates_them_exactly(fresh_db: str) -> None:
    """V19 drops its eight indexes, every audit partition's copy with them, and nothing else
    (the seed's indexes and the constraints stay); U19 gives back the catalog before it, the
    partitions' index names included."""
    below = max(v for v in await migrate(fresh_db) if v < 19)
    await rollback(fresh_db, to=below)
    conn = await asyncpg.connect(fresh_db)
    try:  # an older month too, so that more than the migration's own partitions exist
        await conn.execute(
            "SELECT audit_ensure_partitions(0, now() - interval '70 days', now())")
        partitions = await conn.fetchval("SELECT count(*) FROM audit_partitions()")
    finally:
        await conn.close()
    before = await _catalog(fresh_db)
    assert await migrate(fresh_db, target=19) == [19]
    after = await _catalog(fresh_db)
    names_before = {r[1] for r in before["indexes"]}
    names_after = {r[1] for r in after["indexes"]}
    assert names_after <= names_before
    gone = names_before - names_after
    assert {n for n in gone if not n.startswith("audit_events_y")} == V19_DROPPED
    assert len([n for n in gone if n.startswith("audit_events_y")]) == 4 * partitions
    assert set(SEED_INDEXES) <= names_after
    assert set(SEED_INDEXES) == COST_SEED_INDEXES  # what index_cost's `seed` variant keeps
    for kind in ("columns", "constraints", "triggers", "functions"):
        assert after[kind] == before[kind]
    tables = [r for r in before["relations"] if r[1] not in (b"i", b"I")]
    assert [r for r in after["relations"] if r[1] not in (b"i", b"I")] == tables
    assert await rollback(fresh_db, to=below) == [19]
    assert await _catalog(fresh_db) == before
    assert await migrate(fresh_db, target=19) == [19]
