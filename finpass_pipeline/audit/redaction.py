"""Erasure of the personal data in audit rows (CONTRACT.md §5 "Right to erasure").

`erase_rows(conn, user_id_hash)` sets the personal columns (`record.PERSONAL_COLUMNS`) and
`pii_salt` of every audit row of that pseudonym to NULL, in the caller's transaction, keeping
`pii_digest` and every other column. The chain (hash version 2) and the Merkle leaf hold the
personal values only through `pii_digest`, so every hash, proof and checkpoint stays valid; the
values cannot be recovered or confirmed any more (the salt is gone). The append-only trigger
(V14) allows exactly this UPDATE. Rows written before V14 first get a salt and digest (the
sealer's fill) so that their leaf is unchanged by the erasure.
"""

from __future__ import annotations

import asyncpg

from finpass_pipeline.audit.record import PERSONAL_COLUMNS
from finpass_pipeline.audit.sealer import fill_digests_where

_ERASE = (
    f"UPDATE audit_events SET {', '.join(f'{c} = NULL' for c in PERSONAL_COLUMNS)}, "
    "pii_salt = NULL WHERE user_id_hash = $1 AND (pii_salt IS NOT NULL OR "
    + " OR ".join(f"{c} IS NOT NULL" for c in PERSONAL_COLUMNS) + ")"
)


async def erase_rows(conn: asyncpg.Connection, user_id_hash: str) -> int:
    """Erase the personal data of every audit row of `user_id_hash`; returns the rows changed.

    Runs in the caller's transaction (one is opened when there is none). Idempotent: rows
    already erased are not touched again.
    """
    async with conn.transaction():
        await fill_digests_where(conn, "a.user_id_hash = $1", user_id_hash)
        status = await conn.execute(_ERASE, user_id_hash)
    return int(status.split()[-1])
