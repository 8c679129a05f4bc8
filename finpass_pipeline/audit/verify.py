"""`finpass-pipeline audit verify`: walk every audit hash chain and report its first break.

Reads one consistent snapshot (REPEATABLE READ, read-only), so a consumer writing meanwhile never
shows up as a break. Each chain is read in seq order through a server-side cursor: memory stays
bounded whatever the size of the log. Per chain the walk starts at its retention anchor (the last
row retention dropped) or at seq 1 with 64 zeros, and reports the FIRST of:

  modified   a row whose content no longer matches its row_hash (the next row still links to it)
  deleted    a seq gap, or a head further than the last row (tail rows deleted)
  inserted   a duplicate seq, a row below the anchor, a row linking past an extra row, rows
             after the head, or rows of a chain that has no head
  reordered  two neighbouring rows whose seqs were swapped
  broken     a hash mismatch that fits none of the above (e.g. a row deleted and the rest
             renumbered)
  checkpoint a row that a signed checkpoint recorded and that is gone or has another hash —
             also after the whole table was rewritten with recomputed hashes

`--since T` walks only the rows of each chain from its first row created at or after T, linking
the first one to the stored hash of its predecessor.

Hash versions (V14): a version-2 row hashes `pii_digest` instead of its personal values, and
its personal values must match the digest under its salt; an erased row (salt NULL) must have
every personal value NULL and its digest is taken as stored. An erased version-1 row cannot be
recomputed: its links are checked, its content is proved by its Merkle leaf (tree_verify).
On a V14+ schema `verify` also checks the Merkle tree (`tree_verify.verify_tree`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from finpass_pipeline.audit import sql_canonical
from finpass_pipeline.audit.chain import (
    CANONICAL_COLUMNS,
    CANONICAL_COLUMNS_V2,
    ZERO_HASH,
    canonical,
    personal_ok,
    row_hash,
)
from finpass_pipeline.audit.record import PERSONAL_COLUMNS
from finpass_pipeline.audit.tree_verify import TreeBreak, TreeReport, verify_tree

_ID, _SEQ, _HASH = 0, CANONICAL_COLUMNS.index("chain_seq"), len(CANONICAL_COLUMNS)
_VER, _SALT, _PII = _HASH + 1, _HASH + 2, _HASH + 3
_PERSONAL = [CANONICAL_COLUMNS.index(c) for c in PERSONAL_COLUMNS]
_V2 = [CANONICAL_COLUMNS.index(c) for c in CANONICAL_COLUMNS_V2 if c != "pii_digest"]
_SEQ_V2 = CANONICAL_COLUMNS_V2.index("chain_seq")
_SELECT = (f"SELECT {', '.join(CANONICAL_COLUMNS)}, row_hash, hash_version, pii_salt, pii_digest "
           "FROM audit_events")
_SELECT_V13 = (f"SELECT {', '.join(CANONICAL_COLUMNS)}, row_hash, 1 AS hash_version, "
               "NULL::bytea AS pii_salt, NULL::bytea AS pii_digest FROM audit_events")
FETCH_ROWS = 2_000
FETCH_FAST = 10_000
_FAST = (
    "SELECT a.chain_id, a.id, a.chain_seq, a.row_hash, "
    "encode(sha256(convert_to(coalesce(lag(a.row_hash) OVER w, $1) || "
    f"{sql_canonical.chain_canonical('a')}, 'UTF8')), 'hex') = a.row_hash "
    f"AND {sql_canonical.personal_ok('a')} AS ok "
    "FROM audit_events AS a WHERE a.chain_id IS NOT NULL "
    "WINDOW w AS (PARTITION BY a.chain_id ORDER BY a.chain_seq) "
    "ORDER BY a.chain_id, a.chain_seq")
"""Every chained row in (chain, seq) order with the server's verdict on its link (the first
row of a chain is linked to 64 zeros: an anchored chain's first row is re-checked here)."""


