"""One Merkle tree over the audit log (CONTRACT.md §6, issue #14): sealing, signed checkpoints,
proofs checked by an independent Go verifier (tests/verifier: transparency-dev/merkle and
golang.org/x/mod/sumdb/note, no code of ours), tampering, erasure, the upgrade from V13 and
retention — against the real PostgreSQL (and Kafka for the daemon's sealer)."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr

from finpass_pipeline.audit import cli as audit_cli
from finpass_pipeline.audit.chain import ZERO_HASH, canonical_row, row_hash
from finpass_pipeline.audit.merkle import Frontier
from finpass_pipeline.audit.record import PERSONAL_COLUMNS, AuditRow
from finpass_pipeline.audit.redaction import erase_rows
from finpass_pipeline.audit.sealer import seal_all
from finpass_pipeline.migrations import migrate, rollback
from finpass_pipeline.settings import Settings
from tests.integration.test_audit_integrity import rows_for, sql, write
from tests.integration.test_migrations import _catalog
from tests.support.builders import registered
from tests.support.pipeline_support import (
    cli,
    fetch,
    make_settings,
    prepare,
    running_daemon,
    send_events,
    wait_caught_up,
)

VERIFIER = Path(__file__).resolve().parents[1] / "verifier"
A, B, C = ("finpass.payments", 3), ("finpass.users", 0), ("finpass.security", 1)


# --- the independent verifier ----------------------------------------------------------------

@pytest.fixture(scope="session")
def go_verifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/verifier built with `go build` (go.sum pins the modules); failing to build fails."""
    go = shutil.which("go")
    assert go is not None, "the Go toolchain is needed to build the independent verifier"
    out = tmp_path_factory.mktemp("verifier") / "verifier"
    built = subprocess.run([go, "build", "-mod=readonly", "-o", str(out), "."], cwd=VERIFIER,
                           capture_output=True, text=True, timeout=600, check=False)
    assert built.returncode == 0, f"go build of tests/verifier failed:\n{built.stderr}"
    return out


def go_check(binary: Path, vkey: str, inclusion: Sequence[dict[str, Any]] = (),
             consistency: Sequence[dict[str, Any]] = (), checkpoints: Sequence[str] = ()
             ) -> dict[str, list[str]]:
    """The verifier's verdict per item: "ok" or its reason for rejecting."""
    done = subprocess.run([str(binary)], input=json.dumps({
        "vkey": vkey, "inclusion": list(inclusion), "consistency": list(consistency),
        "checkpoints": list(checkpoints)}), capture_output=True, text=True, timeout=120,
        check=False)
    assert done.returncode == 0, done.stderr
    verdict: dict[str, list[str]] = json.loads(done.stdout)
    return verdict


# --- fixtures and helpers --------------------------------------------------------------------

@pytest.fixture
async def db(fresh_db: str) -> AsyncIterator[str]:
    await migrate(fresh_db)
    yield fresh_db


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    """A PKCS#8 PEM Ed25519 private key, as FINPASS_AUDIT_SIGNING_KEY names one."""
    path = tmp_path / "audit-signing.pem"
    path.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return path


@pytest.fixture
def settings(db: str, key_file: Path) -> Settings:
    return Settings(database_url=db, audit_hash_key=SecretStr("test-audit-key"),
                    audit_checkpoint_key=SecretStr("checkpoint-key"),
                    audit_signing_key=key_file, audit_origin="example.com/finpass-audit",
                    http_port=0)


async def checkpoint(s: Settings) -> str:
    out: list[str] = []
    assert await audit_cli.tree_checkpoint(s, say=out.append, err=out.append) == 0, out
    return out[-1] + "\n"


async def prove(s: Settings, **kwargs: Any) -> tuple[int, Any]:
    out: list[str] = []
    code = await audit_cli.prove(s, say=out.append, err=out.append, **kwargs)
    return code, (json.loads(out[0]) if code == 0 else out)


async def verify_lines(s: Settings) -> tuple[int, list[str]]:
    out: list[str] = []
    code = await audit_cli.verify(s, say=out.append, err=out.append)
    return code, out


async def ids_in_order(dsn: str) -> list[uuid.UUID]:
    return [r["row_id"] for r in await fetch(
        dsn, "SELECT row_id FROM audit_tree_leaves ORDER BY leaf_index")]


