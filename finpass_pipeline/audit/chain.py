"""Tamper-evident audit rows: hash chains per source partition, written in the batch transaction.

Every audit row the pipeline writes belongs to one chain, `chain_id` = the Kafka topic-partition
its event came from (`finpass.payments:3`). A partition has one owner at a time, so the chains are
deterministic with any number of consumers; an event parked and applied later by another consumer
keeps its own partition's chain, and the row lock on the chain's head serialises the two writers.

    row_hash = sha256(prev_row_hash + canonical(row)).hexdigest()

`prev_row_hash` is the 64 lowercase hex characters of the previous row of the chain (64 zeros for
its first row, or the retention anchor once older rows were dropped), as ASCII bytes, followed by
the canonical encoding: the UTF-8 (in fact ASCII) bytes of a JSON array holding the row's values
in `CANONICAL_COLUMNS` order — exactly Python's `json.dumps(values, ensure_ascii=True,
separators=(",", ":"))`: no spaces, non-ASCII as `\\uXXXX` escapes, NULL as `null`, integers as
JSON numbers, UUIDs as lowercase hyphenated strings and timestamps as
`YYYY-MM-DDTHH:MM:SS.ffffff+00:00` (UTC, always six fractional digits). docs/audit.md shows a
worked example and a stand-alone verifier.

Hash version 2 (rows written on a V14+ schema, `hash_version` = 2): the personal columns
(`record.PERSONAL_COLUMNS`) leave the canonical array and `pii_digest` (lowercase hex) is appended
(`CANONICAL_COLUMNS_V2`), where pii_digest = SHA-256(pii_salt || canonical(personal values)) and
pii_salt is 16 random bytes per row. Erasure then NULLs the personal values and the salt and the
chain still verifies. Rows of version 1 keep their clear-value hashes.
"""

from __future__ import annotations

import hashlib
import json
import operator
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pydantic_core

from finpass_pipeline.audit.record import AUDIT_COLUMNS, PERSONAL_COLUMNS, AuditRow

ZERO_HASH = "0" * 64
"""The `prev_row_hash` of a chain's first row."""

PARTITIONS_AHEAD = 3
"""Months of audit partitions kept ready beyond the current one."""
_MARGIN = timedelta(days=28)
"""The writer extends the partitions when fewer than this remain ahead."""

CHAIN_COLUMNS: tuple[str, ...] = ("created_at", "chain_id", "chain_seq", "row_hash")
"""Written besides `AUDIT_COLUMNS` when chaining (created_at is set by the writer, in UTC)."""

CANONICAL_COLUMNS: tuple[str, ...] = (
    "id", "event_type", "user_id_hash", "session_id", "ip_address", "user_agent", "tenant_id",
    "resource_id", "resource_type", "action", "outcome", "severity", "description", "details",
    "previous_values", "new_values", "performed_by", "performed_by_role", "source_system",
    "correlation_id", "request_id", "duration_ms", "error_code", "error_message", "stack_trace",
    "client_version", "api_version", "geolocation", "device_fingerprint", "compliance_flags",
    "retention_days", "created_at", "event_id", "occurred_at", "hash_key_id", "chain_id",
    "chain_seq",
)
"""Every column of `audit_events` except `row_hash`, in table order: what a row's hash covers
(hash version 1)."""

CANONICAL_COLUMNS_V2: tuple[str, ...] = (
    *(c for c in CANONICAL_COLUMNS if c not in PERSONAL_COLUMNS), "pii_digest")
"""What a hash-version-2 row's hash covers: personal values only through `pii_digest` (hex)."""

DIGEST_COLUMNS: tuple[str, ...] = ("pii_salt", "pii_digest", "hash_version")
"""Written besides the chain columns on a V14+ schema."""

HASH_VERSION = 2
"""The chain hash version the writer uses on a V14+ schema."""

SALT_BYTES = 16

def _make_encoder() -> Callable[[list[Any]], str]:
    """`json.dumps(values, ensure_ascii=True, separators=(",", ":"))` for a list, minus the
    per-call set-up of a JSONEncoder (~1 µs of ~3 per row): the C encoder, built once."""
    c_make = getattr(json.encoder, "c_make_encoder", None)
    if c_make is None:  # no C speed-ups (e.g. PyPy): the same output, a little slower
        encoder: Callable[[list[Any]], str] = json.JSONEncoder(
            ensure_ascii=True, separators=(",", ":")).encode
        return encoder
    chunks = c_make(None, None, json.encoder.encode_basestring_ascii, None, ":", ",", False,
                    False, True)
    return lambda values: "".join(chunks(values, 0))


_encode = _make_encoder()


