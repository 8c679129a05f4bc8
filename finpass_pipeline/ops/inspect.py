"""`finpass-pipeline dead-letters list|show`, `parked list`, `offsets show` (docs/operations.md).

Read-only: each opens one connection (as FINPASS_DATABASE_ROLE when set), reads, prints. The
raw bytes of a dead letter are shown escaped, never written to the terminal as they came: a
message may hold control characters, invalid UTF-8 or a NUL.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from finpass_pipeline.db import command_connection
from finpass_pipeline.errors import FinpassError
from finpass_pipeline.settings import Settings

Say = Callable[[str], None]

SHOW_MAX_BYTES = 64 * 1024
"""`dead-letters show` prints at most this much of a value (it says how much it left out)."""


def connect_checked(settings: Settings, table: str
                    ) -> AbstractAsyncContextManager[asyncpg.Connection]:
    """`db.command_connection` with the settings' database and role."""
    return command_connection(settings.database_url, settings.database_role, table)


def escaped(value: bytes | None) -> str:
    """`value` as one printable line: UTF-8 text with `\\xNN` for bytes that are not, and
    backslash escapes for control characters (a NUL, an escape sequence, a line break)."""
    if value is None:
        return "(none)"
    text = value.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode()
                   for c in text)


def _age(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172_800:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def _table(say: Say, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    say("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    for r in rows:
        say("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


# --- dead letters --------------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetterFilter:
    topic: str | None = None
    event_type: str | None = None
    reason: str | None = None
    """A PostgreSQL regular expression (case-insensitive) the reason must match."""
    since: datetime | None = None
    until: datetime | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses, args = [], []
        for sql, value in (("topic = ${}", self.topic), ("event_type = ${}", self.event_type),
                           ("reason ~* ${}", self.reason), ("dead_lettered_at >= ${}", self.since),
                           ("dead_lettered_at < ${}", self.until)):
            if value is not None:
                args.append(value)
                clauses.append(sql.format(len(args)))
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


async def dead_letters_list(settings: Settings, filt: DeadLetterFilter, limit: int = 100,
                            fmt: str = "table", say: Say = print) -> int:
    where, args = filt.where()
    async with connect_checked(settings, "dead_letter_events") as conn:
        total = int(await conn.fetchval(f"SELECT count(*) FROM dead_letter_events{where}", *args))
        rows = await conn.fetch(
            "SELECT id, dead_lettered_at, consumer_group, topic, kafka_partition, kafka_offset, "
            "event_type, event_id, octet_length(raw_value) AS bytes, reason, handled_as "
            f"FROM dead_letter_events{where} ORDER BY id LIMIT ${len(args) + 1}", *args, limit)
    if fmt == "json":
        for r in rows:
            say(json.dumps({**dict(r), "dead_lettered_at": r["dead_lettered_at"].isoformat(),
                            "event_id": str(r["event_id"]) if r["event_id"] else None}))
        return 0
    _table(say, ("id", "dead_lettered_at", "source", "event_type", "bytes", "handled",
                 "reason"), [
        (str(r["id"]), r["dead_lettered_at"].astimezone(UTC).isoformat(timespec="seconds"),
         f"{r['topic']}[{r['kafka_partition']}]@{r['kafka_offset']}", r["event_type"] or "-",
         str(r["bytes"] if r["bytes"] is not None else 0), r["handled_as"] or "-",
         escaped(r["reason"].encode())[:100]) for r in rows])
    say(f"{len(rows)} of {total} dead letter(s)" + (f" (--limit {limit})" if total > len(rows)
                                                     else ""))
    return 0


async def dead_letters_show(settings: Settings, letter_id: int, say: Say = print) -> int:
    async with connect_checked(settings, "dead_letter_events") as conn:
        r = await conn.fetchrow("SELECT * FROM dead_letter_events WHERE id = $1", letter_id)
    if r is None:
        raise FinpassError(f"no dead letter with id {letter_id}")
    value: bytes | None = r["raw_value"]
    say(f"id              {r['id']}")
    say(f"dead_lettered_at {r['dead_lettered_at'].astimezone(UTC).isoformat()}")
    say(f"consumer_group  {r['consumer_group']}")
    say(f"source          {r['topic']}[{r['kafka_partition']}]@{r['kafka_offset']}")
    say(f"event_type      {r['event_type'] or '-'}")
    say(f"event_id        {r['event_id'] or '-'}")
    say(f"reason          {escaped(r['reason'].encode())}")
    if r["handled_as"]:
        say(f"handled         {r['handled_as']} at {r['handled_at'].astimezone(UTC).isoformat()}"
            f" by {escaped(r['handled_by'].encode())}: "
            f"{escaped((r['handled_note'] or '').encode())}")
    else:
        say("handled         no (waiting: `dead-letters replay --id ID` or `discard ID`)")
    say(f"key             {escaped(r['message_key'])}")
    size = len(value) if value is not None else 0
    shown = value[:SHOW_MAX_BYTES] if value is not None else None
    note = f", first {SHOW_MAX_BYTES:,} shown" if size > SHOW_MAX_BYTES else ""
    say(f"value           ({size:,} bytes{note}; escaped: \\xNN is a byte that is not UTF-8)")
    say(escaped(shown))
    return 0


# --- parked events -------------------------------------------------------------------------


async def parked_list(settings: Settings, limit: int = 100, fmt: str = "table",
                      say: Say = print) -> int:
    async with connect_checked(settings, "parked_events") as conn:
        total = int(await conn.fetchval("SELECT count(*) FROM parked_events"))
        rows = await conn.fetch(
            "SELECT event_id, event_type, subject_type, subject_key, topic, kafka_partition, "
            "kafka_offset, parked_at, extract(epoch FROM now() - parked_at) AS age "
            "FROM parked_events ORDER BY parked_at, topic, kafka_partition, kafka_offset "
            "LIMIT $1", limit)
    if fmt == "json":
        for r in rows:
            say(json.dumps({**dict(r), "event_id": str(r["event_id"]),
                            "parked_at": r["parked_at"].isoformat(),
                            "age_seconds": float(r["age"])}, default=str))
        return 0
    _table(say, ("parked_at", "age", "event_type", "waits_for", "source", "event_id"), [
        (r["parked_at"].astimezone(UTC).isoformat(timespec="seconds"), _age(float(r["age"])),
         r["event_type"], f"{r['subject_type']} {escaped(r['subject_key'].encode())}",
         f"{r['topic']}[{r['kafka_partition']}]@{r['kafka_offset']}", str(r["event_id"]))
        for r in rows])
    say(f"{len(rows)} of {total} parked event(s), oldest first"
        + (f" (--limit {limit})" if total > len(rows) else ""))
    return 0


# --- offsets -------------------------------------------------------------------------------


async def offsets_show(settings: Settings, group: str | None = None, say: Say = print) -> int:
    """The database's offsets per partition of `group` (default: FINPASS_CONSUMER_GROUP), with
    the broker's high-water mark and the group's Kafka commit when the broker answers."""
    group = group or settings.consumer_group
    async with connect_checked(settings, "consumer_offsets") as conn:
        rows = await conn.fetch(
            "SELECT topic, kafka_partition, next_offset, consecutive_dead_letters, updated_at "
            "FROM consumer_offsets WHERE consumer_group = $1 ORDER BY topic, kafka_partition",
            group)
    kafka = await _kafka_offsets(settings, group, [(r["topic"], r["kafka_partition"])
                                                   for r in rows])
    out = []
    for r in rows:
        key = (r["topic"], r["kafka_partition"])
        high, committed = kafka.get(key, (None, None))
        lag = "-" if high is None else str(max(high - r["next_offset"], 0))
        out.append((r["topic"], str(r["kafka_partition"]), str(r["next_offset"]),
                    "-" if committed is None else str(committed),
                    "-" if high is None else str(high), lag, str(r["consecutive_dead_letters"]),
                    r["updated_at"].astimezone(UTC).isoformat(timespec="seconds")))
    _table(say, ("topic", "partition", "database", "kafka_committed", "high_water", "lag",
                 "dead_letters_in_a_row", "updated_at"), out)
    say(f"group {group}: {len(rows)} partition(s) in the database"
        + ("" if kafka or not rows else "; the broker did not answer (Kafka columns '-')"))
    return 0


async def _kafka_offsets(settings: Settings, group: str, partitions: list[tuple[str, int]]
                         ) -> dict[tuple[str, int], tuple[int | None, int | None]]:
    """(high-water mark, the group's committed offset) per partition; {} when unreachable."""
    if not partitions:
        return {}
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaError

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=group,
                                enable_auto_commit=False, request_timeout_ms=10_000)
    try:
        await consumer.start()
    except KafkaError:
        await consumer.stop()
        return {}
    try:
        tps = [TopicPartition(t, p) for t, p in partitions]
        ends = await consumer.end_offsets(tps)
        return {(tp.topic, tp.partition): (ends.get(tp), await consumer.committed(tp))
                for tp in tps}
    except KafkaError:
        return {}
    finally:
        await consumer.stop()