@dataclass(frozen=True)
class Break:
    """The first place a chain stops proving its rows."""

    chain_id: str
    kind: str
    seq: int | None
    row_id: uuid.UUID | None
    message: str

    def line(self) -> str:
        where = f"chain {self.chain_id}"
        if self.seq is not None:
            where += f" seq {self.seq}"
        if self.row_id is not None:
            where += f" row {self.row_id}"
        return f"BREAK {where}: {self.kind}: {self.message}"


@dataclass
class Report:
    chains: int = 0
    rows: int = 0
    unchained: int = 0
    checkpoint_entries: int = 0
    seconds: float = 0.0
    breaks: list[Break | TreeBreak] = field(default_factory=list)
    tree: TreeReport | None = None
    """The Merkle tree's check (V14+ schemas; None before)."""

    @property
    def intact(self) -> bool:
        return not self.breaks

    def summary(self) -> str:
        note = f", {self.checkpoint_entries} checkpoint entries matched" \
            if self.checkpoint_entries else ""
        unchained = f"; {self.unchained} unchained row(s) (written with chaining off or " \
            "before V4) are not covered" if self.unchained else ""
        tree = f"; {self.tree.summary()}" if self.tree is not None else ""
        return (f"audit log intact: {self.chains} chain(s), {self.rows} row(s) verified"
                f"{note} in {self.seconds:.2f}s{unchained}{tree}")


@dataclass(frozen=True)
class Head:
    seq: int
    hash: str


def _matches(row: Sequence[Any], prev: str, seq: int | None = None) -> bool:
    salt, digest = row[_SALT], row[_PII]
    if not personal_ok(salt, digest, [row[i] for i in _PERSONAL]):
        return False
    if row[_VER] == 2:
        values = [row[i] for i in _V2]
        values.append(digest.hex())
        if seq is not None:
            values[_SEQ_V2] = seq
    elif salt is None and digest is not None:
        return True  # an erased v1 row: only its leaf proves its content (docs/audit.md §6)
    else:
        values = list(row[:_HASH])
        if seq is not None:
            values[_SEQ] = seq
    return bool(row_hash(prev, canonical(values)) == row[_HASH])