def _encode_fast(values: list[Any]) -> bytes:
    """`_encode(values).encode()` for values that are str, int, None or UUID, from the Rust
    encoder when its output is the same bytes (the writer's path: ~1.5 µs against ~6 with the
    UUIDs made text first). The two escape `"`, `\\` and control characters alike; they differ
    only on non-ASCII text (raw UTF-8 there, `\\uXXXX` here) and U+007F (escaped only here), so
    output with either takes the exact path. tests/unit/test_audit_encoding.py checks the two
    agree on generated text."""
    try:
        out = pydantic_core.to_json(values)
    except (ValueError, pydantic_core.PydanticSerializationError):  # e.g. a lone surrogate
        pass
    else:
        if out.isascii() and b"\x7f" not in out:
            return out
    return _encode([str(v) if isinstance(v, uuid.UUID) else v for v in values]).encode()


def chain_of(topic: str, partition: int) -> str:
    """The chain of an event from `topic`/`partition`: `finpass.payments:3`."""
    return f"{topic}:{partition}"


def ts_text(value: datetime) -> str:
    """A timestamp as the canonical encoding writes it (UTC, microseconds, `+00:00`)."""
    if value.tzinfo is UTC:  # every parsed event's (wire_types converts to UTC): no conversion
        return value.isoformat(timespec="microseconds")
    if value.utcoffset() is None:
        raise ValueError(f"naive timestamp {value!r} in an audit row")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def canonical(values: Sequence[Any]) -> bytes:
    """The canonical encoding of one row's values, in `CANONICAL_COLUMNS` order.

    Used by the verifier on rows read back from PostgreSQL (str, int, UUID, datetime, None).
    """
    return _encode([
        v if v is None or type(v) is str or type(v) is int  # exact types first: most values
        else str(v) if isinstance(v, uuid.UUID) else ts_text(v) if isinstance(v, datetime) else v
        for v in values
    ]).encode()


def personal_digest(salt: bytes, values: Sequence[str | None]) -> bytes:
    """SHA-256(salt || canonical JSON array of the `PERSONAL_COLUMNS` values, in that order)."""
    return hashlib.sha256(salt + _encode_fast(list(values))).digest()


def personal_ok(salt: bytes | None, digest: bytes | None,
                personal: Sequence[Any]) -> bool:
    """The personal values match the digest under the salt; erased (no salt): all NULL."""
    if digest is None:
        return salt is None
    if salt is None:
        return all(v is None for v in personal)
    return personal_digest(salt, personal) == digest


def row_digest(r: AuditRow, salt: bytes | None = None) -> tuple[bytes, bytes]:
    """A fresh salt for `r` (or `salt`, fresh from the caller) and the digest of its personal
    values."""
    if salt is None:
        salt = os.urandom(SALT_BYTES)
    return salt, personal_digest(salt, _personal_values(r))


def fresh_salts(n: int) -> list[bytes]:
    """`n` random salts from one read of the OS's generator (one call per row cost 1 µs)."""
    pool = os.urandom(SALT_BYTES * n)
    return [pool[i:i + SALT_BYTES] for i in range(0, SALT_BYTES * n, SALT_BYTES)]


_personal_values: Callable[[AuditRow], tuple[str | None, ...]] = operator.attrgetter(
    *PERSONAL_COLUMNS)
"""An audit row's `PERSONAL_COLUMNS` values, in digest order (C code, as fast as a tuple)."""


def canonical_row(row: Mapping[str, Any]) -> bytes:
    """The canonical encoding of a row read back (a mapping of its columns), in its own hash
    version: v1 over `CANONICAL_COLUMNS`, v2 over `CANONICAL_COLUMNS_V2` (digest as hex)."""
    if row.get("hash_version", 1) == HASH_VERSION:
        return canonical([row[c].hex() if c == "pii_digest" else row[c]
                          for c in CANONICAL_COLUMNS_V2])
    return canonical([row[c] for c in CANONICAL_COLUMNS])


def row_hash(prev: str, encoded: bytes) -> str:
    """SHA-256 hex of the previous row's hash (ASCII hex) followed by the canonical encoding."""
    return hashlib.sha256(prev.encode() + encoded).hexdigest()


def _canonical_audit_row(r: AuditRow, created_at: str, chain_id: str, seq: int) -> bytes:
    """`canonical()` of an `AuditRow` about to be written, without building a generic list.

    Must list exactly `CANONICAL_COLUMNS`; the columns the pipeline never fills are null.
    test_audit_integrity checks it against `canonical()` of the row read back.
    """
    event_id = str(r.event_id)
    return _encode([
        event_id if r.id == r.event_id else str(r.id), r.event_type, r.user_id_hash,
        r.session_id, r.ip_address, r.user_agent, r.tenant_id, r.resource_id,
        r.resource_type, r.action, r.outcome, r.severity,
        r.description, r.details, r.previous_values, r.new_values, r.performed_by,
        r.performed_by_role, r.source_system, r.correlation_id, r.request_id, None,
        r.error_code, r.error_message, None, None, None, r.geolocation, r.device_fingerprint,
        None, r.retention_days, created_at, event_id, ts_text(r.occurred_at),
        r.hash_key_id, chain_id, seq,
    ]).encode()


