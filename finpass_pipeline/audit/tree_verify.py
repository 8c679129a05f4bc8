"""`audit verify`, the tree part: every leaf against its row, the root against the checkpoints.

In `verify`'s snapshot, one pass over `audit_tree_leaves` in leaf order (a server-side cursor,
joined to the rows): each leaf index follows the previous one; each row still there rebuilds
its `finpass-leaf-v1` leaf and must hash to the stored leaf hash (and its personal values must
match its digest); a row that is gone must be older than the oldest partition (dropped by
retention — its leaf hash stays); the stored hashes are folded into the root incrementally, and
at every recorded checkpoint's size the root must equal the checkpoint's. The latest checkpoint's
signature is checked under the public key (and every note's text against its row), and the
tree's head (`audit_tree_state`) must be the root of all leaves. Breaks:

  modified    a row whose leaf no longer matches (content or personal data changed)
  deleted     a leaf whose row is gone though its month was not dropped; a leaf index missing
  inserted    a leaf index out of order (a leaf inserted)
  checkpoint  a recorded checkpoint that is not this tree's (forked, forged or re-signed), or
              whose signature does not verify under the public key
  head        the stored tree head differs from the leaves
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from finpass_pipeline.audit import sql_canonical
from finpass_pipeline.audit.chain import personal_ok
from finpass_pipeline.audit.merkle import LEAF_COLUMNS, Frontier, leaf_bytes, leaf_hash
from finpass_pipeline.audit.note import NoteError, open_checkpoint
from finpass_pipeline.audit.record import PERSONAL_COLUMNS

FETCH_LEAVES = 5_000
_N = len(LEAF_COLUMNS)
_P = len(PERSONAL_COLUMNS)
_DIGEST, _CHAIN = LEAF_COLUMNS.index("pii_digest"), LEAF_COLUMNS.index("chain_id")
_FULL = ("SELECT " + ", ".join(f"a.{c}" for c in (*LEAF_COLUMNS, *PERSONAL_COLUMNS, "pii_salt"))
         + " FROM audit_events AS a WHERE a.id = $1 AND a.created_at = $2")


def _select(chains_checked: bool) -> str:
    """Leaf order, with the server's verdict per row (sql_canonical): present, leaf matches."""
    personal = "a.chain_id IS NOT NULL OR " if chains_checked else ""
    return (
        "SELECT l.leaf_index, l.leaf_hash, l.row_id, l.created_at, a.id IS NOT NULL AS present, "
        f"a.id IS NOT NULL AND {sql_canonical.leaf_hash('a')} = l.leaf_hash "
        f"AND ({personal}{sql_canonical.personal_ok('a')}) AS ok "
        "FROM audit_tree_leaves AS l LEFT JOIN audit_events AS a "
        "ON a.id = l.row_id AND a.created_at = l.created_at ORDER BY l.leaf_index")


@dataclass(frozen=True)
class TreeBreak:
    kind: str
    leaf_index: int | None
    row_id: Any
    message: str

    def line(self) -> str:
        where = "tree" + (f" leaf {self.leaf_index}" if self.leaf_index is not None else "")
        if self.row_id is not None:
            where += f" row {self.row_id}"
        return f"BREAK {where}: {self.kind}: {self.message}"


@dataclass
class TreeReport:
    size: int = 0
    leaves: int = 0
    dropped: int = 0
    unsealed: int = 0
    checkpoints: int = 0
    latest_checkpoint: int | None = None
    signature_checked: bool = False
    found: TreeBreak | None = None

    def summary(self) -> str:
        if self.latest_checkpoint is None:
            cp = "no checkpoint recorded yet"
        else:
            signed = "signature verified" if self.signature_checked else "signature not checked"
            cp = (f"{self.checkpoints} checkpoint(s) match, latest at size "
                  f"{self.latest_checkpoint} ({signed})")
        dropped = f", {self.dropped} dropped by retention" if self.dropped else ""
        unsealed = f"; {self.unsealed} row(s) not sealed yet" if self.unsealed else ""
        return f"tree of {self.size} leaves intact{dropped}; {cp}{unsealed}"