def personal(rows: list[AuditRow], who: str) -> list[AuditRow]:
    """Give rows personal values (an IP, a session, a user agent, free text)."""
    for n, r in enumerate(rows):
        r.ip_address, r.session_id = f"203.0.113.{n % 250}", f"sess-{who}-{n}"
        r.user_agent, r.error_message = "Mozilla/5.0 (X11) \u00e9\u4e2d", f"note about {who}"
    return rows


async def grow(s: Settings, rng: random.Random, batches: int) -> list[str]:
    """`batches` rounds of writing rows (three chains) and checkpointing; the notes."""
    notes = []
    for b in range(batches):
        n = rng.randint(1, 23)
        await write(s.database_url, personal(rows_for(n, f"g{b}-"), f"g{b}"),
                    [rng.choice([A, B, C]) for _ in range(n)])
        notes.append(await checkpoint(s))
    return notes


async def sizes(dsn: str) -> list[int]:
    return [r["tree_size"] for r in await fetch(
        dsn, "SELECT tree_size FROM audit_checkpoints ORDER BY 1")]


# --- building, proving, verifying ------------------------------------------------------------

async def test_v2_rows_carry_salt_and_digest_and_the_chain_hashes_the_digest(
        db: str, settings: Settings) -> None:
    """New rows: 16-byte salt, digest of the personal values, hash version 2 over the digest."""
    await write(db, personal(rows_for(5), "v2"), [A, A, B, A, B])
    prev: dict[str, str] = {}
    for r in await fetch(db, "SELECT * FROM audit_events ORDER BY chain_id, chain_seq"):
        assert r["hash_version"] == 2 and len(r["pii_salt"]) == 16 and len(r["pii_digest"]) == 32
        assert row_hash(prev.get(r["chain_id"], ZERO_HASH), canonical_row(r)) == r["row_hash"]
        prev[r["chain_id"]] = r["row_hash"]
    assert (await verify_lines(settings))[0] == 0


async def test_proofs_of_random_rows_and_checkpoint_pairs_verify_independently(
        db: str, settings: Settings, go_verifier: Path) -> None:
    """Inclusion proofs of random rows against random checkpoints, consistency proofs between
    random pairs (and equal sizes, and the empty tree), every signature: all accepted by the Go
    verifier with only the vkey; `audit verify` checks the tree and the latest signature."""
    rng = random.Random(14)
    notes = [await checkpoint(settings)]  # the empty tree
    notes += await grow(settings, rng, 8)
    await write(db, rows_for(3, "plain"), [A, B, C], chained=False)  # unchained rows: leaves too
    notes.append(await checkpoint(settings))
    recorded = await sizes(db)
    order = await ids_in_order(db)
    assert len(order) == recorded[-1] == len(await fetch(db, "SELECT 1 FROM audit_events"))
    vkey_out: list[str] = []
    assert await audit_cli.public_key(settings, say=vkey_out.append) == 0
    vkey = vkey_out[0]
    assert vkey.startswith("example.com/finpass-audit+")

    inclusion = []
    for index in rng.sample(range(len(order)), 25):
        size = rng.choice([s for s in recorded if s > index])
        by_event = rng.random() < 0.5
        code, proof = await prove(settings, row_id=None if by_event else order[index],
                                  event_id=(await fetch(db, "SELECT event_id FROM audit_events "
                                                        "WHERE id = $1", order[index])
                                            )[0]["event_id"] if by_event else None,
                                  size=size)
        assert code == 0, proof
        assert (proof["leaf_index"], proof["tree_size"]) == (index, size)
        assert proof["leaf_encoding"] == "finpass-leaf-v1"
        inclusion.append(proof)
    pairs = [(0, recorded[-1]), (recorded[3], recorded[3])] + [
        tuple(sorted(rng.sample(recorded, 2))) for _ in range(12)]
    consistency = []
    for first, second in pairs:
        code, proof = await prove(settings, first=first, second=second)
        assert code == 0, proof
        assert set(proof) == {"first_size", "second_size", "consistency", "first_checkpoint",
                              "second_checkpoint"}
        consistency.append(proof)
    verdict = go_check(go_verifier, vkey, inclusion, consistency, notes)
    assert verdict == {"inclusion": ["ok"] * len(inclusion),
                       "consistency": ["ok"] * len(consistency),
                       "checkpoints": ["ok"] * len(notes)}, verdict
    code, lines = await verify_lines(settings)
    assert code == 0 and f"tree of {recorded[-1]} leaves intact" in lines[-1], lines
    assert "signature verified" in lines[-1]