def _canonical_audit_row_v2(r: AuditRow, created_at: str, chain_id: str, seq: int,
                            digest: bytes) -> bytes:
    """`canonical()` of the `CANONICAL_COLUMNS_V2` values of an `AuditRow` about to be written."""
    return _encode_fast([
        r.id, r.event_type, r.user_id_hash,
        r.tenant_id, r.resource_id, r.resource_type, r.action, r.outcome, r.severity,
        r.description, r.previous_values, r.new_values, r.performed_by,
        r.performed_by_role, r.source_system, r.correlation_id, r.request_id, None,
        r.error_code, None, None, None, None, r.retention_days, created_at, r.event_id,
        ts_text(r.occurred_at), r.hash_key_id, chain_id, seq, digest.hex(),
    ])


def month_start(value: datetime) -> datetime:
    u = value.astimezone(UTC)
    return datetime(u.year, u.month, 1, tzinfo=UTC)


@dataclass
class _Schema:
    chained: bool
    """audit_chain_heads exists (V4+)."""
    partitioned: bool
    """audit_ensure_partitions exists (V5+)."""
    digests: bool
    """audit_events has pii_salt/pii_digest/hash_version (V14+)."""


class AuditWriter:
    """Writes a batch's audit rows: chained (default) or plain; one per Store.

    Remembers what the schema offers (a database below V4 gets plain rows, as before) and which
    months have partitions, so that the common batch costs no extra round trip for either.
    """

    def __init__(self, chained: bool = True) -> None:
        self.chained = chained
        self._schema: _Schema | None = None
        self._covered: tuple[datetime, datetime] | None = None

    async def append(self, conn: asyncpg.Connection, rows: Sequence[AuditRow],
                     sources: Sequence[tuple[str, int]], now: datetime | None = None) -> None:
        """Write `rows` (with `sources[i]` = topic, partition of row i) in `conn`'s transaction."""
        if not rows:
            return
        if self._schema is None:
            found = await conn.fetchrow(
                "SELECT to_regclass('audit_chain_heads') IS NOT NULL AS chained, "
                "to_regproc('audit_ensure_partitions') IS NOT NULL AS partitioned, "
                "to_regclass('audit_tree_leaves') IS NOT NULL AS digests")
            self._schema = _Schema(bool(found["chained"]), bool(found["partitioned"]),
                                   bool(found["digests"]))
        now = now if now is not None else datetime.now(UTC)
        if not self._schema.chained:
            await conn.copy_records_to_table("audit_events", records=[r.record() for r in rows],
                                             columns=list(AUDIT_COLUMNS))
            return
        if self._schema.partitioned and not (
                self._covered and self._covered[0] <= now < self._covered[1]):
            covered = await _covered(conn, now)
            if covered is None or covered[1] - now < _MARGIN:
                # Creating takes an advisory lock held to commit: only when a month is missing
                # or the next one is due (about monthly for a daemon that runs for months).
                covered = (month_start(now), await ensure_partitions(conn, now))
            self._covered = (covered[0], covered[1] - _MARGIN)
        await append_audit(conn, rows, sources, now, chained=self.chained,
                           digests=self._schema.digests)


async def _covered(conn: asyncpg.Connection, now: datetime) -> tuple[datetime, datetime] | None:
    """The contiguous range of existing partitions from the one holding `now` (catalog only)."""
    parts = await conn.fetch("SELECT range_from, range_to FROM audit_partitions() "
                             "WHERE range_to > $1 ORDER BY range_from", now)
    if not parts or parts[0]["range_from"] > now:
        return None
    start, end = parts[0]["range_from"], parts[0]["range_to"]
    for p in parts[1:]:
        if p["range_from"] != end:
            break
        end = p["range_to"]
    return start, end


async def ensure_partitions(conn: asyncpg.Connection, since: datetime | None = None,
                            months_ahead: int = PARTITIONS_AHEAD) -> datetime:
    """Create audit partitions for `since`'s month (past or future) through `months_ahead`
    months after the database's current one; returns the end of the covered range.

    Safe to call concurrently (the function serialises on an advisory lock). Only valid on a
    V5+ schema.
    """
    until: datetime = await conn.fetchval("SELECT audit_ensure_partitions($1, $2, $2)",
                                          months_ahead, since)
    return until


def audit_copy_columns(digests: bool = True) -> list[str]:
    """The columns `chain_records` fills, in its records' order."""
    return [*AUDIT_COLUMNS, *CHAIN_COLUMNS, *(DIGEST_COLUMNS if digests else ())]