async def _row_matches(conn: asyncpg.Connection, row_id: Any, created_at: Any, stored: bytes,
                       chains_checked: bool) -> bool:
    r = await conn.fetchrow(_FULL, row_id, created_at)
    if r is None:
        return False
    values = list(r[:_N])
    salt, digest = r[_N + _P], values[_DIGEST]
    if not (chains_checked and values[_CHAIN] is not None) \
            and not personal_ok(salt, digest, list(r[_N:_N + _P])):
        return False
    return leaf_hash(leaf_bytes(values)) == stored


async def verify_tree(conn: asyncpg.Connection, vkey: str | None,
                      chains_checked: bool = False) -> TreeReport:
    """Check the tree in the caller's (repeatable read) transaction; the first break wins.

    `chains_checked`: the chain walk already matched every chained row's personal values to
    its digest in this snapshot, so only unchained rows need it here."""
    report = TreeReport()
    state = await conn.fetchrow("SELECT tree_size, root_hash FROM audit_tree_state")
    report.size = state["tree_size"]
    cps = await conn.fetch("SELECT tree_size, root_hash, note FROM audit_checkpoints "
                           "ORDER BY tree_size")
    roots = {r["tree_size"]: r["root_hash"] for r in cps}
    if cps:
        latest = cps[-1]
        report.latest_checkpoint = latest["tree_size"]
        if vkey is not None:
            for r in cps if len(cps) <= 1000 else [latest]:
                try:
                    cp = open_checkpoint(r["note"], vkey)
                except NoteError as e:
                    report.found = TreeBreak("checkpoint", None, None, f"the checkpoint of size "
                                             f"{r['tree_size']} does not verify: {e}")
                    return report
                if (cp.size, cp.root) != (r["tree_size"], r["root_hash"]):
                    report.found = TreeBreak("checkpoint", None, None, f"the note of size "
                                             f"{r['tree_size']} signs another tree head")
                    return report
            report.signature_checked = True
        if latest["tree_size"] > report.size:
            report.found = TreeBreak("checkpoint", None, None, f"a checkpoint of size "
                                     f"{latest['tree_size']} but the tree has {report.size} "
                                     "leaves (leaves removed, or the checkpoint forged)")
            return report
    oldest = None
    if await conn.fetchval("SELECT to_regproc('audit_partitions') IS NOT NULL"):
        oldest = await conn.fetchval("SELECT min(range_from) FROM audit_partitions()")
    frontier = Frontier()
    if 0 in roots and roots[0] != frontier.root():
        report.found = TreeBreak("checkpoint", None, None, "the checkpoint of size 0 is not "
                                 "the empty tree")
        return report
    async for r in conn.cursor(_select(chains_checked), prefetch=FETCH_LEAVES):
        index, stored = r[0], r[1]
        if index != frontier.size:
            kind = "inserted" if index < frontier.size else "deleted"
            report.found = TreeBreak(kind, frontier.size, None, f"leaf index {index} where "
                                     f"{frontier.size} was expected (tree tables altered)")
            return report
        if not r[4]:
            if oldest is not None and r[3] < oldest:
                report.dropped += 1
            else:
                report.found = TreeBreak("deleted", index, r[2], "the row of this "
                                         "leaf is gone, and retention did not drop its month")
                return report
        else:
            # The server's verdict is a proof when true; when false (or a non-ASCII value the
            # SQL encoding writes differently) the row is checked again here.
            if not r[5] and not await _row_matches(conn, r[2], r[3], stored, chains_checked):
                report.found = TreeBreak("modified", index, r[2], "the row no longer matches "
                                         "its leaf (changed after it was sealed)")
                return report
            report.leaves += 1
        frontier.append(stored)
        if frontier.size in roots and roots[frontier.size] != frontier.root():
            report.found = TreeBreak("checkpoint", index, None, f"the checkpoint of size "
                                     f"{frontier.size} is not this tree's root (a forked tree, "
                                     "or leaves changed)")
            return report
    if frontier.size != report.size or frontier.root() != state["root_hash"]:
        report.found = TreeBreak("head", None, None, f"the stored tree head (size "
                                 f"{report.size}) is not the root of the {frontier.size} leaves")
        return report
    report.checkpoints = len(cps)
    rows = int(await conn.fetchval("SELECT count(*) FROM audit_events"))
    report.unsealed = max(rows - report.leaves, 0)
    return report