class _Walk:
    """The state of one chain's walk; `feed` rows in (seq, id) order, then `finish`."""

    def __init__(self, chain_id: str, first_seq: int, prev: str, head: Head | None) -> None:
        self.chain_id = chain_id
        self.expected = first_seq
        self.prev, self.prev_id = prev, None
        self.prev2: str | None = None
        self.head = head
        self.suspect: Sequence[Any] | None = None
        self.found: Break | None = None
        self.rows = 0

    def _break(self, kind: str, row: Sequence[Any] | None, message: str,
               seq: int | None = None) -> None:
        self.found = Break(self.chain_id, kind, row[_SEQ] if row is not None else seq,
                           row[_ID] if row is not None else None, message)

    def _accept(self, row: Sequence[Any]) -> None:
        self.prev2, self.prev, self.prev_id = self.prev, row[_HASH], row[_ID]
        self.expected += 1

    def feed(self, row: Sequence[Any]) -> None:
        if self.found is not None:
            return
        self.rows += 1
        if self.suspect is not None:
            self._judge(self.suspect, row)
            return
        seq = row[_SEQ]
        if self.head is None:
            self._break("inserted", row, "the chain has rows but no head in audit_chain_heads "
                        "(rows inserted into an unknown chain, or its head deleted)")
        elif seq > self.head.seq:
            self._break("inserted", row, f"row after the chain's head (head is at seq "
                        f"{self.head.seq}): appended without going through the writer")
        elif seq == self.expected - 1 and self.prev_id is not None:
            self._break("inserted", row, f"duplicate seq {seq}: rows {self.prev_id} and "
                        f"{row[_ID]} both claim it (one of them was inserted)")
        elif seq < self.expected:
            self._break("inserted", row, f"seq {seq} is below the chain's start "
                        f"({self.expected}, after the retention anchor): row inserted")
        elif seq > self.expected:
            self._break("deleted", row, f"seq {self.expected}..{seq - 1} missing before this "
                        "row (rows deleted)")
        elif _matches(row, self.prev):
            self._accept(row)
        else:
            self.suspect = row

    def _judge(self, s: Sequence[Any], n: Sequence[Any] | None) -> None:
        """`s` (at the expected seq) did not hash right; the next row `n` tells us why."""
        e = self.expected
        if n is not None and n[_SEQ] == e:
            who = s if _matches(n, self.prev) else None
            self._break("inserted", who or s, f"duplicate seq {e}: rows {s[_ID]} and {n[_ID]} "
                        f"both claim it" + (f"; {s[_ID]} does not link (inserted)" if who
                                            else " (one of them was inserted)"))
        elif n is not None and n[_SEQ] == e + 1 and _matches(n, s[_HASH]):
            self._break("modified", s, "content does not match row_hash (the row was changed "
                        "after it was written; the next row still links to it)")
        elif (n is not None and n[_SEQ] == e + 1 and _matches(n, self.prev, e)
              and _matches(s, n[_HASH], e + 1)):
            self._break("reordered", s, f"rows {s[_ID]} and {n[_ID]} swapped places "
                        f"(seq {e} and {e + 1} exchanged)")
        elif self.prev2 is not None and _matches(s, self.prev2, e - 1):
            self._break("inserted", s, f"row {self.prev_id} (seq {e - 1}) was inserted before "
                        "this row and the rest renumbered")
        elif n is None and self.head is not None and self.head.seq == e \
                and self.head.hash == s[_HASH]:
            self._break("modified", s, "content does not match row_hash (the chain's last "
                        "row was changed after it was written)")
        else:
            self._break("broken", s, "row_hash does not match this row and its predecessor "
                        "(row modified, or rows before it deleted/inserted and renumbered)")

    def finish(self) -> None:
        if self.found is None and self.suspect is not None:
            self._judge(self.suspect, None)
        if self.found is not None or self.head is None:
            return
        last = self.expected - 1
        if last < self.head.seq:
            self._break("deleted", None, f"the head is at seq {self.head.seq} but the chain ends "
                        f"at seq {last}: rows {last + 1}..{self.head.seq} deleted (tail)",
                        seq=last + 1)
        elif self.head.hash != self.prev:
            self._break("modified", None, f"the last row's hash differs from the head's "
                        f"({self.head.hash[:12]}…): the tail was rewritten", seq=last)


async def _chains(conn: asyncpg.Connection) -> list[str]:
    """Every chain named by a row (skip scan over idx_audit_events_chain), head or anchor."""
    rows = await conn.fetch(
        "WITH RECURSIVE c AS ("
        " (SELECT chain_id FROM audit_events WHERE chain_id IS NOT NULL ORDER BY chain_id LIMIT 1)"
        " UNION ALL SELECT (SELECT a.chain_id FROM audit_events AS a WHERE a.chain_id > c.chain_id"
        "  ORDER BY a.chain_id LIMIT 1) FROM c WHERE c.chain_id IS NOT NULL)"
        " SELECT chain_id FROM c WHERE chain_id IS NOT NULL"
        " UNION SELECT chain_id FROM audit_chain_heads"
        " UNION SELECT chain_id FROM audit_retention_anchors ORDER BY 1")
    return [r["chain_id"] for r in rows]


async def verify(conn: asyncpg.Connection, since: datetime | None = None,
                 checkpoint: dict[str, Head] | None = None, vkey: str | None = None,
                 tree: bool = True, second: asyncpg.Connection | None = None) -> Report:
    """Walk every chain (or its part since `since`); `checkpoint` = signed heads to re-check;
    then (V14+, `tree`) the Merkle tree against the recorded checkpoints, whose signatures are
    checked under `vkey` when given. With a `second` connection the tree is checked on it at
    the same time, in the same snapshot (exported): two server processes, about twice the
    speed."""
    started = time.perf_counter()
    report = Report()
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        v14 = bool(await conn.fetchval("SELECT to_regclass('audit_tree_leaves') IS NOT NULL"))
        tree_task: asyncio.Task[TreeReport] | None = None
        if v14 and tree and second is not None:
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            tree_task = asyncio.create_task(_tree_in(second, snapshot, vkey, since is None))
        try:
            await _verify_in(conn, report, since, checkpoint, v14)
            if v14 and tree:
                report.tree = await tree_task if tree_task is not None else await verify_tree(
                    conn, vkey, chains_checked=since is None)
                if report.tree.found is not None:
                    report.breaks.append(report.tree.found)
        finally:
            if tree_task is not None and not tree_task.done():
                tree_task.cancel()
                with suppress(asyncio.CancelledError):
                    await tree_task
    report.seconds = time.perf_counter() - started
    return report


