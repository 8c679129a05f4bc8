"""An audit log you can prove: roles and triggers, hash chains, verify, checkpoints, partitions,
retention and pseudonym-key rotation — against the real PostgreSQL (and Kafka for the daemon)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr

from consumers.apply import Applier, BatchState
from consumers.records import Incoming
from finpass_pipeline.audit import cli as audit_cli
from finpass_pipeline.audit.chain import (
    ZERO_HASH,
    AuditWriter,
    canonical_row,
    row_hash,
)
from finpass_pipeline.audit.pseudonym import Pseudonymizer
from finpass_pipeline.audit.record import AuditRow
from finpass_pipeline.audit.retention import run_retention
from finpass_pipeline.audit.verify import verify
from finpass_pipeline.events import upcast
from finpass_pipeline.migrations import migrate, rollback
from finpass_pipeline.settings import ConfigError, Settings
from tests.integration.test_migrations import SEED_INDEXES, _catalog
from tests.support.builders import ev, initiated, registered
from tests.support.pipeline_support import (
    cli,
    fetch,
    make_settings,
    prepare,
    running_daemon,
    send_events,
    wait_caught_up,
)

A, B = ("finpass.payments", 3), ("finpass.users", 0)
CHAIN_A, CHAIN_B = "finpass.payments:3", "finpass.users:0"


def rows_for(n: int, prefix: str = "u") -> list[AuditRow]:
    """`n` audit rows as the applier makes them (user.registered / payment.initiated)."""
    applier, state = Applier(Pseudonymizer(b"test-audit-key", "k1")), BatchState()
    for i in range(n):
        e = registered(f"did:example:{prefix}{i}", at=i) if i % 2 == 0 else \
            initiated(uuid.uuid4(), payer=f"did:example:{prefix}{i}", at=i)
        applier.apply(state, Incoming(upcast(e), "t", 0, i, b""))
    return state.audit


async def write(dsn: str, rows: Sequence[AuditRow], sources: Sequence[tuple[str, int]],
                now: datetime | None = None, role: str | None = None,
                chained: bool = True) -> None:
    conn = await asyncpg.connect(dsn, server_settings={"role": role} if role else None)
    try:
        async with conn.transaction():
            await AuditWriter(chained).append(conn, rows, sources, now)
    finally:
        await conn.close()


@pytest.fixture
async def db(fresh_db: str) -> AsyncIterator[str]:
    await migrate(fresh_db)
    yield fresh_db


@pytest.fixture
def settings(db: str) -> Settings:
    """Settings for the audit commands on `db`, with a checkpoint key. PostgreSQL only: unlike
    the shared `settings` (tests/conftest.py), no topics and no broker."""
    return Settings(database_url=db, audit_hash_key=SecretStr("test-audit-key"),
                    audit_checkpoint_key=SecretStr("checkpoint-key"), http_port=0)


async def run_verify(s: Settings, **kwargs: Any) -> tuple[int, list[str]]:
    lines: list[str] = []
    code = await audit_cli.verify(s, say=lines.append, err=lines.append, **kwargs)
    return code, lines


async def sql(dsn: str, *statements: str, replica: bool = False) -> None:
    """Run statements as the superuser; `replica` disables the append-only triggers (tamper)."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            if replica:
                await conn.execute("SET LOCAL session_replication_role = replica")
            for statement in statements:
                await conn.execute(statement)
    finally:
        await conn.close()


async def chain_rows(dsn: str, chain: str) -> list[asyncpg.Record]:
    return await fetch(dsn, "SELECT * FROM audit_events WHERE chain_id = $1 ORDER BY chain_seq",
                       chain)


# --- append-only ---------------------------------------------------------------------------------

