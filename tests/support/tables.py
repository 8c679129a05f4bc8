"""Comparing whole databases: every table, column by column, in an order that does not depend on
how the rows were written (the reference-semantics and schema-version tests).

Columns that legitimately differ between two correct runs are listed in `EXCLUDED` / `MASKED`,
each with why; every other column, including ones added later, is compared.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

STABLE_ORDER: dict[str, str] = {
    "users": "did",
    "credentials": "id",
    "credential_status": "credential_id",
    "payments": "id",
    "audit_events": "event_id",
    "processed_events": "event_id",
    "parked_events": "event_id",
    "dead_letter_events": "topic, kafka_partition, kafka_offset",
    "consumer_offsets": "topic, kafka_partition",
    "person_keys": "user_id_hash",
}
"""The tables compared, each with an order that does not depend on how it was written."""

EXCLUDED: dict[str, dict[str, str]] = {
    "users": {
        # Moved by user.seen (users topic) and auth.login_succeeded (security topic): the
        # contract leaves their interleaving, hence these values, open (§5). The final
        # last_seen is checked against the model instead (it never moves backwards, so it is
        # the latest applied sighting).
        "last_seen": "cross-topic",
        "updated_at": "cross-topic (touched by the same sightings)",
        # AES-GCM with a random nonce: the bytes differ on every write. The plaintext is
        # compared through the blind indexes (email_index, phone_index).
        "email_enc": "random nonce (compared via email_index)",
        "phone_enc": "random nonce (compared via phone_index)",
    },
    "credentials": {"credential_jwt_enc": "random nonce (compared via credential_hash)"},
    "person_keys": {
        "wrapped_key": "a random data key under a random nonce",
        "created_at": "wall clock",
    },
    "audit_events": {
        "created_at": "wall clock of the commit",
        "chain_seq": "position in the partition's chain: a parked event joins it when its "
                     "subject arrives from another topic, so its position depends on "
                     "cross-topic interleaving",
        "row_hash": "covers created_at and chain_seq",
        "audit_seq": "global commit order: across partitions and consumers",
        "pii_salt": "16 random bytes per row (V14), so that a digest reveals nothing",
        "pii_digest": "covers pii_salt (the personal values it digests are compared)",
    },
    "processed_events": {"processed_at": "wall clock"},
    "parked_events": {"parked_at": "wall clock"},
    "dead_letter_events": {
        "id": "serial: insertion order across partitions and consumers",
        "consumer_group": "each run consumes with its own group, by construction",
        "dead_lettered_at": "wall clock",
    },
    "consumer_offsets": {
        "consumer_group": "each run consumes with its own group, by construction",
        "updated_at": "wall clock",
        # The stop-the-line count in memory starts again at 0 when a consumer (re)starts or
        # takes a partition over (README: restarting is the operator's decision to go on).
        "consecutive_dead_letters": "reset by restarts and rebalances, by design",
    },
}
"""Columns left out of the comparison, with why. Every other column, including ones added
later, is compared (the column list comes from information_schema)."""

MASKED: dict[str, dict[str, str]] = {
    "audit_events": {
        # The before/after last_seen of a sighting depends on which sightings of the other
        # topic were applied before it (see users.last_seen above).
        "previous_values": "event_type IN ('USER_SEEN', 'AUTH_LOGIN_SUCCEEDED')",
        "new_values": "event_type IN ('USER_SEEN', 'AUTH_LOGIN_SUCCEEDED')",
    },
}
"""Columns compared except on the rows where the SQL condition holds (there: NULL)."""


async def compared_columns(conn: asyncpg.Connection, table: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
        "AND table_name = $1 ORDER BY ordinal_position", table)
    columns = [r["column_name"] for r in rows]
    assert columns, f"table {table} not found"
    missing = (set(EXCLUDED.get(table, {})) | set(MASKED.get(table, {}))) - set(columns)
    assert not missing, f"{table}: excluded/masked columns {missing} do not exist (schema change?)"
    return [c for c in columns if c not in EXCLUDED.get(table, {})]


def row_expression(table: str, columns: Sequence[str]) -> str:
    """A row as text; `$1` is a topic prefix to leave out (chain ids and topics name it), so two
    runs on different topics compare equal ('' when both share the topics)."""
    masked = MASKED.get(table, {})
    parts = [f"CASE WHEN {masked[c]} THEN NULL ELSE {c} END" if c in masked else c
             for c in columns]
    # ROW(...)::text quotes and escapes each value and tells NULL from '': unambiguous.
    return f"replace(ROW({', '.join(parts)})::text, $1::text, '')"


async def table_checksums(dsn: str, topic_prefix: str = "") -> dict[str, tuple[int, str]]:
    """(row count, md5 of the ordered rows' text) per compared table."""
    conn = await asyncpg.connect(dsn)
    try:
        out: dict[str, tuple[int, str]] = {}
        for table, order in STABLE_ORDER.items():
            expr = row_expression(table, await compared_columns(conn, table))
            got = await conn.fetchrow(
                f"SELECT count(*) AS n, md5(coalesce(string_agg({expr}, E'\\n' ORDER BY "
                f"{order}), '')) AS digest FROM {table}", topic_prefix)
            out[table] = (int(got["n"]), str(got["digest"]))
        return out
    finally:
        await conn.close()


async def table_rows(dsn: str, table: str, topic_prefix: str = "") -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        expr = row_expression(table, await compared_columns(conn, table))
        return [r["t"] for r in await conn.fetch(
            f"SELECT {expr} AS t FROM {table} ORDER BY {STABLE_ORDER[table]}", topic_prefix)]
    finally:
        await conn.close()


async def first_difference(reference_dsn: str, dsn: str, table: str,
                           prefixes: tuple[str, str] = ("", "")) -> str:
    """The first row where the two databases differ, for the assertion message (`prefixes`:
    each one's topic prefix, when they consumed different topics)."""
    conn = await asyncpg.connect(dsn)
    try:
        columns = await compared_columns(conn, table)
    finally:
        await conn.close()
    ours = await table_rows(reference_dsn, table, prefixes[0])
    theirs = await table_rows(dsn, table, prefixes[1])
    for i, (a, b) in enumerate(zip(ours, theirs, strict=False)):
        if a != b:
            return (f"{table}: first differing row #{i} (ordered by {STABLE_ORDER[table]}; "
                    f"columns {', '.join(columns)}):\n  reference: {a}\n  this run:  {b}")
    if len(ours) != len(theirs):
        extra = ours[len(theirs)] if len(ours) > len(theirs) else theirs[len(ours)]
        side = "reference" if len(ours) > len(theirs) else "this run"
        return (f"{table}: reference has {len(ours)} rows, this run {len(theirs)}; first "
                f"extra row ({side}): {extra}")
    return f"{table}: checksums differ but no row does (collation?)"
