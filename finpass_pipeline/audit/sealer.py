"""The sealer: integrates committed audit rows into the Merkle tree, after their commit.

The chains stay the sequencer: a chain's seqs are assigned under its head's row lock, held to
commit, so in any snapshot the committed rows of a chain are a prefix 1..k of it. One round
(`seal`), in one transaction under an advisory lock (one sealer per database at a time):

1. per chain, the committed rows after its sealed position (`audit_tree_chains`), plus rows
   without a chain (written with chaining off, or before V4) that are not leaves yet;
2. rows written before V14 get their `pii_salt` and `pii_digest` first (the trigger allows
   exactly that UPDATE);
3. sorted by (created_at, chain_id, chain_seq, id) — rows of a chain keep their chain order —
   they become leaves `size`, `size + 1`, …: `audit_tree_leaves`, the completed subtrees in
   `audit_tree_nodes`, the new size and root in `audit_tree_state`.

Ingest never waits on it: the consumer's transaction touches none of these tables. The daemon
runs `run_sealer` as a background task (FINPASS_AUDIT_SEALER, on by default), which also signs a
checkpoint every FINPASS_AUDIT_CHECKPOINT_EVERY_S when set.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import structlog

from finpass_pipeline.audit.chain import SALT_BYTES, personal_digest
from finpass_pipeline.audit.merkle import (
    LEAF_COLUMNS,
    LEAF_ENCODING,
    Frontier,
    Getter,
    leaf_bytes,
    leaf_hash,
    needed,
    subtree,
)
from finpass_pipeline.audit.note import Signer, checkpoint_text
from finpass_pipeline.audit.record import PERSONAL_COLUMNS
from finpass_pipeline.audit.sql_canonical import json_array
from finpass_pipeline.db import describe
from finpass_pipeline.retry import sleep_or_stop

log = structlog.get_logger("finpass.sealer")

SEALER_LOCK = "finpass.audit_sealer"
ROUND_ROWS = 20_000
"""At most this many rows per chain per round (a round is one transaction)."""

_COLS = ", ".join(f"a.{c}" for c in (*LEAF_COLUMNS, *PERSONAL_COLUMNS, "pii_salt"))
_LEAF_N = len(LEAF_COLUMNS)
_ID, _CREATED, _CHAIN, _SEQ = (LEAF_COLUMNS.index(c) for c in
                               ("id", "created_at", "chain_id", "chain_seq"))
_DIGEST = LEAF_COLUMNS.index("pii_digest")


T = TypeVar("T")


class TreeError(Exception):
    """The stored tree lacks a hash it should have (tables tampered or half-restored)."""


async def fetch_hashes(conn: asyncpg.Connection, keys: set[tuple[int, int]]
                       ) -> dict[tuple[int, int], bytes]:
    leaves = sorted(i for level, i in keys if level == 0)
    nodes = sorted((level, i) for level, i in keys if level > 0)
    found: dict[tuple[int, int], bytes] = {}
    if leaves:
        for r in await conn.fetch("SELECT leaf_index, leaf_hash FROM audit_tree_leaves "
                                  "WHERE leaf_index = ANY($1::bigint[])", leaves):
            found[(0, r["leaf_index"])] = r["leaf_hash"]
    if nodes:
        for r in await conn.fetch(
                "SELECT n.level, n.idx, n.hash FROM unnest($1::smallint[], $2::bigint[]) "
                "AS k(l, i) JOIN audit_tree_nodes AS n ON n.level = k.l AND n.idx = k.i",
                [k[0] for k in nodes], [k[1] for k in nodes]):
            found[(r["level"], r["idx"])] = r["hash"]
    missing = keys - found.keys()
    if missing:
        level, index = min(missing)
        raise TreeError(f"the tree has no stored hash for level {level} index {index} "
                        f"({len(missing)} missing): audit_tree_* tables altered")
    return found


async def resolve(conn: asyncpg.Connection, compute: Callable[[Getter], T]) -> T:
    """Run `compute` over the stored tree: collect the hashes it needs, fetch them, compute."""
    hashes = await fetch_hashes(conn, needed(compute))
    return compute(lambda level, index: hashes[(level, index)])


async def load_frontier(conn: asyncpg.Connection, size: int) -> Frontier:
    keys = Frontier.edge_keys(size)

    def edge(get: Getter) -> dict[int, bytes]:
        return {level: subtree(get, i << level, (i + 1) << level) for level, i in keys}

    return Frontier(size, await resolve(conn, edge))


@dataclass(frozen=True)
class SealResult:
    sealed: int
    tree_size: int
    root: bytes


def _digest_of(row: Mapping[str, Any] | asyncpg.Record, salt: bytes) -> bytes:
    return personal_digest(salt, [row[c] for c in PERSONAL_COLUMNS])


async def _fill_digests(conn: asyncpg.Connection, rows: list[asyncpg.Record]
                        ) -> dict[Any, bytes]:
    """Give rows written before V14 their salt and digest; returns id -> digest."""
    if not rows:
        return {}
    salts = [os.urandom(SALT_BYTES) for _ in rows]
    digests = [_digest_of(r, s) for r, s in zip(rows, salts, strict=True)]
    done = {r["id"] for r in await conn.fetch(
        "UPDATE audit_events AS a SET pii_salt = v.s, pii_digest = v.d "
        "FROM unnest($1::uuid[], $2::timestamptz[], $3::bytea[], $4::bytea[]) AS v(i, c, s, d) "
        "WHERE a.id = v.i AND a.created_at = v.c AND a.pii_digest IS NULL RETURNING a.id",
        [r["id"] for r in rows], [r["created_at"] for r in rows], salts, digests)}
    out = {r["id"]: d for r, d in zip(rows, digests, strict=True) if r["id"] in done}
    rest = [r["id"] for r in rows if r["id"] not in done]
    if rest:  # filled (or erased) meanwhile by someone else: take what is stored
        for r in await conn.fetch("SELECT id, pii_digest FROM audit_events WHERE id = ANY($1)",
                                  rest):
            out[r["id"]] = r["pii_digest"]
    return out


async def fill_digests_where(conn: asyncpg.Connection, where: str, *args: Any) -> int:
    """Fill the missing digests of the rows matching `where` (e.g. before an erasure)."""
    rows = await conn.fetch(f"SELECT a.id, a.created_at, {_COLS} FROM audit_events AS a "
                            f"WHERE a.pii_digest IS NULL AND ({where})", *args)
    return len(await _fill_digests(conn, rows))


# The server builds the leaf (sql_canonical) and hashes it when its text is printable ASCII —
# then it is byte for byte Python's (tests: test_the_servers_encoding_is_pythons…); otherwise
# (`fast` NULL: a non-ASCII value, or a row without its digest yet) Python builds it.
_LIGHT = (
    "SELECT a.id, a.created_at, a.chain_id, a.chain_seq, "
    "CASE WHEN a.pii_digest IS NOT NULL AND t.leaf ~ '^[ -~]*$' "
    "THEN sha256('\\x00'::bytea || convert_to(t.leaf, 'UTF8')) END AS fast ")
_LEAF_TEXT = (f"CROSS JOIN LATERAL (SELECT {json_array(LEAF_COLUMNS, 'a', LEAF_ENCODING)} "
              "AS leaf) AS t ")


async def _pending(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    """Per chain the rows after its sealed position, and unsealed rows without a chain:
    (id, created_at, chain_id, chain_seq, the server's leaf hash or NULL)."""
    chained = await conn.fetch(
        f"{_LIGHT} FROM audit_chain_heads AS h "
        "LEFT JOIN audit_tree_chains AS tc ON tc.chain_id = h.chain_id "
        "CROSS JOIN LATERAL (SELECT * FROM audit_events AS e WHERE e.chain_id = h.chain_id "
        " AND e.chain_seq > COALESCE(tc.sealed_seq, 0) ORDER BY e.chain_seq LIMIT $1) AS a "
        f"{_LEAF_TEXT} WHERE h.chain_seq > COALESCE(tc.sealed_seq, 0)", limit)
    unchained = await conn.fetch(
        f"{_LIGHT} FROM audit_events AS a {_LEAF_TEXT} WHERE a.chain_id IS NULL AND NOT EXISTS "
        "(SELECT 1 FROM audit_tree_leaves AS l WHERE l.row_id = a.id) "
        "ORDER BY a.created_at, a.id LIMIT $1", limit)
    return [*chained, *unchained]


async def _full_rows(conn: asyncpg.Connection, rows: list[asyncpg.Record]
                     ) -> dict[Any, asyncpg.Record]:
    if not rows:
        return {}
    found = await conn.fetch(
        f"SELECT {_COLS} FROM unnest($1::uuid[], $2::timestamptz[]) AS k(i, c) "
        "JOIN audit_events AS a ON a.id = k.i AND a.created_at = k.c",
        [r["id"] for r in rows], [r["created_at"] for r in rows])
    return {r["id"]: r for r in found}


async def seal(conn: asyncpg.Connection, limit: int = ROUND_ROWS) -> SealResult | None:
    """One sealing round (see the module doc); None when another sealer holds the lock."""
    async with conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtext($1))",
                                   SEALER_LOCK):
            return None
        state = await conn.fetchrow("SELECT tree_size, root_hash FROM audit_tree_state")
        rows = await _pending(conn, limit)
        if not rows:
            return SealResult(0, state["tree_size"], state["root_hash"])
        sealed_seq = {r["chain_id"]: r["sealed_seq"] for r in await conn.fetch(
            "SELECT chain_id, sealed_seq FROM audit_tree_chains")}
        # Per chain only a contiguous run after the sealed position (a gap means tampering or
        # a torn read; the rest waits for the next round and `audit verify`).
        kept, nxt = [], dict(sealed_seq)
        for r in sorted(rows, key=lambda r: (r["chain_id"] or "", r["chain_seq"] or 0)):
            cid = r["chain_id"]
            if cid is not None:
                # A chain new to the tree starts at its first row still there (retention may
                # have dropped older ones before V14; the chain walk checks the anchor).
                if cid in nxt and r["chain_seq"] != nxt[cid] + 1:
                    continue
                nxt[cid] = r["chain_seq"]
            kept.append(r)
        full = await _full_rows(conn, [r for r in kept if r["fast"] is None])
        digests = await _fill_digests(conn, [f for f in full.values()
                                             if f["pii_digest"] is None])
        kept.sort(key=lambda r: (r["created_at"], r["chain_id"] or "", r["chain_seq"] or 0,
                                 r["id"]))
        frontier = await load_frontier(conn, state["tree_size"])
        leaves, nodes = [], []
        for r in kept:
            h = r["fast"]
            if h is None:
                values = list(full[r["id"]][:_LEAF_N])
                if values[_DIGEST] is None:
                    values[_DIGEST] = digests[r["id"]]
                h = leaf_hash(leaf_bytes(values))
            leaves.append((frontier.size, r["id"], r["created_at"], h))
            nodes.extend(frontier.append(h))
        await conn.copy_records_to_table(
            "audit_tree_leaves", records=leaves,
            columns=["leaf_index", "row_id", "created_at", "leaf_hash"])
        if nodes:
            await conn.copy_records_to_table("audit_tree_nodes", records=nodes,
                                             columns=["level", "idx", "hash"])
        moved = {c: s for c, s in nxt.items() if sealed_seq.get(c) != s}
        if moved:
            await conn.execute(
                "INSERT INTO audit_tree_chains (chain_id, sealed_seq) "
                "SELECT * FROM unnest($1::text[], $2::bigint[]) ON CONFLICT (chain_id) "
                "DO UPDATE SET sealed_seq = EXCLUDED.sealed_seq", list(moved), list(moved.values()))
        root = frontier.root()
        await conn.execute("UPDATE audit_tree_state SET tree_size = $1, root_hash = $2, "
                           "updated_at = now()", frontier.size, root)
        return SealResult(len(kept), frontier.size, root)