async def test_writer_may_only_append_and_the_trigger_stops_everyone(db: str) -> None:
    """finpass_writer: INSERT ok, UPDATE/DELETE/TRUNCATE denied; superuser: refused by trigger."""
    await write(db, rows_for(3), [A, A, B], role="finpass_writer")
    assert len(await chain_rows(db, CHAIN_A)) == 2
    writer = await asyncpg.connect(db, server_settings={"role": "finpass_writer"})
    try:
        for statement in ("UPDATE audit_events SET outcome = 'X'", "DELETE FROM audit_events",
                          "TRUNCATE audit_events",
                          "SELECT audit_retention_drop('audit_events_y2000m01')"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                await writer.execute(statement)
    finally:
        await writer.close()
    partition = (await fetch(db, "SELECT tableoid::regclass::text AS p FROM audit_events"))[0]["p"]
    for statement in ("UPDATE audit_events SET outcome = 'X'", "DELETE FROM audit_events",
                      "TRUNCATE audit_events", f"TRUNCATE {partition}",
                      f"DELETE FROM {partition}"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await sql(db, statement)
    assert len(await fetch(db, "SELECT 1 FROM audit_events")) == 3


# --- chains --------------------------------------------------------------------------------------

async def test_chains_link_every_row_and_verify_passes(db: str, settings: Settings) -> None:
    """Per-partition chains, seq 1..n without gaps, hashes recomputable, heads at the tips."""
    rows = rows_for(7)
    await write(db, rows[:4], [A, B, A, A])
    await write(db, rows[4:], [B, A, B])
    for chain, n in ((CHAIN_A, 4), (CHAIN_B, 3)):
        stored = await chain_rows(db, chain)
        assert [r["chain_seq"] for r in stored] == list(range(1, n + 1))
        prev = ZERO_HASH
        for r in stored:
            assert r["hash_version"] == 2 and r["pii_salt"] is not None
            assert row_hash(prev, canonical_row(r)) == r["row_hash"]
            prev = r["row_hash"]
        head = (await fetch(db, "SELECT * FROM audit_chain_heads WHERE chain_id = $1", chain))[0]
        assert (head["chain_seq"], head["row_hash"]) == (n, prev)
        created = [r["created_at"] for r in stored]
        assert created == sorted(created)
    code, lines = await run_verify(settings)
    assert code == 0 and "2 chain(s), 7 row(s) verified" in lines[-1]
    code, lines = await run_verify(settings, since=datetime.now(UTC) - timedelta(minutes=5))
    assert code == 0, lines


async def test_chaining_off_writes_null_chain_columns(db: str, settings: Settings) -> None:
    """FINPASS_AUDIT_CHAIN=false: rows without chain columns, heads untouched, verify says so."""
    await write(db, rows_for(2), [A, B], chained=False)
    stored = await fetch(db, "SELECT chain_id, chain_seq, row_hash FROM audit_events")
    assert [tuple(r) for r in stored] == [(None, None, None)] * 2
    assert await fetch(db, "SELECT * FROM audit_chain_heads") == []
    code, lines = await run_verify(settings)
    assert code == 0 and "2 unchained row(s)" in lines[-1]


def _id(rows: list[asyncpg.Record], seq: int) -> str:
    return str(next(r["id"] for r in rows if r["chain_seq"] == seq))


TAMPERS = {
    # kind: (statements using {id2}, {id3}, {id6} of chain A; expected kind; row named)
    "modified": (["UPDATE audit_events SET outcome = 'SUCCESS', description = 'nothing here' "
                  "WHERE id = '{id3}'"], "modified", 3),
    "deleted": (["DELETE FROM audit_events WHERE id = '{id3}'"], "deleted", 4),
    "reordered": (["UPDATE audit_events SET chain_seq = 99 WHERE id = '{id2}'",
                   "UPDATE audit_events SET chain_seq = 2 WHERE id = '{id3}'",
                   "UPDATE audit_events SET chain_seq = 3 WHERE id = '{id2}'"], "reordered", 2),
    "inserted": (["INSERT INTO audit_events (id, event_type, created_at, chain_id, chain_seq, "
                  "row_hash) SELECT gen_random_uuid(), event_type, created_at, chain_id, "
                  "chain_seq, row_hash FROM audit_events WHERE id = '{id3}'"], "inserted", 3),
    "tail deleted": (["DELETE FROM audit_events WHERE id = '{id6}'"], "deleted", 6),
    "renumbered": (["DELETE FROM audit_events WHERE id = '{id3}'",
                    "UPDATE audit_events SET chain_seq = chain_seq - 1 "
                    "WHERE chain_id = 'finpass.payments:3' AND chain_seq > 3",
                    "UPDATE audit_chain_heads SET chain_seq = 5, row_hash = (SELECT row_hash "
                    "FROM audit_events WHERE chain_id = 'finpass.payments:3' AND chain_seq = 5) "
                    "WHERE chain_id = 'finpass.payments:3'"], "broken", 3),
}


@pytest.mark.parametrize("tamper", list(TAMPERS))
async def test_verify_names_the_first_break(db: str, settings: Settings, tamper: str) -> None:
    """Each tamper (as superuser, triggers off) is caught: exit 1, kind, chain, seq and row id."""
    await write(db, rows_for(9), [A, A, A, B, A, A, B, A, B])
    before = await chain_rows(db, CHAIN_A)
    ids = {f"id{s}": _id(before, s) for s in (2, 3, 6)}
    statements, kind, seq = TAMPERS[tamper]
    await sql(db, *(s.format(**ids) for s in statements), replica=True)
    code, lines = await run_verify(settings)
    breaks = [line for line in lines if line.startswith("BREAK")]
    assert code == 1 and len(breaks) == 1, lines
    assert f"chain {CHAIN_A} seq {seq}" in breaks[0] and f": {kind}:" in breaks[0], breaks
    if tamper != "tail deleted":
        row = _id(await chain_rows(db, CHAIN_A), seq) if tamper != "inserted" else ""
        assert row in breaks[0]
    assert "BROKEN" in lines[-1]
    code, _ = await run_verify(settings, since=datetime.now(UTC) - timedelta(hours=1))
    assert code == 1


async def test_signed_checkpoint_catches_a_rewrite_with_recomputed_hashes(
        db: str, settings: Settings, tmp_path: Path) -> None:
    """A whole-chain rewrite passes the chain walk but not a signed checkpoint; bad files fail."""
    await write(db, rows_for(4), [A, A, A, B])
    out = tmp_path / "cp.json"
    assert await audit_cli.checkpoint(settings, out, say=lambda _: None) == 0
    assert (await run_verify(settings, checkpoint=out))[0] == 0
    # Rewrite row 2 of chain A and recompute every later hash and the head: chain-consistent.
    stored = await chain_rows(db, CHAIN_A)
    prev, statements = ZERO_HASH, []
    for r in stored:
        values = dict(r)
        if r["chain_seq"] == 2:
            values["outcome"] = "REJECTED"
        prev = row_hash(prev, canonical_row(values))
        statements.append(f"UPDATE audit_events SET outcome = '{values['outcome']}', row_hash = "
                          f"'{prev}' WHERE id = '{r['id']}'")
    statements.append(f"UPDATE audit_chain_heads SET row_hash = '{prev}' "
                      f"WHERE chain_id = '{CHAIN_A}'")
    await sql(db, *statements, replica=True)
    # The chain alone cannot tell (the Merkle tree would: nothing is sealed here).
    assert (await run_verify(settings))[0] == 0
    code, lines = await run_verify(settings, checkpoint=out)
    assert code == 1 and any(f"BREAK chain {CHAIN_A} seq 3" in x and "checkpoint" in x
                             for x in lines), lines
    data = json.loads(out.read_text())
    data["chains"][0]["row_hash"] = "0" * 64
    out.write_text(json.dumps(data))
    code, lines = await run_verify(settings, checkpoint=out)
    assert code == 1 and "signature does not match" in lines[-1]
    with pytest.raises(ConfigError, match="FINPASS_AUDIT_CHECKPOINT_KEY"):
        await audit_cli.checkpoint(settings.model_copy(update={"audit_checkpoint_key": None}))


# --- partitions and retention --------------------------------------------------------------------

async def test_writer_creates_a_missing_month_before_writing_into_it(db: str) -> None:
    """A batch dated past the prepared partitions gets its month created in its transaction."""
    later = datetime.now(UTC) + timedelta(days=200)
    await write(db, rows_for(1), [A], now=later, role="finpass_writer")
    name = f"audit_events_y{later:%Y}m{later:%m}"
    rows = await fetch(db, "SELECT tableoid::regclass::text AS p, created_at FROM audit_events")
    assert [(r["p"], r["created_at"]) for r in rows] == [(name, later)]


async def test_partitioning_keeps_every_row_and_undoes_exactly(fresh_db: str) -> None:
    """V5 moves every V4 row into monthly partitions (seed index names kept); U5/U4 undo exactly."""
    await migrate(fresh_db, target=3)
    catalog_v3 = await _catalog(fresh_db)
    await migrate(fresh_db, target=4)
    catalog_v4 = await _catalog(fresh_db)
    old = datetime.now(UTC) - timedelta(days=400)
    await write(fresh_db, rows_for(3, "old"), [A, B, A], now=old)
    await write(fresh_db, rows_for(3, "new"), [A, B, A])
    before = [tuple(r) for r in await fetch(fresh_db, "SELECT * FROM audit_events ORDER BY id")]
    assert await migrate(fresh_db, target=5) == [5]
    assert [tuple(r) for r in await fetch(fresh_db, "SELECT * FROM audit_events ORDER BY id")
            ] == before
    parts = await fetch(fresh_db, "SELECT partition_name FROM audit_partitions()")
    assert len(parts) >= 14  # the old row's month through three months ahead
    names = {r["indexname"] for r in await fetch(
        fresh_db, "SELECT indexname FROM pg_indexes WHERE tablename = 'audit_events'")}
    assert {n for n, (t, _) in SEED_INDEXES.items() if t == "audit_events"} <= names
    conn = await asyncpg.connect(fresh_db)
    try:
        report = await verify(conn)
    finally:
        await conn.close()
    assert report.intact and report.rows == 6
    assert await rollback(fresh_db, to=4) == [5]
    assert [tuple(r) for r in await fetch(fresh_db, "SELECT * FROM audit_events ORDER BY id")
            ] == before
    assert await _catalog(fresh_db) == catalog_v4
    assert await rollback(fresh_db, to=3) == [4]
    assert await _catalog(fresh_db) == catalog_v3
    assert await migrate(fresh_db) != []


async def test_retention_drops_expired_partitions_and_verify_still_holds(
        db: str, settings: Settings) -> None:
    """Old partitions past every row's retention go (anchored); verify holds; tamper still seen."""
    now = datetime.now(UTC)
    expired = rows_for(4, "exp")
    for r in expired:
        r.retention_days = 365
    await write(db, expired[:2], [A, B], now=now - timedelta(days=800))
    await write(db, expired[2:], [A, B], now=now - timedelta(days=790))
    kept = rows_for(3, "kept")  # 2555 days: keeps its partition and all newer ones
    await write(db, kept, [A, B, A], now=now - timedelta(days=500))
    await write(db, rows_for(2, "now"), [A, B])
    conn = await asyncpg.connect(db)
    try:
        plan = await run_retention(conn, dry_run=True)
    finally:
        await conn.close()
    assert plan[0].dropped and not plan[-1].dropped and "within their retention" in plan[-1].reason
    assert await fetch(db, "SELECT * FROM audit_retention_anchors") == []
    lines: list[str] = []
    assert await audit_cli.retention(settings, say=lines.append) == 0
    dropped = [x for x in lines if x.startswith("dropped")]
    assert len(dropped) == len(plan) - 1 and "kept" in lines[-2], lines
    anchors = await fetch(db, "SELECT chain_id, max(chain_seq) AS s "
                              "FROM audit_retention_anchors GROUP BY 1 ORDER BY 1")
    assert [(r["chain_id"], r["s"]) for r in anchors] == [(CHAIN_A, 2), (CHAIN_B, 2)]
    assert len(await fetch(db, "SELECT 1 FROM audit_events")) == 5
    code, out = await run_verify(settings)
    assert code == 0 and "5 row(s) verified" in out[-1], out
    first = (await chain_rows(db, CHAIN_A))[0]
    assert first["chain_seq"] == 3
    await sql(db, f"UPDATE audit_events SET severity = 'ERROR' WHERE id = '{first['id']}'",
              replica=True)
    code, out = await run_verify(settings)
    assert code == 1 and f"chain {CHAIN_A} seq 3 row {first['id']}: modified" in out[0], out


# --- the daemon, as finpass_writer, across a key rotation ----------------------------------------

async def test_consumer_as_writer_chains_and_user_trail_spans_key_rotation(
        fresh_db: str, bootstrap: str, topic_prefix: str) -> None:
    """The daemon under FINPASS_DATABASE_ROLE=finpass_writer chains its rows; after rotating the
    pseudonym key, `audit user` finds the trail under both keys and k1 rows stay as written."""
    did = "did:example:rotating"
    s1 = make_settings(fresh_db, bootstrap, topic_prefix, database_role="finpass_writer")
    await prepare(s1)
    first = [registered(did), ev("user.seen", did=did, at=5),
             initiated(uuid.uuid4(), payer=did, at=6, payee_did="did:example:shop")]
    await send_events(s1, first)
    async with running_daemon(s1):
        await wait_caught_up(s1, len(first))
    k1_rows = [tuple(r) for r in await fetch(fresh_db, "SELECT * FROM audit_events ORDER BY id")]
    s2 = s1.model_copy(update={"audit_hash_key": SecretStr("rotated-secret"),
                               "audit_hash_key_id": "k2",
                               "audit_hash_keys": SecretStr("k1:test-audit-key")})
    second = [ev("user.kyc_verified", did=did, at=10),
              ev("auth.login_failed", did=did, reason="bad password", at=11)]
    await send_events(s2, second)
    async with running_daemon(s2):
        await wait_caught_up(s2, len(first) + len(second))

    chains = await fetch(fresh_db, "SELECT chain_id, chain_seq FROM audit_events")
    assert all(r["chain_id"].startswith(topic_prefix) for r in chains)
    assert await fetch(fresh_db, "SELECT 1 FROM audit_events WHERE chain_id IS NULL") == []
    code, lines = await run_verify(s2)
    assert code == 0 and "5 row(s) verified" in lines[-1], lines
    assert [tuple(r) for r in await fetch(
        fresh_db, "SELECT * FROM audit_events WHERE hash_key_id = 'k1' ORDER BY id")] == k1_rows

    out: list[str] = []
    assert await audit_cli.user(s2, did, "json", say=out.append) == 0
    trail = json.loads(out[0])
    assert trail["pseudonyms"]["k1"] == hmac.new(b"test-audit-key", did.encode(),
                                                 hashlib.sha256).hexdigest()
    assert sorted(r["key_id"] for r in trail["rows"]) == ["k1", "k1", "k1", "k2", "k2"]
    assert {r["event_type"] for r in trail["rows"] if r["key_id"] == "k2"} == {
        "USER_KYC_VERIFIED", "AUTH_LOGIN_FAILED"}
    out.clear()
    assert await audit_cli.user(s2, "did:example:shop", say=out.append) == 0
    assert "mentioned" in "\n".join(out) and out[-1] == "1 row(s): 1 under k1"


async def test_cli_exit_codes(db: str) -> None:
    """`audit verify` exits 0 on an intact log; a missing HMAC checkpoint key is a config error
    (2)."""
    env = {"FINPASS_DATABASE_URL": db, "FINPASS_AUDIT_HASH_KEY": "k"}
    ok, bad = await asyncio.gather(asyncio.to_thread(cli, "audit", "verify", env=env),
                                   asyncio.to_thread(cli, "audit", "checkpoint", "--hmac",
                                                     env=env))
    assert ok.returncode == 0 and "audit log intact: 0 chain(s)" in ok.stdout, ok.stderr
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "finpass-pipeline: FINPASS_AUDIT_CHECKPOINT_KEY is not set (it signs audit checkpoints)"]
