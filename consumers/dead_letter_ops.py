"""`finpass-pipeline dead-letters replay|discard` (docs/operations.md).

**Replay** sends stored dead letters through the consumer's own path again: `Planner.decode`
(parse, topic and key checks), then `Store.commit_batch` (claims, locks, reference order, audit
row). One letter per transaction, and in that transaction the letter is marked REPLAYED and an
operator audit row is written, so a crash anywhere leaves it either replayed or waiting, never
both. The event-id claim makes a replay apply at most once even if the event got in another way.
A letter that is still invalid stays waiting; when its reason is new it is updated (and audited),
when it is the same nothing is written: replaying twice changes nothing.

**Discard** marks letters handled by hand (DISCARDED, with who and why) and audits it. Nothing
is deleted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg
from aiokafka.structs import ConsumerRecord

from consumers.apply import Applier
from consumers.planner import Planner
from consumers.records import Incoming
from consumers.store import BatchResult, Store
from finpass_pipeline.audit.chain import AuditWriter
from finpass_pipeline.audit.operator import operator_row as audit_operator_row
from finpass_pipeline.audit.pseudonym import Pseudonymizer
from finpass_pipeline.audit.record import AuditRow
from finpass_pipeline.db import checked_out, create_pool, describe, is_infrastructure
from finpass_pipeline.errors import FinpassError
from finpass_pipeline.ops.inspect import DeadLetterFilter
from finpass_pipeline.privacy.vault import Vault, blind_index_key
from finpass_pipeline.settings import Settings

Say = Callable[[str], None]

OPERATOR_SOURCE = ("finpass.ops.dead-letters", 0)
"""The audit chain of operator actions on dead letters (`finpass.ops.dead-letters:0`)."""
PROGRESS_EVERY = 100
"""Letters between two progress lines."""


@dataclass
class ReplayReport:
    applied: int = 0
    """Replayed and applied (or already applied: the claim made it a duplicate)."""
    still_invalid: int = 0
    reason_changed: int = 0
    """Of the still invalid, those whose reason is new (updated and audited)."""
    ids: dict[str, list[int]] = field(default_factory=dict)


def operator_row(settings: Settings, letter_id: int, event_type: str, action: str,
                 outcome: str, description: str, details: dict[str, object],
                 error: str | None = None) -> AuditRow:
    """The audit row of an operator's action on one dead letter."""
    return audit_operator_row(settings.audit_hash_key_id, resource_type="DEAD_LETTER",
                              resource_id=str(letter_id), event_type=event_type, action=action,
                              outcome=outcome, description=description, details=details,
                              error=error)


async def _waiting(conn: asyncpg.Connection, filt: DeadLetterFilter, group: str,
                   ids: list[int] | None) -> list[asyncpg.Record]:
    where, args = filt.where()
    args.append(group)
    clause = f"consumer_group = ${len(args)} AND handled_as IS NULL"
    if ids:
        args.append(ids)
        clause += f" AND id = ANY(${len(args)}::bigint[])"
    where = f"{where} AND {clause}" if where else f" WHERE {clause}"
    return list(await conn.fetch(
        "SELECT id, topic, kafka_partition, kafka_offset, message_key, raw_value, reason "
        f"FROM dead_letter_events{where} ORDER BY id", *args))


def _record(letter: asyncpg.Record) -> ConsumerRecord[bytes, bytes]:
    key, value = letter["message_key"], letter["raw_value"]
    return ConsumerRecord(
        topic=letter["topic"], partition=letter["kafka_partition"],
        offset=letter["kafka_offset"], timestamp=-1, timestamp_type=0,
        key=bytes(key) if key is not None else None,
        value=bytes(value) if value is not None else None, checksum=None,
        serialized_key_size=-1, serialized_value_size=-1, headers=())


async def replay(settings: Settings, filt: DeadLetterFilter, by: str, note: str | None = None,
                 ids: list[int] | None = None, say: Say = print) -> ReplayReport:
    """Replay the waiting dead letters of FINPASS_CONSUMER_GROUP that match."""
    pool = await create_pool(settings.database_url, role=settings.database_role, max_size=1)
    try:
        writer = AuditWriter(chained=settings.audit_chain)
        pz = Pseudonymizer(settings.hash_key(), settings.audit_hash_key_id)
        store = Store(pool, settings.consumer_group, Applier(pz), writer,
                      Vault(settings.pii_keyring(), blind_index_key(pz)))
        planner = Planner(settings.topic_prefix)
        async with checked_out(pool) as conn:
            letters = await _waiting(conn, filt, settings.consumer_group, ids)
        say(f"replaying {len(letters)} dead letter(s) of group {settings.consumer_group}")
        report = ReplayReport()
        for n, letter in enumerate(letters, 1):
            await _replay_one(settings, store, writer, planner, letter, by, note, report)
            if n % PROGRESS_EVERY == 0 or n == len(letters):
                say(f"  {n}/{len(letters)}: {report.applied} applied, "
                    f"{report.still_invalid} still invalid")
        return report
    finally:
        await pool.close()