async def seal_all(conn: asyncpg.Connection, limit: int = ROUND_ROWS) -> SealResult | None:
    """Seal rounds until nothing is pending; None when another sealer holds the lock."""
    total, result = 0, None
    while True:
        result = await seal(conn, limit)
        if result is None:
            return None
        total += result.sealed
        if result.sealed == 0:
            return SealResult(total, result.tree_size, result.root)


async def record_checkpoint(conn: asyncpg.Connection, signer: Signer) -> tuple[int, str]:
    """Sign the tree head as sealed now and record it; (size, note). A size already recorded
    keeps its note (same size, same root)."""
    async with conn.transaction():
        state = await conn.fetchrow("SELECT tree_size, root_hash FROM audit_tree_state")
        size, root = state["tree_size"], state["root_hash"]
        note = signer.sign(checkpoint_text(signer.name, size, root))
        stored = await conn.fetchval(
            "INSERT INTO audit_checkpoints (tree_size, root_hash, note) VALUES ($1, $2, $3) "
            "ON CONFLICT (tree_size) DO NOTHING RETURNING note", size, root, note)
        if stored is None:
            stored = await conn.fetchval(
                "SELECT note FROM audit_checkpoints WHERE tree_size = $1", size)
        return size, str(stored)


async def run_sealer(pool: asyncpg.Pool, stop: asyncio.Event, every_s: float,
                     signer: Signer | None = None, checkpoint_every_s: float | None = None
                     ) -> None:
    """The daemon's background sealer: seal every `every_s`, checkpoint every
    `checkpoint_every_s` (with `signer`); a failed round is logged and retried, never fatal."""
    loop = asyncio.get_running_loop()
    next_checkpoint = loop.time() + (checkpoint_every_s or 0)
    while not stop.is_set():
        try:
            async with pool.acquire() as conn:
                result = await seal_all(conn)
                if result is not None and result.sealed:
                    log.debug("audit_sealed", rows=result.sealed, tree_size=result.tree_size)
                if signer is not None and checkpoint_every_s and loop.time() >= next_checkpoint:
                    size, _ = await record_checkpoint(conn, signer)
                    next_checkpoint = loop.time() + checkpoint_every_s
                    log.info("audit_checkpoint", tree_size=size)
        except Exception as e:  # noqa: BLE001 -- the sealer must outlive any one failed round
            log.warning("audit_seal_failed", error=describe(e))
        await sleep_or_stop(every_s, stop)
