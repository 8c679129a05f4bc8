"""`finpass-pipeline analyst backfill`: fill the domain rows' pseudonym columns (V15).

The consumer writes `users.user_id_hash`, `credentials.user_id_hash` / `subject_id_hash` and
`payments.payer_id_hash` / `payee_id_hash` when it inserts a row, from the HMAC it computes for
the audit row anyway. Rows written before V15 have NULL there, and SQL cannot fill them: the key
(`FINPASS_AUDIT_HASH_KEY`) is the application's, never the database's. This command holds the key
and fills them, in short transactions of `batch_size` rows, so the consumer keeps running.
Until it has run, analysts see NULL for those rows — never a DID.

`--all` recomputes every row, not only the NULLs: after the pseudonym key was rotated, so that
domain rows carry the current key's pseudonyms (audit rows keep the key they were written with,
`hash_key_id`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from finpass_pipeline.audit.pseudonym import Pseudonymizer
from finpass_pipeline.db import command_connection
from finpass_pipeline.errors import FinpassError
from finpass_pipeline.settings import Settings

Say = Callable[[str], None]


class BackfillError(FinpassError):
    """The backfill cannot run (no database, not migrated to V15)."""


@dataclass(frozen=True)
class Column:
    """One pseudonym column and the raw column it is computed from."""

    table: str
    target: str
    source: str
    key: str = "id"


COLUMNS = (
    Column("users", "user_id_hash", "did"),
    Column("credentials", "subject_id_hash", "subject_did"),
    Column("payments", "payer_id_hash", "payer_did"),
    Column("payments", "payee_id_hash", "payee_did"),
)


async def _backfill_column(conn: asyncpg.Connection, pz: Pseudonymizer, col: Column,
                           batch_size: int, every: bool) -> int:
    done = 0
    after = None  # keyset over the primary key: each row is read at most once
    while True:
        rows = await conn.fetch(
            f"SELECT {col.key} AS k, {col.source} AS v FROM {col.table} "
            f"WHERE ($1::uuid IS NULL OR {col.key} > $1) AND {col.source} IS NOT NULL"
            f"{'' if every else f' AND {col.target} IS NULL'} ORDER BY {col.key} LIMIT $2",
            after, batch_size)
        if not rows:
            return done
        keys = [r["k"] for r in rows]
        hashes = [pz.hash(r["v"]) for r in rows]
        status = await conn.execute(
            f"UPDATE {col.table} AS t SET {col.target} = u.h "
            "FROM unnest($1::uuid[], $2::text[]) AS u(k, h) "
            f"WHERE t.{col.key} = u.k AND t.{col.target} IS DISTINCT FROM u.h",
            keys, hashes)
        done += int(status.split()[-1])
        after = keys[-1]


async def _backfill_holders(conn: asyncpg.Connection, batch_size: int) -> int:
    """credentials.user_id_hash is the holder's users.user_id_hash: copied, not recomputed."""
    done = 0
    while True:
        status = await conn.execute(
            "UPDATE credentials AS c SET user_id_hash = u.user_id_hash FROM users AS u "
            "WHERE c.id IN (SELECT x.id FROM credentials AS x JOIN users AS y ON y.id = x.user_id"
            " WHERE y.user_id_hash IS NOT NULL"
            " AND x.user_id_hash IS DISTINCT FROM y.user_id_hash LIMIT $1)"
            " AND u.id = c.user_id", batch_size)
        n = int(status.split()[-1])
        done += n
        if n < batch_size:
            return done


async def backfill(settings: Settings, *, batch_size: int = 5000, every: bool = False,
                   say: Say | None = None) -> dict[str, int]:
    """Fill (or with `every`, recompute) the pseudonym columns; returns rows changed per column.

    Raises:
        BackfillError: the database is unreachable or not migrated to V15.
    """
    pz = Pseudonymizer(settings.hash_key(), settings.audit_hash_key_id)
    changed: dict[str, int] = {}
    async with command_connection(
            settings.database_url, settings.database_role, "users",
            error=BackfillError) as conn:
        if not await conn.fetchval(
                "SELECT count(*) = 1 FROM pg_attribute WHERE attrelid = 'users'::regclass"
                " AND attname = 'user_id_hash' AND NOT attisdropped"):
            raise BackfillError("users.user_id_hash is missing: run `finpass-pipeline migrate` "
                                "(V15) first")
        for col in COLUMNS:
            changed[f"{col.table}.{col.target}"] = await _backfill_column(
                conn, pz, col, batch_size, every)
            if say:
                say(f"{col.table}.{col.target}: {changed[f'{col.table}.{col.target}']} row(s)")
        changed["credentials.user_id_hash"] = await _backfill_holders(conn, batch_size)
        if say:
            say(f"credentials.user_id_hash: {changed['credentials.user_id_hash']} row(s)")
    return changed