async def _tree_in(second: asyncpg.Connection, snapshot: str, vkey: str | None,
                   chains_checked: bool) -> TreeReport:
    async with second.transaction(isolation="repeatable_read", readonly=True):
        await second.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
        return await verify_tree(second, vkey, chains_checked=chains_checked)


async def _verify_in(conn: asyncpg.Connection, report: Report, since: datetime | None,
                     checkpoint: dict[str, Head] | None, v14: bool) -> None:
    """The chain walks (and the HMAC checkpoint) in the caller's transaction."""
    heads = {r["chain_id"]: Head(r["chain_seq"], r["row_hash"]) for r in await conn.fetch(
        "SELECT chain_id, chain_seq, row_hash FROM audit_chain_heads")}
    anchors = {r["chain_id"]: Head(r["chain_seq"], r["row_hash"]) for r in await conn.fetch(
        "SELECT DISTINCT ON (chain_id) chain_id, chain_seq, row_hash "
        "FROM audit_retention_anchors ORDER BY chain_id, chain_seq DESC")}
    select = _SELECT if v14 else _SELECT_V13
    starts: dict[str, int] = {}
    if since is not None:
        starts = {r["chain_id"]: r["s"] for r in await conn.fetch(
            "SELECT chain_id, min(chain_seq) AS s FROM audit_events "
            "WHERE created_at >= $1 AND chain_id IS NOT NULL GROUP BY chain_id", since)}
    chain_breaks: list[Break] = []
    fast = await _fast_walks(conn, select, heads, anchors) if v14 and since is None else {}
    for chain_id in await _chains(conn):
        report.chains += 1
        intact = fast.get(chain_id)
        if intact is not None:
            report.rows += intact
            continue
        walk = await _walk(conn, select, chain_id, heads.get(chain_id),
                           anchors.get(chain_id), starts, since is not None)
        report.rows += walk.rows
        if walk.found is not None:
            chain_breaks.append(walk.found)
    if checkpoint:
        report.checkpoint_entries = await _check_checkpoint(
            conn, checkpoint, anchors, {b.chain_id for b in chain_breaks}, chain_breaks)
    report.breaks.extend(chain_breaks)
    report.unchained = int(await conn.fetchval(
        "SELECT count(*) FROM audit_events WHERE chain_id IS NULL "
        "AND ($1::timestamptz IS NULL OR created_at >= $1)", since))


class _FastChain:
    """One chain's state in the fast pass."""

    def __init__(self, head: Head | None, anchor: Head | None) -> None:
        self.head = head
        self.base, self.prev = (anchor.seq, anchor.hash) if anchor else (0, ZERO_HASH)
        self.expected = self.base + 1
        self.bad = head is None

    def result(self) -> int | None:
        if self.bad or self.head is None or self.expected - 1 != self.head.seq \
                or self.prev != self.head.hash:
            return None
        return self.expected - 1 - self.base


async def _fast_walks(conn: asyncpg.Connection, select: str, heads: dict[str, Head],
                      anchors: dict[str, Head]) -> dict[str, int | None]:
    """Every chain checked in one pass with the server's hashes (sql_canonical): per chain
    seen, its row count when intact, None at anything unusual — `_walk` then walks it again
    and names the break. A row the server's encoding does not match (e.g. a non-ASCII value)
    is re-checked in Python."""
    out: dict[str, int | None] = {}
    chain: _FastChain | None = None
    current: str | None = None
    async for r in conn.cursor(_FAST, ZERO_HASH, prefetch=FETCH_FAST):
        if r[0] != current:
            if chain is not None and current is not None:
                out[current] = chain.result()
            current, chain = r[0], _FastChain(heads.get(r[0]), anchors.get(r[0]))
        assert chain is not None  # noqa: S101 -- set just above (mypy)
        if chain.bad:
            continue
        if r[2] != chain.expected:
            chain.bad = True
            continue
        first_anchored = chain.expected == chain.base + 1 and chain.prev != ZERO_HASH
        if not r[4] or first_anchored:
            full = await conn.fetchrow(f"{select} WHERE id = $1 AND chain_id = $2", r[1], r[0])
            if full is None or not _matches(full, chain.prev):
                chain.bad = True
                continue
        chain.prev, chain.expected = r[3], chain.expected + 1
    if chain is not None and current is not None:
        out[current] = chain.result()
    return out