def _flip(text: str, i: int) -> str:
    return text[:i] + chr(ord(text[i]) ^ 1) + text[i + 1:]


def _flip_b64(value: str, i: int) -> str:
    raw = bytearray(base64.b64decode(value))
    raw[i] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def inclusion_variants(proof: dict[str, Any]) -> list[dict[str, Any]]:
    """The proof with one byte changed: of any row value, the leaf, any path hash, the
    checkpoint; and the index or size off by one."""
    out = []
    for column, value in proof["row"].items():
        if isinstance(value, int):
            choices: list[Any] = [value + 1]
        elif value is None:
            choices = ["x"]
        else:
            choices = [_flip(value, i) for i in range(len(value))]
        out += [{**proof, "row": {**proof["row"], column: v}} for v in choices]
    leaf_len = len(base64.b64decode(proof["leaf"]))
    out += [{**proof, "leaf": _flip_b64(proof["leaf"], i)} for i in range(leaf_len)]
    for j, h in enumerate(proof["inclusion"]):
        for i in range(32):
            path = list(proof["inclusion"])
            path[j] = _flip_b64(h, i)
            out.append({**proof, "inclusion": path})
    out += [{**proof, "checkpoint": _flip(proof["checkpoint"], i)}
            for i in range(len(proof["checkpoint"]))]
    out += [{**proof, "leaf_index": proof["leaf_index"] + 1},
            {**proof, "tree_size": proof["tree_size"] + 1}]
    return out