def chain_tip(seq: int, row_hash: str, created_at: datetime) -> list[Any]:
    """A chain's tip as `chain_records` extends it: [seq, hash, created_at, its canonical
    text]. A new chain's is `chain_tip(0, ZERO_HASH, now)`."""
    return [seq, row_hash, created_at, ts_text(created_at)]


def chain_records(rows: Sequence[AuditRow], chain_ids: Sequence[str],
                  tips: dict[str, list[Any]], *, digests: bool = True) -> list[tuple[Any, ...]]:
    """The COPY records (`audit_copy_columns` order) of `rows`, row i on chain `chain_ids[i]`,
    each hashed onto its chain's tip in `tips`, which move to the new tips. The one builder of
    audit records: the writer's and the bench's database ceiling's."""
    records = []
    sha256 = hashlib.sha256
    salts = fresh_salts(len(rows)) if digests else []
    for i, (row, cid) in enumerate(zip(rows, chain_ids, strict=True)):
        tip = tips[cid]
        seq = tip[0] + 1
        if digests:
            salt, pii = row_digest(row, salts[i])
            digest = sha256(tip[1].encode() + _canonical_audit_row_v2(row, tip[3], cid, seq, pii)
                            ).hexdigest()
            records.append((*row.record(), tip[2], cid, seq, digest, salt, pii, HASH_VERSION))
        else:
            digest = sha256(tip[1].encode() + _canonical_audit_row(row, tip[3], cid, seq)
                            ).hexdigest()
            records.append((*row.record(), tip[2], cid, seq, digest))
        tip[0], tip[1] = seq, digest
    return records


async def append_audit(conn: asyncpg.Connection, rows: Sequence[AuditRow],
                       sources: Sequence[tuple[str, int]], now: datetime,
                       *, chained: bool = True, digests: bool = True) -> None:
    """COPY `rows` into audit_events, extending each row's chain; in the caller's transaction.

    1. make sure every touched chain has a head row (a new chain starts at seq 0, zero hash);
    2. lock the heads in chain_id order (`FOR UPDATE`, sorted: two consumers never deadlock);
    3. give each row the next seq of its chain and hash it, in batch order;
    4. COPY the rows; move the heads to the new tips.
    A chain's rows get `created_at` = max(now, its previous tip's created_at), so created_at
    never decreases along a chain (a consumer with a slower clock cannot interleave), and
    retention, which drops the oldest month first, always removes a prefix of each chain.
    With `chained=False` the chain columns stay NULL and no head is touched. With `digests`
    (a V14+ schema; `AuditWriter` finds out) each row gets a fresh `pii_salt`, its `pii_digest`
    and hash version 2; without, hash version 1 (clear values in the hash) as before V14.
    """
    if len(rows) != len(sources):
        raise ValueError(f"{len(rows)} audit rows but {len(sources)} sources")
    columns = audit_copy_columns(digests)
    if not chained:
        records = []
        for r in rows:
            extra: tuple[Any, ...] = (*row_digest(r), HASH_VERSION) if digests else ()
            records.append((*r.record(), now, None, None, None, *extra))
        await conn.copy_records_to_table("audit_events", records=records, columns=columns)
        return
    chain_ids = [chain_of(t, p) for t, p in sources]
    touched = sorted(set(chain_ids))
    await conn.execute(
        "INSERT INTO audit_chain_heads (chain_id, chain_seq, row_hash, updated_at) "
        "SELECT c, 0, $2, $3 FROM unnest($1::text[]) AS c ORDER BY c "
        "ON CONFLICT (chain_id) DO NOTHING", touched, ZERO_HASH, now)
    heads = await conn.fetch(
        "SELECT chain_id, chain_seq, row_hash, updated_at FROM audit_chain_heads "
        "WHERE chain_id = ANY($1::text[]) ORDER BY chain_id FOR UPDATE", touched)
    tips: dict[str, list[Any]] = {}
    for h in heads:
        created = max(now, h["updated_at"]) if h["chain_seq"] else now
        tips[h["chain_id"]] = chain_tip(h["chain_seq"], h["row_hash"], created)
    records = chain_records(rows, chain_ids, tips, digests=digests)
    await conn.copy_records_to_table("audit_events", records=records, columns=columns)
    await conn.execute(
        "UPDATE audit_chain_heads AS h SET chain_seq = v.s, row_hash = v.h, updated_at = v.u "
        "FROM unnest($1::text[], $2::bigint[], $3::text[], $4::timestamptz[]) AS v(c, s, h, u) "
        "WHERE h.chain_id = v.c",
        touched, [tips[c][0] for c in touched], [tips[c][1] for c in touched],
        [tips[c][2] for c in touched])

