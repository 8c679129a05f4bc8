"""`finpass-pipeline audit user DID`: one person's whole audit trail, across pseudonym keys.

Audit rows never hold a DID, only its HMAC under the key named in `hash_key_id`. Keys rotate
(FINPASS_AUDIT_HASH_KEY/_ID is the current one; FINPASS_AUDIT_HASH_KEYS keeps the old ones), and
history is never rewritten: a data-subject access request computes the DID's pseudonym under
every known key and collects the rows where it is the subject (`user_id_hash`), the actor
(`performed_by`) or mentioned inside `details` (e.g. as a payee).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from finpass_pipeline.audit.pseudonym import pseudonym

TRAIL_COLUMNS = ("created_at", "occurred_at", "event_type", "action", "outcome", "severity",
                 "resource_type", "resource_id", "hash_key_id", "correlation_id", "event_id",
                 "id", "chain_id", "chain_seq")


@dataclass(frozen=True)
class TrailRow:
    match: str
    """subject, actor or mentioned (several joined by '+')."""
    key_id: str
    """The pseudonym key the row was written under."""
    values: dict[str, Any]


def pseudonyms(did: str, keys: dict[str, bytes]) -> dict[str, str]:
    """The DID's pseudonym under each key id."""
    return {kid: pseudonym(key, did) for kid, key in sorted(keys.items())}


async def user_trail(conn: asyncpg.Connection, did: str, keys: dict[str, bytes]
                     ) -> list[TrailRow]:
    """Every audit row about or by `did`, oldest first (scans `details` and `performed_by`)."""
    names = pseudonyms(did, keys)
    hashes = list(names.values())
    rows = await conn.fetch(
        f"SELECT {', '.join(TRAIL_COLUMNS)}, user_id_hash, performed_by, details "
        "FROM audit_events WHERE user_id_hash = ANY($1::text[]) "
        "OR performed_by = ANY($1::text[]) OR details LIKE ANY($2::text[]) "
        "ORDER BY audit_seq", hashes, [f"%{h}%" for h in hashes])
    key_of = {h: kid for kid, h in names.items()}
    trail = []
    for r in rows:
        match = [m for m, hit in (("subject", r["user_id_hash"] in key_of),
                                  ("actor", r["performed_by"] in key_of),
                                  ("mentioned", any(h in (r["details"] or "") for h in hashes)))
                 if hit]
        trail.append(TrailRow("+".join(match), r["hash_key_id"] or "?",
                              {c: r[c] for c in TRAIL_COLUMNS}))
    return trail
