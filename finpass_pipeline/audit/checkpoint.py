"""Signed checkpoints of the audit chains' heads (`audit checkpoint`, `audit verify --checkpoint`).

A hash chain proves rows were not changed relative to each other; someone who can write the
table can still recompute every hash after a change. A checkpoint pins the heads as they were:
a JSON file listing every chain's (chain_id, chain_seq, row_hash), signed with HMAC-SHA-256
under FINPASS_AUDIT_CHECKPOINT_KEY (kept away from the database's administrators). Later,
`verify --checkpoint FILE` checks the signature and that every recorded (chain, seq) still has
that hash, so a rewrite of the whole table is caught. File format:

    {"format": "finpass-audit-checkpoint/1", "created_at": "…+00:00",
     "chains": [{"chain_id": "finpass.payments:3", "chain_seq": 812, "row_hash": "…"}, …],
     "signature": "<hex HMAC-SHA-256 of the file's other fields, as compact sorted-key JSON>"}
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

import asyncpg

from finpass_pipeline.audit.verify import Head
from finpass_pipeline.errors import FinpassError

FORMAT = "finpass-audit-checkpoint/1"


class CheckpointError(FinpassError):
    """The checkpoint file is malformed, or its signature does not match the key."""


class StaleHeads(Exception):
    """A head does not match its row: the log is already broken; run `audit verify`."""


def _signature(payload: dict[str, Any], key: bytes) -> str:
    body = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


async def create(conn: asyncpg.Connection, key: bytes) -> dict[str, Any]:
    """Every chain head, signed; refuses when a head's row is missing or has another hash."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        heads = await conn.fetch(
            "SELECT h.chain_id, h.chain_seq, h.row_hash, "
            "EXISTS (SELECT 1 FROM audit_events AS a WHERE a.chain_id = h.chain_id "
            "AND a.chain_seq = h.chain_seq AND a.row_hash = h.row_hash) "
            "OR EXISTS (SELECT 1 FROM audit_retention_anchors AS r WHERE r.chain_id = h.chain_id "
            "AND r.chain_seq = h.chain_seq AND r.row_hash = h.row_hash) AS ok "
            "FROM audit_chain_heads AS h WHERE h.chain_seq > 0 ORDER BY h.chain_id")
    stale = [h["chain_id"] for h in heads if not h["ok"]]
    if stale:
        raise StaleHeads(f"head of chain {stale[0]} does not match its row "
                         f"({len(stale)} chain(s)); run `finpass-pipeline audit verify`")
    payload: dict[str, Any] = {
        "format": FORMAT,
        "created_at": datetime.now(UTC).isoformat(timespec="microseconds"),
        "chains": [{"chain_id": h["chain_id"], "chain_seq": h["chain_seq"],
                    "row_hash": h["row_hash"]} for h in heads],
    }
    return {**payload, "signature": _signature(payload, key)}


def load(text: str, key: bytes) -> dict[str, Head]:
    """The heads a checkpoint file records, after checking its format and signature."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise CheckpointError(f"not JSON: {e}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"not a {FORMAT} file")
    signature = data.pop("signature", None)
    if not isinstance(signature, str) or not hmac.compare_digest(
            signature, _signature(data, key)):
        raise CheckpointError("signature does not match (file altered, or another "
                              "FINPASS_AUDIT_CHECKPOINT_KEY)")
    try:
        return {str(c["chain_id"]): Head(int(c["chain_seq"]), str(c["row_hash"]))
                for c in data["chains"]}
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"malformed chains list: {e}") from None