async def _replay_one(settings: Settings, store: Store, writer: AuditWriter, planner: Planner,
                      letter: asyncpg.Record, by: str, note: str | None,
                      report: ReplayReport) -> None:
    lid = int(letter["id"])
    details: dict[str, object] = {
        "source": f"{letter['topic']}[{letter['kafka_partition']}]@{letter['kafka_offset']}",
        "by": by, **({"why": note} if note else {})}
    decoded = planner.decode(_record(letter))
    if decoded.event is None or decoded.reason is not None:
        await _still_invalid(settings, store, writer, letter, decoded.reason or "no event",
                             details, report)
        return
    incoming = Incoming(decoded.event, decoded.topic, decoded.partition, decoded.offset,
                        decoded.value or b"", decoded.key, decoded.wire)

    async def mark(conn: asyncpg.Connection, result: BatchResult) -> None:
        marked = await conn.execute(
            "UPDATE dead_letter_events SET handled_as = 'REPLAYED', handled_at = now(), "
            "handled_by = $2, handled_note = $3 WHERE id = $1 AND handled_as IS NULL",
            lid, by, note)
        if marked != "UPDATE 1":  # another replay took it meanwhile: roll this one back
            raise FinpassError(f"dead letter {lid} was handled meanwhile")
        applied = "duplicate (already applied)" if result.duplicates else "applied"
        row = operator_row(settings, lid, "DEAD_LETTER_REPLAYED", "REPLAY", "SUCCESS",
                           f"dead letter replayed: {applied}",
                           {**details, "event_id": str(incoming.event.event_id)})
        await writer.append(conn, [row], [OPERATOR_SOURCE])

    try:
        await store.commit_batch([incoming], [], {}, also=mark)
    except FinpassError:
        raise
    except Exception as e:
        if is_infrastructure(e):
            raise FinpassError(f"replay stopped, the database is not available: "
                               f"{describe(e)}") from e
        # Still refused where the consumer refused it: the same verdict as the consumer's.
        refused = planner.reject(decoded, describe(e)).reason or describe(e)
        await _still_invalid(settings, store, writer, letter, refused, details, report)
        return
    report.applied += 1
    report.ids.setdefault("applied", []).append(lid)


async def _still_invalid(settings: Settings, store: Store, writer: AuditWriter,
                         letter: asyncpg.Record, reason: str, details: dict[str, object],
                         report: ReplayReport) -> None:
    lid = int(letter["id"])
    report.still_invalid += 1
    report.ids.setdefault("still_invalid", []).append(lid)
    if reason == letter["reason"]:
        return  # the same verdict again: nothing to record
    report.reason_changed += 1
    row = operator_row(settings, lid, "DEAD_LETTER_REPLAY_FAILED", "REPLAY", "FAILURE",
                       "dead letter replayed: still invalid", details, error=reason)
    async with checked_out(store.pool) as conn, conn.transaction():
        await conn.execute("UPDATE dead_letter_events SET reason = $2 WHERE id = $1 "
                           "AND handled_as IS NULL", lid, reason)
        await writer.append(conn, [row], [OPERATOR_SOURCE])


async def discard(settings: Settings, letter_ids: list[int], by: str, note: str,
                  say: Say = print) -> int:
    """Mark waiting letters DISCARDED (who, why) and audit each; returns how many."""
    if not note.strip():
        raise FinpassError("discard needs --why: say why the letter needs no replay")
    pool = await create_pool(settings.database_url, role=settings.database_role, max_size=1)
    try:
        writer = AuditWriter(chained=settings.audit_chain)
        done = 0
        async with checked_out(pool) as conn, conn.transaction():
            rows = await conn.fetch(
                "UPDATE dead_letter_events SET handled_as = 'DISCARDED', handled_at = now(), "
                "handled_by = $2, handled_note = $3 WHERE id = ANY($1::bigint[]) "
                "AND handled_as IS NULL RETURNING id, topic, kafka_partition, kafka_offset",
                letter_ids, by, note)
            audit = [operator_row(
                settings, int(r["id"]), "DEAD_LETTER_DISCARDED", "DISCARD", "SUCCESS",
                "dead letter discarded by an operator",
                {"source": f"{r['topic']}[{r['kafka_partition']}]@{r['kafka_offset']}",
                 "by": by, "why": note}) for r in rows]
            await writer.append(conn, audit, [OPERATOR_SOURCE] * len(audit))
            done = len(rows)
        skipped = sorted(set(letter_ids) - {int(r["id"]) for r in rows})
        say(f"discarded {done} dead letter(s)" + (
            f"; not waiting (unknown or handled already): {', '.join(map(str, skipped))}"
            if skipped else ""))
        return done
    finally:
        await pool.close()
