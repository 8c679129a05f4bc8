"""The canonical encoding (chain.py, merkle.py) built by PostgreSQL, for `audit verify`'s fast path.

`audit verify` must read every row; decoding ~40 columns and encoding them in Python costs
~20 µs a row. Instead the server builds each row's canonical JSON text and hashes it (C, in the
backend process, beside the Python client), and the client only compares flags. The SQL text
equals Python's encoding for ASCII values (PostgreSQL's `to_json` escapes `"`, `\\`, `\\b`,
`\\f`, `\\n`, `\\r`, `\\t` and other control characters as lowercase `\\u00XX`, as Python does);
for a non-ASCII value or DEL it differs, the hash does not match — and the row is checked again
in Python before anything is reported. A mismatch therefore costs time, never a false break;
a match is a proof (the encoding is injective), so the fast path is sound.
"""

from __future__ import annotations

from collections.abc import Sequence

from finpass_pipeline.audit.chain import CANONICAL_COLUMNS, CANONICAL_COLUMNS_V2
from finpass_pipeline.audit.merkle import LEAF_COLUMNS, LEAF_ENCODING
from finpass_pipeline.audit.record import PERSONAL_COLUMNS

_UUID = {"id", "event_id"}
_TS = {"created_at", "occurred_at"}
_INT = {"duration_ms", "retention_days", "chain_seq", "audit_seq", "hash_version"}
_HEX = {"pii_digest"}


def json_value(column: str, alias: str = "a") -> str:
    c = f"{alias}.{column}"
    if column in _UUID:
        return f"""coalesce('"' || {c}::text || '"', 'null')"""
    if column in _TS:
        return (f"""coalesce('"' || to_char({c} AT TIME ZONE 'UTC', """
                f"""'YYYY-MM-DD"T"HH24:MI:SS.US') || '+00:00"', 'null')""")
    if column in _INT:
        return f"coalesce({c}::text, 'null')"
    if column in _HEX:
        return f"""coalesce('"' || encode({c}, 'hex') || '"', 'null')"""
    return f"coalesce(to_json({c})::text, 'null')"


def json_array(columns: Sequence[str], alias: str = "a", first: str | None = None) -> str:
    parts = [f"'\"{first}\"'"] if first is not None else []
    parts += [json_value(c, alias) for c in columns]
    # One concat_ws call (every part is non-NULL): a chain of `||` would copy the text ~40 times.
    return "('[' || concat_ws(',', " + ", ".join(parts) + ") || ']')"


def personal_ok(alias: str = "a") -> str:
    """SQL boolean: the personal values match the digest under the salt (erased: all NULL)."""
    a = alias
    nulls = " AND ".join(f"{a}.{c} IS NULL" for c in PERSONAL_COLUMNS)
    return (f"(CASE WHEN {a}.pii_digest IS NULL THEN {a}.pii_salt IS NULL "
            f"WHEN {a}.pii_salt IS NULL THEN ({nulls}) "
            f"ELSE sha256({a}.pii_salt || convert_to({json_array(PERSONAL_COLUMNS, a)}, 'UTF8'))"
            f" = {a}.pii_digest END)")


def chain_canonical(alias: str = "a") -> str:
    """SQL text: the row's canonical encoding in its hash version."""
    return (f"(CASE WHEN {alias}.hash_version = 2 THEN {json_array(CANONICAL_COLUMNS_V2, alias)}"
            f" ELSE {json_array(CANONICAL_COLUMNS, alias)} END)")


def leaf_hash(alias: str = "a") -> str:
    """SQL bytea: SHA-256(0x00 || finpass-leaf-v1 leaf) of the row."""
    return (f"sha256('\\x00'::bytea || convert_to("
            f"{json_array(LEAF_COLUMNS, alias, LEAF_ENCODING)}, 'UTF8'))")