async def _walk(conn: asyncpg.Connection, select: str, chain_id: str, head: Head | None,
                anchor: Head | None, starts: dict[str, int], partial: bool) -> _Walk:
    base_seq, base_hash = (anchor.seq, anchor.hash) if anchor else (0, ZERO_HASH)
    first, prev = base_seq + 1, base_hash
    if partial:
        # From the chain's first row since T (or just past its head: only the tip is checked).
        first = max(starts.get(chain_id, (head.seq if head else base_seq) + 1), base_seq + 1)
        if first - 1 > base_seq:
            before = await conn.fetchval(
                "SELECT row_hash FROM audit_events WHERE chain_id = $1 AND chain_seq = $2 "
                "ORDER BY id LIMIT 1", chain_id, first - 1)
            if before is None:
                walk = _Walk(chain_id, first, ZERO_HASH, head)
                walk._break("deleted", None, f"the row before the checked range (seq "
                            f"{first - 1}) is missing (row deleted)", seq=first - 1)
                return walk
            prev = before
    walk = _Walk(chain_id, first, prev, head)
    query = f"{select} WHERE chain_id = $1 AND chain_seq >= $2 ORDER BY chain_seq, id"
    async for row in conn.cursor(query, chain_id, first if partial else 0,
                                 prefetch=FETCH_ROWS):
        walk.feed(row)
        if walk.found is not None:
            break
    walk.finish()
    return walk


async def _check_checkpoint(conn: asyncpg.Connection, checkpoint: dict[str, Head],
                            anchors: dict[str, Head], broken: set[str],
                            breaks: list[Break]) -> int:
    """Each checkpointed (chain, seq) must still hold the signed hash; returns entries matched."""
    wanted = [(c, h) for c, h in sorted(checkpoint.items()) if c not in broken and h.seq > 0]
    rows = await conn.fetch(
        "SELECT w.c, w.s, a.id, a.row_hash FROM unnest($1::text[], $2::bigint[]) AS w(c, s) "
        "LEFT JOIN audit_events AS a ON a.chain_id = w.c AND a.chain_seq = w.s ORDER BY a.id",
        [c for c, _ in wanted], [h.seq for _, h in wanted])
    found: dict[str, list[tuple[uuid.UUID | None, str | None]]] = {}
    for r in rows:
        found.setdefault(r["c"], []).append((r["id"], r["row_hash"]))
    matched = 0
    for chain_id, signed in wanted:
        anchor = anchors.get(chain_id)
        if anchor is not None and signed.seq <= anchor.seq:
            # Dropped by retention: only the anchor itself can still be compared.
            if signed.seq == anchor.seq and signed.hash != anchor.hash:
                breaks.append(Break(chain_id, "checkpoint", signed.seq, None,
                                    "the retention anchor differs from the signed checkpoint"))
            else:
                matched += 1
            continue
        present = [(i, h) for i, h in found.get(chain_id, []) if i is not None]
        if not present:
            breaks.append(Break(chain_id, "checkpoint", signed.seq, None,
                                "the row the signed checkpoint recorded is gone (deleted)"))
        elif any(h != signed.hash for _, h in present):
            row_id = next(i for i, h in present if h != signed.hash)
            breaks.append(Break(chain_id, "checkpoint", signed.seq, row_id,
                                f"row_hash differs from the signed checkpoint "
                                f"({signed.hash[:12]}…): the log was rewritten"))
        else:
            matched += 1
    return matched
