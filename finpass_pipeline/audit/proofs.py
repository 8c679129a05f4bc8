"""`audit prove`: inclusion and consistency proofs as CONTRACT.md §6 JSON.

Every checkpoint a proof carries is one the log recorded (`audit_checkpoints`); a size that is
not recorded is bad usage (`ProofUsage`, exit 2, naming the sizes there are). A row that is not
in the tree (dropped by retention, not sealed yet, or absent) is `ProofUnavailable` (exit 1).
"""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Any

import asyncpg

from finpass_pipeline.audit.chain import ts_text
from finpass_pipeline.audit.merkle import (
    LEAF_COLUMNS,
    LEAF_ENCODING,
    consistency_path,
    inclusion_path,
    leaf_bytes,
)
from finpass_pipeline.audit.record import PERSONAL_COLUMNS
from finpass_pipeline.audit.sealer import resolve
from finpass_pipeline.errors import FinpassError


class ProofUsage(FinpassError):
    """A size that is not a recorded checkpoint's, or no checkpoint at all (exit 2)."""


class ProofUnavailable(FinpassError):
    """The row is not in the tree (or is gone): one line, exit 1."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def json_value(value: Any) -> Any:
    """A column value as the proof's `row` shows it (the leaf's canonical form)."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return ts_text(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


async def _checkpoints(conn: asyncpg.Connection) -> dict[int, str]:
    return {r["tree_size"]: r["note"] for r in await conn.fetch(
        "SELECT tree_size, note FROM audit_checkpoints ORDER BY tree_size")}


def _pick(recorded: dict[int, str], size: int | None) -> int:
    if not recorded:
        raise ProofUsage("no checkpoint is recorded yet: run `finpass-pipeline audit checkpoint`")
    if size is None:
        return max(recorded)
    if size not in recorded:
        raise ProofUsage(f"no recorded checkpoint has size {size}; recorded sizes: "
                         + ", ".join(str(s) for s in recorded))
    return size


async def inclusion(conn: asyncpg.Connection, *, event_id: uuid.UUID | None = None,
                    row_id: uuid.UUID | None = None, size: int | None = None,
                    personal: bool = True) -> dict[str, Any]:
    """The inclusion proof of the audit row of `event_id` (or with id `row_id`). Without
    `personal` the row's personal values and salt are left out (null): the leaf, which holds
    only their digest, is the same, so the proof still verifies — as for an erased row."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        recorded = await _checkpoints(conn)
        tree_size = _pick(recorded, size)
        cols = ", ".join(f"a.{c}" for c in (*LEAF_COLUMNS, *PERSONAL_COLUMNS, "pii_salt"))
        if event_id is not None:
            # Every audit row the pipeline writes has id = event_id (one row per event; an
            # operator's row gets a fresh id for both), so the primary key (id, created_at)
            # finds it: no index on event_id is kept for this one look-up (V19).
            row = await conn.fetchrow(f"SELECT {cols} FROM audit_events AS a "
                                      "WHERE a.id = $1 AND a.event_id = $1 "
                                      "ORDER BY a.audit_seq LIMIT 1", event_id)
            what = f"event {event_id}"
        else:
            row = await conn.fetchrow(f"SELECT {cols} FROM audit_events AS a WHERE a.id = $1 "
                                      "LIMIT 1", row_id)
            what = f"audit row {row_id}"
        leaf = await conn.fetchrow(
            "SELECT leaf_index, leaf_hash FROM audit_tree_leaves WHERE row_id = $1 "
            "ORDER BY leaf_index LIMIT 1", row["id"] if row is not None else row_id)
        if row is None:
            if leaf is not None:
                raise ProofUnavailable(f"{what} was dropped by retention: its leaf "
                                       f"{leaf['leaf_index']} stays in the tree, the row is gone")
            raise ProofUnavailable(f"no audit row for {what} (never written, or dropped by "
                                   "retention)")
        if leaf is None:
            raise ProofUnavailable(f"{what} is not sealed into the tree yet (the sealer runs "
                                   "in the consumer; `finpass-pipeline audit seal`)")
        index = leaf["leaf_index"]
        if index >= tree_size:
            raise ProofUnavailable(f"{what} is leaf {index}, after the checkpoint of size "
                                   f"{tree_size}: run `audit checkpoint` and prove against it")
        path = await resolve(conn, lambda get: inclusion_path(get, index, tree_size))
    values = [row[c] for c in LEAF_COLUMNS]
    return {
        "leaf_index": index,
        "tree_size": tree_size,
        "leaf": _b64(leaf_bytes(values)),
        "leaf_encoding": LEAF_ENCODING,
        "inclusion": [_b64(h) for h in path],
        "checkpoint": recorded[tree_size],
        "row": {c: json_value(row[c]) if personal or c in LEAF_COLUMNS else None
                for c in (*LEAF_COLUMNS, *PERSONAL_COLUMNS, "pii_salt")},
    }


async def consistency(conn: asyncpg.Connection, first: int, second: int) -> dict[str, Any]:
    """The consistency proof between two recorded checkpoints."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        recorded = await _checkpoints(conn)
        _pick(recorded, first)
        _pick(recorded, second)
        if first > second:
            raise ProofUsage(f"--from {first} is larger than --to {second}")
        path = await resolve(conn, lambda get: consistency_path(get, first, second))
    return {
        "first_size": first,
        "second_size": second,
        "consistency": [_b64(h) for h in path],
        "first_checkpoint": recorded[first],
        "second_checkpoint": recorded[second],
    }