async def test_the_verifier_rejects_a_proof_with_any_one_byte_changed(
        db: str, settings: Settings, go_verifier: Path) -> None:
    """Every single-byte change of the row, the leaf, the path or a checkpoint is rejected."""
    rng = random.Random(6)
    await grow(settings, rng, 3)
    await write(db, personal(rows_for(9, "x"), "x"), [A, B, C] * 3)
    await checkpoint(settings)
    recorded = await sizes(db)
    order = await ids_in_order(db)
    vkey = settings.signer().vkey()
    code, inc = await prove(settings, row_id=order[recorded[0] // 2], size=recorded[-1])
    assert code == 0 and len(inc["inclusion"]) >= 3
    code, con = await prove(settings, first=recorded[1], second=recorded[-1])
    assert code == 0 and con["consistency"]
    variants = inclusion_variants(inc)
    con_variants = [{**con, "first_checkpoint": _flip(con["first_checkpoint"], i)}
                    for i in range(len(con["first_checkpoint"]))]
    con_variants += [{**con, "second_checkpoint": _flip(con["second_checkpoint"], i)}
                     for i in range(len(con["second_checkpoint"]))]
    for j, h in enumerate(con["consistency"]):
        for i in range(32):
            path = list(con["consistency"])
            path[j] = _flip_b64(h, i)
            con_variants.append({**con, "consistency": path})
    con_variants += [{**con, "first_size": con["first_size"] + 1}]
    verdict = go_check(go_verifier, vkey, [inc, *variants], [con, *con_variants])
    assert verdict["inclusion"][0] == "ok" and verdict["consistency"][0] == "ok", verdict
    accepted = [variants[i] for i, v in enumerate(verdict["inclusion"][1:]) if v == "ok"]
    assert not accepted, accepted[:1]
    assert "ok" not in verdict["consistency"][1:]
    assert len(variants) > 500


# --- tampering -------------------------------------------------------------------------------

async def _forge(dsn: str, statements: Sequence[str]) -> None:
    """What someone with the database (triggers off) and the HMAC key could do: change rows,
    recompute every chain hash and head, rebuild the tree with our own sealer. Only the Ed25519
    checkpoints, whose key they lack, stay as they were."""
    await sql(dsn, *statements, replica=True)
    rows = await fetch(dsn, "SELECT * FROM audit_events WHERE chain_id IS NOT NULL "
                            "ORDER BY chain_id, chain_seq")
    prev: dict[str, str] = {}
    fixes = []
    for r in rows:
        h = row_hash(prev.get(r["chain_id"], ZERO_HASH), canonical_row(r))
        prev[r["chain_id"]] = h
        fixes.append(f"UPDATE audit_events SET row_hash = '{h}' WHERE id = '{r['id']}'")
    fixes += [f"UPDATE audit_chain_heads SET row_hash = '{h}', chain_seq = (SELECT max(chain_seq)"
              f" FROM audit_events WHERE chain_id = '{c}') WHERE chain_id = '{c}'"
              for c, h in prev.items()]
    fixes += ["DELETE FROM audit_tree_leaves", "DELETE FROM audit_tree_nodes",
              "DELETE FROM audit_tree_chains",
              "UPDATE audit_tree_state SET tree_size = 0, root_hash = sha256(''::bytea)"]
    await sql(dsn, *fixes, replica=True)
    conn = await asyncpg.connect(dsn)
    try:
        await seal_all(conn)
    finally:
        await conn.close()


FORGERIES = {
    "edited row": ["UPDATE audit_events SET outcome = 'REJECTED' WHERE id = '{mid}'"],
    "deleted row": ["DELETE FROM audit_events WHERE id = '{mid}'",
                    "UPDATE audit_events SET chain_seq = chain_seq - 1 WHERE chain_id = "
                    "'{chain}' AND chain_seq > {seq}"],
    "row inserted in the middle": [
        "UPDATE audit_events SET chain_seq = chain_seq + 1 WHERE chain_id = '{chain}' AND "
        "chain_seq > {seq}",
        "INSERT INTO audit_events SELECT (json_populate_record(NULL::audit_events, "
        "(to_jsonb(a) || jsonb_build_object('id', gen_random_uuid(), 'chain_seq', {seq} + 1,"
        " 'event_id', gen_random_uuid()))::json)).* FROM audit_events AS a WHERE id = '{mid}'"],
    "rewritten tail": ["UPDATE audit_events SET severity = 'WARNING' WHERE chain_id = '{chain}' "
                       "AND chain_seq >= {seq}"],
}


@pytest.mark.parametrize("forgery", list(FORGERIES))
async def test_a_forged_log_is_caught_by_verify_and_by_the_verifier(
        db: str, settings: Settings, go_verifier: Path, tmp_path: Path, forgery: str) -> None:
    """Rows edited, deleted, inserted in the middle, or a tail rewritten — with every chain
    hash and the HMAC checkpoint recomputed and the tree rebuilt — pass the chain walk and the
    re-signed HMAC checkpoint, but not the signed tree checkpoints: `audit verify` exits 1, and
    the Go verifier rejects the forged tree's proofs against the recorded checkpoints."""
    rng = random.Random(3)
    await grow(settings, rng, 2)
    await write(db, rows_for(8, "t"), [A] * 8)
    await checkpoint(settings)
    first = (await sizes(db))[-1]
    mid = (await fetch(db, "SELECT id, chain_id, chain_seq FROM audit_events WHERE chain_id = "
                           "$1 ORDER BY chain_seq DESC OFFSET 3 LIMIT 1", "finpass.payments:3"))[0]
    await _forge(db, [s.format(mid=mid["id"], chain=mid["chain_id"], seq=mid["chain_seq"])
                      for s in FORGERIES[forgery]])
    hmac_file = tmp_path / "resigned.json"
    assert await audit_cli.checkpoint(settings, hmac_file, say=lambda _: None) == 0
    code, lines = await verify_lines(settings.model_copy(update={"audit_signing_key": None}))
    assert code == 1 and any("BREAK tree" in x and "checkpoint" in x for x in lines), lines
    out: list[str] = []
    assert await audit_cli.verify(settings, checkpoint=hmac_file, say=out.append,
                                  err=out.append) == 1
    assert not any(x.startswith("BREAK chain") for x in out), out  # the chains look fine
    assert any("BREAK tree" in x for x in out), out
    # Proofs from the forged tree against the checkpoint signed before it: rejected.
    order = await ids_in_order(db)
    vkey = settings.signer().vkey()
    proofs = []
    for index in range(max(0, first - 10), min(first, len(order))):
        code, proof = await prove(settings, row_id=order[index], size=first)
        if code == 0:
            proofs.append(proof)
    if forgery == "deleted row":  # the forged tree is shorter than the signed size: no proof
        assert not proofs
        return
    verdict = go_check(go_verifier, vkey, proofs)
    assert proofs and "ok" not in verdict["inclusion"], verdict


async def test_simple_tampering_is_caught_and_proofs_of_changed_rows_fail(
        db: str, settings: Settings, go_verifier: Path) -> None:
    """Without recomputing anything: an edited sealed row (verify: modified; verifier: proof
    rejected), a deleted one (verify: deleted; prove: gone), a leaf inserted into the tree."""
    await grow(settings, random.Random(1), 2)
    order = await ids_in_order(db)
    vkey = settings.signer().vkey()
    edited, deleted = order[1], order[2]
    await sql(db, f"UPDATE audit_events SET description = 'nothing' WHERE id = '{edited}'",
              replica=True)
    code, lines = await verify_lines(settings)
    assert code == 1 and any(f"row {edited}" in x and "modified" in x for x in lines), lines
    assert any(x.startswith("BREAK tree leaf 1") and "modified" in x for x in lines), lines
    code, proof = await prove(settings, row_id=edited)
    assert code == 0
    assert go_check(go_verifier, vkey, [proof])["inclusion"][0] != "ok"
    await sql(db, f"UPDATE audit_events SET description = 'x' WHERE id = '{edited}'",
              f"DELETE FROM audit_events WHERE id = '{deleted}'", replica=True)
    code, lines = await verify_lines(settings)
    assert code == 1 and any("BREAK tree leaf 1" in x for x in lines), lines
    code, out = await prove(settings, row_id=deleted)
    assert code == 1 and len(out) == 1 and "gone" in out[0], out


async def test_a_checkpoint_of_a_forked_tree_is_caught(
        db: str, settings: Settings, go_verifier: Path) -> None:
    """The log signing a second, different head (a split view): `audit verify` names the
    checkpoint, and no consistency proof links it to the real ones."""
    await grow(settings, random.Random(9), 2)
    first = (await sizes(db))[-1]
    await write(db, rows_for(6, "f"), [A, B, C, A, B, C])
    conn = await asyncpg.connect(db)
    try:
        await seal_all(conn)
        hashes = [r["leaf_hash"] for r in await conn.fetch(
            "SELECT leaf_hash FROM audit_tree_leaves ORDER BY leaf_index")]
    finally:
        await conn.close()
    forked = Frontier()
    forked.extend([*hashes[:-2], bytes(32), hashes[-1]])
    signer = settings.signer()
    from finpass_pipeline.audit.note import checkpoint_text

    note = signer.sign(checkpoint_text(signer.name, forked.size, forked.root()))
    await sql(db, f"INSERT INTO audit_checkpoints (tree_size, root_hash, note) VALUES "
                  f"({forked.size}, '\\x{forked.root().hex()}', $${note}$$)")
    code, lines = await verify_lines(settings)
    assert code == 1 and any("BREAK tree" in x and f"size {forked.size}" in x
                             and "forked" in x for x in lines), lines
    code, proof = await prove(settings, first=first, second=forked.size)
    assert code == 0
    verdict = go_check(go_verifier, signer.vkey(), consistency=[proof], checkpoints=[note])
    assert verdict["checkpoints"] == ["ok"]  # signed by us, yet…
    assert verdict["consistency"][0] != "ok"  # …not an extension of what we signed before


# --- erasure ---------------------------------------------------------------------------------

async def test_erasure_keeps_every_proof_valid_and_the_trigger_allows_only_it(
        db: str, settings: Settings, go_verifier: Path) -> None:
    """erase_rows NULLs one pseudonym's personal columns and salts (digest kept): verify still
    passes, proofs taken before and after verify; any other change is refused; a value put
    back into an erased row is caught."""
    rows = personal(rows_for(6, "e"), "e")
    target = rows[0].user_id_hash
    assert target is not None
    await write(db, rows[:4], [A, B, A, C])
    await checkpoint(settings)
    await write(db, rows[4:], [A, B])  # not sealed yet when erased
    mine = [r["id"] for r in await fetch(
        db, "SELECT id FROM audit_events WHERE user_id_hash = $1", target)]
    assert mine
    code, before = await prove(settings, row_id=mine[0])
    assert code == 0
    conn = await asyncpg.connect(db, server_settings={"role": "finpass_writer"})
    try:
        async with conn.transaction():
            assert await erase_rows(conn, target) == len(mine)
        assert await erase_rows(conn, target) == 0  # idempotent
        for statement in (
                f"UPDATE audit_events SET outcome = 'X' WHERE id = '{mine[0]}'",
                f"UPDATE audit_events SET ip_address = NULL WHERE user_id_hash <> '{target}'",
                f"UPDATE audit_events SET pii_digest = NULL WHERE id = '{mine[0]}'"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
    finally:
        await conn.close()
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await sql(db, f"UPDATE audit_events SET ip_address = NULL WHERE user_id_hash <> "
                      f"'{target}'")
    erased = await fetch(db, "SELECT * FROM audit_events WHERE user_id_hash = $1", target)
    for r in erased:
        assert all(r[c] is None for c in PERSONAL_COLUMNS) and r["pii_salt"] is None
        assert r["pii_digest"] is not None
    others = await fetch(db, "SELECT * FROM audit_events WHERE user_id_hash <> $1", target)
    assert all(r["ip_address"] and r["pii_salt"] for r in others)
    await checkpoint(settings)
    code, lines = await verify_lines(settings)
    assert code == 0, lines
    after = [p for _, p in [await prove(settings, row_id=i) for i in mine]]
    vkey = settings.signer().vkey()
    assert go_check(go_verifier, vkey, [before, *after])["inclusion"] == ["ok"] * (1 + len(mine))
    assert after[0]["row"]["ip_address"] is None and after[0]["leaf"] == before["leaf"]
    other = others[0]["id"]
    _, whole = await prove(settings, row_id=other)
    _, without = await prove(settings, row_id=other, personal=False)
    assert whole["row"]["ip_address"] and without["row"]["ip_address"] is None
    assert without["row"]["pii_salt"] is None and without["leaf"] == whole["leaf"]
    assert go_check(go_verifier, vkey, [whole, without])["inclusion"] == ["ok", "ok"]
    await sql(db, f"UPDATE audit_events SET ip_address = '198.51.100.1' WHERE id = '{mine[0]}'",
              replica=True)
    code, lines = await verify_lines(settings)
    assert code == 1 and any(f"row {mine[0]}" in x and "modified" in x for x in lines), lines
    _, tampered = await prove(settings, row_id=mine[0])
    assert go_check(go_verifier, vkey, [tampered])["inclusion"][0] != "ok"


# --- upgrade, retention, the daemon, the CLI -------------------------------------------------

async def test_an_upgraded_v13_log_becomes_one_tree_over_its_whole_history(
        fresh_db: str, key_file: Path, go_verifier: Path) -> None:
    """Rows written by the writer at V13 (hash version 1, no digest) and after V14 become one
    tree: digests filled when sealed, verify passes, proofs verify, erasure of a legacy row
    keeps it so; U14 gives back the V13 catalog."""
    await migrate(fresh_db, target=13)
    old = personal(rows_for(6, "legacy"), "legacy")
    await write(fresh_db, old[:4], [A, B, A, C], now=datetime.now(UTC) - timedelta(days=40))
    await write(fresh_db, old[4:], [A, B])
    await write(fresh_db, rows_for(2, "legacy-plain"), [A, B], chained=False)
    catalog_v13 = await _catalog(fresh_db)
    assert await migrate(fresh_db, target=14) == [14]
    s = Settings(database_url=fresh_db, audit_hash_key=SecretStr("test-audit-key"),
                 audit_signing_key=key_file, http_port=0)
    legacy = await fetch(fresh_db, "SELECT id, hash_version, pii_digest FROM audit_events")
    assert {(r["hash_version"], r["pii_digest"]) for r in legacy} == {(1, None)}
    await write(fresh_db, personal(rows_for(4, "new"), "new"), [A, B, C, A])
    await checkpoint(s)
    rows = await fetch(fresh_db, "SELECT id, hash_version, pii_salt FROM audit_events")
    assert len(rows) == 12 and all(r["pii_salt"] is not None for r in rows)
    assert sorted(r["hash_version"] for r in rows) == [1] * 8 + [2] * 4
    order = await ids_in_order(fresh_db)
    assert sorted(order) == sorted(r["id"] for r in rows)
    code, lines = await verify_lines(s)
    assert code == 0 and "tree of 12 leaves intact" in lines[-1], lines
    conn = await asyncpg.connect(fresh_db)
    try:
        assert await erase_rows(conn, old[0].user_id_hash or "") >= 1
    finally:
        await conn.close()
    await checkpoint(s)
    code, lines = await verify_lines(s)
    assert code == 0, lines
    proofs = [p for _, p in [await prove(s, row_id=i) for i in order]]
    assert go_check(go_verifier, s.signer().vkey(), proofs)["inclusion"] == ["ok"] * 12
    assert await rollback(fresh_db, to=13) == [14]
    assert await _catalog(fresh_db) == catalog_v13
    assert await migrate(fresh_db, target=14) == [14]


async def test_retention_removes_rows_not_leaves(db: str, settings: Settings,
                                                 go_verifier: Path) -> None:
    """After old partitions go, the tree keeps their leaves: verify passes, consistency proofs
    across the drop verify, a dropped row's inclusion proof is one line and exit 1."""
    expired = rows_for(3, "exp")
    for r in expired:
        r.retention_days = 365
    await write(db, expired, [A, B, A], now=datetime.now(UTC) - timedelta(days=800))
    await checkpoint(settings)
    gone = (await ids_in_order(db))[0]
    await write(db, rows_for(3, "kept"), [A, B, C])
    await checkpoint(settings)
    assert await audit_cli.retention(settings, say=lambda _: None) == 0
    assert await fetch(db, "SELECT 1 FROM audit_events WHERE id = $1", gone) == []
    await write(db, rows_for(2, "later"), [A, C])
    await checkpoint(settings)
    code, lines = await verify_lines(settings)
    assert code == 0 and "3 dropped by retention" in lines[-1], lines
    code, out = await prove(settings, row_id=gone)
    assert code == 1 and len(out) == 1 and "retention" in out[0], out
    recorded = await sizes(db)
    code, proof = await prove(settings, first=recorded[0], second=recorded[-1])
    assert code == 0
    assert go_check(go_verifier, settings.signer().vkey(), consistency=[proof]
                    )["consistency"] == ["ok"]


async def test_prove_sizes_must_be_recorded(db: str, settings: Settings) -> None:
    """--size / --from / --to name recorded checkpoint sizes, else exit 2 listing them; a row
    not sealed yet is exit 1."""
    code, out = await prove(settings, row_id=uuid.uuid4())
    assert code == 2 and "no checkpoint" in out[0]
    await grow(settings, random.Random(2), 2)
    recorded = await sizes(db)
    code, out = await prove(settings, row_id=(await ids_in_order(db))[0], size=recorded[0] + 1)
    assert code == 2 and out == [f"no recorded checkpoint has size {recorded[0] + 1}; recorded "
                                 f"sizes: {recorded[0]}, {recorded[1]}"]
    code, out = await prove(settings, first=recorded[0], second=recorded[1] + 5)
    assert code == 2 and "recorded sizes" in out[0]
    code, out = await prove(settings, first=recorded[1], second=recorded[0])
    assert code == 2
    await write(db, rows_for(1, "late"), [A])
    late = (await fetch(db, "SELECT id FROM audit_events ORDER BY audit_seq DESC LIMIT 1"))[0]
    code, out = await prove(settings, row_id=late["id"])
    assert code == 1 and "not sealed" in out[0]
    code, out = await prove(settings, row_id=uuid.uuid4())
    assert code == 1 and len(out) == 1


@pytest.mark.parametrize("mode", ["process", "task"])
async def test_the_daemon_seals_in_the_background_and_checkpoints_on_schedule(
        fresh_db: str, bootstrap: str, topic_prefix: str, key_file: Path, mode: str) -> None:
    """With the sealer on (a child process by default, or a task) and
    FINPASS_AUDIT_CHECKPOINT_EVERY_S, consumed events' audit rows become leaves and a
    checkpoint of them is recorded, without `audit seal` — as finpass_writer, whose grants
    suffice."""
    s = make_settings(fresh_db, bootstrap, topic_prefix, audit_signing_key=key_file,
                      audit_checkpoint_every_s=0.3, audit_seal_every_s=0.1, audit_sealer=mode,
                      database_role="finpass_writer")
    await prepare(s)
    events = [registered(f"did:example:sealed{i}") for i in range(12)]
    await send_events(s, events)
    async with running_daemon(s):
        await wait_caught_up(s, len(events))
        for _ in range(200):
            cps = await fetch(fresh_db, "SELECT max(tree_size) AS n FROM audit_checkpoints")
            if cps[0]["n"] == len(events):
                break
            await asyncio.sleep(0.1)
    assert (await fetch(fresh_db, "SELECT tree_size FROM audit_tree_state"))[0][0] == 12
    assert cps[0]["n"] == 12
    code, lines = await verify_lines(s)
    assert code == 0 and "signature verified" in lines[-1], lines


async def test_cli_prints_only_the_note_or_json_and_notices_on_stderr(
        db: str, key_file: Path) -> None:
    """public-key and checkpoint print the vkey / note alone; dev mode says so on stderr (and a
    size already recorded keeps its note); without a key outside dev mode: exit 2."""
    env = {"FINPASS_DATABASE_URL": db, "FINPASS_AUDIT_HASH_KEY": "k",
           "FINPASS_AUDIT_SIGNING_KEY": str(key_file)}
    await write(db, rows_for(3), [A, B, A])
    vkey, note = await asyncio.gather(asyncio.to_thread(cli, "audit", "public-key", env=env),
                                      asyncio.to_thread(cli, "audit", "checkpoint", env=env))
    assert vkey.returncode == 0 and vkey.stderr == "" and len(vkey.stdout.splitlines()) == 1
    assert vkey.stdout.startswith("finpass-pipeline/audit+")
    assert note.returncode == 0 and note.stdout.splitlines()[:2] == ["finpass-pipeline/audit",
                                                                     "3"], note
    assert note.stdout.splitlines()[4].startswith("\u2014 finpass-pipeline/audit ")
    proof = cli("audit", "prove", "--from", "3", "--to", "3", env=env)
    assert proof.returncode == 0 and json.loads(proof.stdout)["consistency"] == []
    dev = cli("audit", "checkpoint", env={"FINPASS_DATABASE_URL": db, "FINPASS_DEV_MODE": "true"})
    assert dev.returncode == 0 and "dev key" in dev.stderr
    assert dev.stdout == note.stdout  # size 3 is recorded already: its note stays the one
    none = cli("audit", "public-key", env={"FINPASS_DATABASE_URL": db})
    assert none.returncode == 2 and "FINPASS_AUDIT_SIGNING_KEY" in none.stderr
    bad = cli("audit", "prove", "--id", str(uuid.uuid4()), "--size", "7", env=env)
    assert bad.returncode == 2 and "recorded sizes: 3" in bad.stderr


async def test_the_servers_encoding_is_pythons_for_ascii_and_verify_rechecks_the_rest(
        db: str, settings: Settings) -> None:
    """`audit verify`'s fast path (sql_canonical): PostgreSQL builds the very bytes Python does
    for ASCII values (quotes, backslashes, control characters included), so it is taken; for
    non-ASCII or DEL it differs and the row is re-checked in Python: verify still passes."""
    from finpass_pipeline.audit import sql_canonical
    from finpass_pipeline.audit.merkle import LEAF_COLUMNS, leaf_bytes, leaf_hash

    texts = ["plain", 'q"uote\\back/slash', "ctl\n\t\r\b\f\x01\x1f", "caf\u00e9",
             "emoji \U0001F600", "del\x7f"]
    rows = rows_for(len(texts), "enc")
    for r, t in zip(rows, texts, strict=True):
        r.description, r.user_agent = t, t
    await write(db, rows, [A] * len(rows))
    conn = await asyncpg.connect(db)
    try:
        await seal_all(conn)
        stored = await conn.fetch(
            f"SELECT a.*, {sql_canonical.chain_canonical('a')} AS sql_canon, "
            f"{sql_canonical.leaf_hash('a')} AS sql_leaf, {sql_canonical.personal_ok('a')} AS pok "
            "FROM audit_events AS a ORDER BY chain_seq")
    finally:
        await conn.close()
    for r in stored:
        same = r["description"].isascii() and "\x7f" not in r["description"]
        assert (r["sql_canon"].encode() == canonical_row(r)) is same, r["description"]
        assert (bytes(r["sql_leaf"]) == leaf_hash(leaf_bytes([r[c] for c in LEAF_COLUMNS]))
                ) is same
        assert r["pok"] is same
    code, lines = await verify_lines(settings)
    assert code == 0, lines
