"""PostgreSQL side of a batch: one transaction holding the effects, audit rows, dead letters and
the consumed offsets, so a crash at any instant neither loses nor repeats an effect.

Order inside the transaction:
0. lock the batch's rows of `consumer_offsets`; one ahead of where the batch starts (moved by
   `offsets skip`) rolls the batch back (`OffsetsMoved`);
1. advisory locks on every subject the batch touches (sorted: no deadlock between consumers);
2. claim the event ids (`processed_events`, ON CONFLICT DO NOTHING): duplicates drop out here;
3. load the rows those subjects already have, and take out of `parked_events` every event
   waiting on a subject the batch creates (transitively: a revived `credential.issued` may have
   a parked revocation of its own);
4. apply the events in memory (`apply.Applier`) in offset order, each parked event right after
   the event that creates its subject (CONTRACT.md §5's reference semantics: the result is the
   one-at-a-time result, whatever the batch boundaries);
5. write everything set-based (COPY for inserts, `UPDATE ... FROM unnest` for changes) and
   upsert the offsets; commit. Kafka's own commit comes after this one.

Personal data (`consumers.privacy`, docs/privacy.md): before 4, one read of `person_keys` for
everyone the batch mentions; before 5, erased people's row images are redacted and new personal
data is sealed under each person's data key; after the audit rows, the batch's erasures destroy
keys and redact what is stored; parked payloads and dead letters are redacted as they are stored.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

import asyncpg

from consumers.apply import Applier, BatchState
from consumers.privacy import BatchPrivacy, incoming_dids
from consumers.records import DeadLetter, Incoming, PartitionProgress, TopicPartition
from consumers.rows import CredentialRow, PaymentRow, UserRow, inserts
from finpass_pipeline.audit.chain import AuditWriter
from finpass_pipeline.db import checked_out
from finpass_pipeline.events import (
    Event,
    InvalidEventError,
    parse_wire,
    serialize_event,
    upcast,
)
from finpass_pipeline.events.models import Subject
from finpass_pipeline.privacy.erasure import erased_form
from finpass_pipeline.privacy.vault import BatchKeys, Vault, blind_index_key


class OffsetsMoved(Exception):
    """The database's offset of a partition is ahead of the batch: an operator moved it. The
    batch rolled back; the consumer seeks there and drops the partition's fetched records."""

    def __init__(self, moved: dict[TopicPartition, int]) -> None:
        super().__init__(", ".join(f"{t}[{p}] -> {o}" for (t, p), o in sorted(moved.items())))
        self.moved = moved


REUSED_EVENT_ID = "event_id reused with different content"
"""Dead-letter reason of an event whose id was taken before by a different event (§5)."""


def content_digest(inc: Incoming) -> bytes:
    """SHA-256 of the event's canonical form in the current version: what an identical re-send
    must repeat, in any version (a v1 send and its v2 form are the same content). Fields the
    contract ignores (unknown envelope and actor fields) and spelling (key order, spaces, `Z` or
    `+00:00`) do not count."""
    return hashlib.sha256(serialize_event(inc.event)).digest()


def same_content(inc: Incoming, digest: bytes, stored: bytes | None) -> bool:
    """Whether `inc` (whose `content_digest` is `digest`) repeats what was stored for its id.
    Rows from before V12 have no digest: a duplicate. Rows stored before the event's current
    version existed hold the digest of the older form; a re-send in that form matches it, so a
    replay after an upgrade stays a silent duplicate."""
    if stored is None or stored == digest:
        return True
    return inc.wire is not None and stored == hashlib.sha256(serialize_event(inc.wire)).digest()


PublishDeadLetters = Callable[[Sequence[DeadLetter]], Awaitable[None]]
"""Sends dead letters found inside the transaction to the dead-letter topic before it commits."""


AlsoInTransaction = Callable[[asyncpg.Connection, "BatchResult"], Awaitable[None]]
"""More writes in a batch's transaction, given what it applied."""


@dataclass
class BatchResult:
    applied: list[Incoming] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    """Dead letters found inside the transaction (reused event ids, unreadable parked events)."""
    duplicates: int = 0
    parked: int = 0
    parked_types: dict[str, int] = field(default_factory=dict)
    """Events parked by this batch for the first time, per event type (re-parked revived ones
    are not counted again)."""
    outcomes: dict[tuple[str, str], int] = field(default_factory=dict)
    rejected: list[tuple[Event, str]] = field(default_factory=list)


CLAIM_COLUMNS = ("event_id", "event_type", "topic", "kafka_partition", "kafka_offset", "state",
                 "content_digest")
"""The `processed_events` columns a claim writes, in `claim_records` order."""


def claim_records(events: Sequence[tuple[Incoming, bytes]]) -> list[tuple[object, ...]]:
    """The `processed_events` rows (`CLAIM_COLUMNS`) of events with their content digests: the
    store's claim and the bench's database ceiling write these."""
    return [(i.event.event_id, i.event.event_type, i.topic, i.partition, i.offset, "APPLIED", d)
            for i, d in events]


def lock_key(subject: Subject) -> int:
    """A stable signed 64-bit advisory-lock key for a subject."""
    digest = hashlib.blake2b(f"{subject.kind}:{subject.key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class Store:
    """Batch transactions for one consumer group."""

    def __init__(self, pool: asyncpg.Pool, group: str, applier: Applier,
                 audit: AuditWriter | None = None, vault: Vault | None = None) -> None:
        """`vault` holds the PII master keyring (`Settings.pii_keyring()`); without one the dev
        keyring is used (tests, tools), which says so on stderr."""
        self.pool = pool
        self.group = group
        self.applier = applier
        self.audit = audit if audit is not None else AuditWriter()
        if vault is None:
            from finpass_pipeline.settings import Settings
            vault = Vault(Settings(dev_mode=True, pii_master_key=None).pii_keyring(),
                          blind_index_key(applier.pz))
        self.privacy = BatchPrivacy(vault, applier.pz, self._lock_people)

    async def load_progress(self, partitions: Iterable[TopicPartition]
                            ) -> dict[TopicPartition, PartitionProgress]:
        parts = list(partitions)
        async with checked_out(self.pool) as conn:
            rows = await conn.fetch(
                "SELECT topic, kafka_partition, next_offset, consecutive_dead_letters "
                "FROM consumer_offsets WHERE consumer_group = $1 AND (topic, kafka_partition) IN "
                "(SELECT * FROM unnest($2::text[], $3::int[]))",
                self.group, [t for t, _ in parts], [p for _, p in parts],
            )
        return {(r["topic"], r["kafka_partition"]):
                PartitionProgress(r["next_offset"], r["consecutive_dead_letters"]) for r in rows}

    async def parked_stats(self) -> tuple[int, float]:
        """(events in `parked_events`, age in seconds of the oldest, 0 when none)."""
        async with checked_out(self.pool) as conn:
            row = await conn.fetchrow(
                "SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(parked_at)), 0) "
                "AS age FROM parked_events")
        return int(row["n"]), float(row["age"])

    async def commit_batch(self, events: Sequence[Incoming], dead: Sequence[DeadLetter],
                           progress: dict[TopicPartition, PartitionProgress],
                           publish: PublishDeadLetters | None = None,
                           also: AlsoInTransaction | None = None) -> BatchResult:
        """Apply `events`, record `dead`, store `progress`: all or nothing. Dead letters the
        transaction itself finds are passed to `publish` before it commits; `also` writes more
        in the same transaction (the dead-letter replay marks its letter there)."""
        async with checked_out(self.pool) as conn, conn.transaction():
            await self._check_not_moved(conn, progress)
            result = await self._apply(conn, events)
            if result.dead and publish is not None:
                await publish(result.dead)
            if dead or result.dead:
                await self._insert_dead_letters(conn, [*dead, *result.dead])
            await self._store_progress(conn, progress)
            if also is not None:
                await also(conn, result)
            return result

    async def _apply(self, conn: asyncpg.Connection, events: Sequence[Incoming]) -> BatchResult:
        result = BatchResult()
        unique: dict[uuid.UUID, tuple[Incoming, bytes]] = {}
        for inc in events:
            digest = content_digest(inc)
            first = unique.setdefault(inc.event.event_id, (inc, digest))
            if first[0] is not inc:
                self._duplicate(result, inc, same=first[1] == digest)
        if not unique:
            return result
        fresh = list(unique.values())
        about = {inc.event.event_id: inc.event.subjects() for inc, _ in fresh}  # asked once
        # People an event only mentions (payer, payee, actor ...) are locked shared: an erasure
        # (exclusive on its user) and a batch naming that person never interleave, so no row
        # with the raw DID can be committed beside the erasure; mentions alone never wait on
        # each other.
        locked = {s for subjects in about.values() for s in subjects}
        await self._lock(locked, conn, shared={
            Subject("user", d) for inc, _ in fresh for d in incoming_dids(inc)} - locked)
        claimed = await self._claim(conn, fresh, result)
        state = BatchState()
        await self._load(conn, state, {s for inc in claimed for s in about[inc.event.event_id]})
        waiting = await self._revive(conn, state, result, {
            s for inc in claimed if (s := inc.event.creates()) is not None})
        unparked = [inc.event.event_id for queue in waiting.values() for inc in queue]
        keys = await self.privacy.begin(
            conn, state, [*claimed, *(inc for queue in waiting.values() for inc in queue)])
        for inc in claimed:
            self._apply_in_order(state, inc, waiting)
        # Still waiting: parked in this batch, or revived but their subject was not created after
        # all (its creator was rejected). They are parked (again).
        for subject, queue in waiting.items():
            state.to_park.extend((inc, subject) for inc in queue)
        still = {inc.event.event_id for inc, _ in state.to_park}
        await self._flush(conn, state, [i for i in unparked if i not in still], keys)
        result.applied = state.applied
        result.parked = len(state.to_park)
        revived = set(unparked)
        for inc, _ in state.to_park:
            if inc.event.event_id not in revived:
                t = inc.event.event_type
                result.parked_types[t] = result.parked_types.get(t, 0) + 1
        result.outcomes = state.outcomes
        result.rejected = state.rejected
        return result

    def _apply_in_order(self, state: BatchState, inc: Incoming,
                        waiting: dict[Subject, list[Incoming]]) -> None:
        """Apply `inc`, then at once every event waiting on a subject it created, recursively:
        parked in earlier transactions first (revived into `waiting` before the loop, lower
        offsets), then parked earlier in this one (appended to `waiting` here)."""
        if self.applier.apply(state, inc) == "PARKED":
            _, subject = state.to_park.pop()  # the entry apply() just added
            waiting.setdefault(subject, []).append(inc)
            return
        while state.created:
            subject = state.created.pop(0)
            for ready in waiting.pop(subject, []):
                self._apply_in_order(state, ready, waiting)

    def _duplicate(self, result: BatchResult, inc: Incoming, *, same: bool) -> None:
        result.duplicates += 1
        if not same:
            result.dead.append(DeadLetter(
                inc.topic, inc.partition, inc.offset, inc.key, inc.raw, REUSED_EVENT_ID,
                event_id=inc.event.event_id, event_type=inc.event.event_type))

    async def _lock_people(self, conn: asyncpg.Connection, dids: set[str]) -> None:
        """Shared locks on the users of `dids` named in raw bytes about to be stored (parked
        payloads, dead letters); taken late, out of order: a deadlock retries the batch."""
        await self._lock(set(), conn, shared={Subject("user", d) for d in dids})

    async def _lock(self, subjects: set[Subject], conn: asyncpg.Connection,
                    shared: set[Subject] | None = None) -> None:
        exclusive = {lock_key(s) for s in subjects}
        if not shared:
            keys = sorted(exclusive)
            if keys:
                # One statement, keys in ascending order: two consumers can never wait on each
                # other in a cycle for these locks.
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) WITH ORDINALITY "
                    "AS t(k, n) ORDER BY n", keys,
                )
            return
        both = sorted(exclusive | {lock_key(s) for s in shared})
        # The same, one ascending order over exclusive and shared keys together.
        await conn.execute(
            "SELECT CASE WHEN x THEN pg_advisory_xact_lock(k) ELSE pg_advisory_xact_lock_shared(k) "
            "END FROM unnest($1::bigint[], $2::bool[]) WITH ORDINALITY AS t(k, x, n) ORDER BY n",
            both, [k in exclusive for k in both])

    async def _claim(self, conn: asyncpg.Connection, events: list[tuple[Incoming, bytes]],
                     result: BatchResult) -> list[Incoming]:
        """Take the event ids; an id taken before is a duplicate, and a dead letter when the
        content differs from what was taken (`same_content`)."""
        columns = [list(c) for c in zip(*claim_records(events), strict=True)]
        del columns[CLAIM_COLUMNS.index("state")]  # always 'APPLIED': a literal, not an array
        rows = await conn.fetch(
            f"INSERT INTO processed_events ({', '.join(CLAIM_COLUMNS)}) SELECT e, t, tp, p, o, "
            "'APPLIED', d FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], "
            "$5::bigint[], $6::bytea[]) AS u(e, t, tp, p, o, d) "
            "ON CONFLICT (event_id) DO NOTHING RETURNING event_id", *columns)
        won = {r["event_id"] for r in rows}
        lost = [(i, d) for i, d in events if i.event.event_id not in won]
        if lost:
            taken = {r["event_id"]: r["content_digest"] for r in await conn.fetch(
                "SELECT event_id, content_digest FROM processed_events "
                "WHERE event_id = ANY($1::uuid[])", [i.event.event_id for i, _ in lost])}
            for inc, digest in lost:
                before = taken.get(inc.event.event_id)
                stored = bytes(before) if before is not None else None
                self._duplicate(result, inc, same=same_content(inc, digest, stored))
        return [i for i, _ in events if i.event.event_id in won]

    async def _revive(self, conn: asyncpg.Connection, state: BatchState, result: BatchResult,
                      creating: set[Subject]) -> dict[Subject, list[Incoming]]:
        """Take out of `parked_events` what waits on `creating`, and on what those events create
        in turn; lock and load their subjects. Returns the events per subject, in the order they
        were parked in (topic, partition, offset)."""
        waiting: dict[Subject, list[Incoming]] = {}
        asked: set[Subject] = set()
        frontier = creating
        while frontier:
            asked |= frontier
            rows = await conn.fetch(
                "DELETE FROM parked_events WHERE (subject_type, subject_key) IN "
                "(SELECT * FROM unnest($1::text[], $2::text[])) RETURNING event_id, "
                "subject_type, subject_key, payload, topic, kafka_partition, kafka_offset",
                [s.kind for s in frontier], [s.key for s in frontier],
            )
            revived: list[Incoming] = []
            for r in sorted(rows, key=lambda r: (r["topic"], r["kafka_partition"],
                                                 r["kafka_offset"])):
                payload = bytes(r["payload"])
                try:
                    wire = parse_wire(payload)
                except InvalidEventError as e:
                    # Valid when parked, refused by today's rules: it cannot wait for ever.
                    result.dead.append(DeadLetter(
                        r["topic"], r["kafka_partition"], r["kafka_offset"], None, payload,
                        f"parked event no longer valid: {e.reason}", event_id=r["event_id"],
                        event_type=None))
                    continue
                event = upcast(wire)
                inc = Incoming(event, r["topic"], r["kafka_partition"], r["kafka_offset"],
                               payload, wire=wire if wire is not event else None)
                revived.append(inc)
                waiting.setdefault(Subject(r["subject_type"], r["subject_key"]), []).append(inc)
            if not revived:
                break
            # Subjects these events create may be parked on by other consumers right now: lock
            # them too (out of order, so PostgreSQL may report a deadlock: the batch retries).
            more = {s for inc in revived for s in inc.event.subjects()}
            await self._lock({s for s in more if not state.exists(s)}, conn)
            await self._load(conn, state, more)
            frontier = {s for inc in revived
                        if (s := inc.event.creates()) is not None} - asked
        return waiting

    async def _load(self, conn: asyncpg.Connection, state: BatchState,
                    subjects: set[Subject]) -> None:
        """Load the rows of `subjects` not yet in `state`; absent ones are recorded as None."""
        wanted: dict[str, list[str]] = {"user": [], "credential": [], "payment": []}
        for s in subjects:
            if not state.known(s):
                wanted[s.kind].append(s.key)
        if wanted["user"]:
            # An erased user's row holds `hmac:<pseudonym>` for the DID: found by that too.
            erased = {erased_form(self.applier.pz.hash(d)): d for d in wanted["user"]}
            rows = await conn.fetch(
                f"SELECT id, did, created_at, {', '.join(UserRow.UPDATE_COLUMNS)} "
                "FROM users WHERE did = ANY($1::text[])", [*wanted["user"], *erased])
            state.users.update(dict.fromkeys(wanted["user"]))
            state.users.update({erased.get(r["did"], r["did"]): UserRow(**dict(r))
                                for r in rows})
        if wanted["credential"]:
            rows = await conn.fetch(
                "SELECT c.id, c.user_id, u.did AS user_did, "
                f"{', '.join('c.' + c for c in CredentialRow.UPDATE_COLUMNS)}, "
                "s.reason AS status_reason, s.status_changed_at FROM credentials c "
                "JOIN users u ON u.id = c.user_id "
                "LEFT JOIN credential_status s ON s.credential_id = c.id "
                "WHERE c.id = ANY($1::uuid[])", wanted["credential"])
            state.credentials.update(dict.fromkeys(wanted["credential"]))
            state.credentials.update({str(r["id"]): CredentialRow(**dict(r)) for r in rows})
        if wanted["payment"]:
            rows = await conn.fetch(
                f"SELECT id, payer_did, {', '.join(PaymentRow.UPDATE_COLUMNS)} "
                "FROM payments WHERE id = ANY($1::uuid[])", wanted["payment"])
            state.payments.update(dict.fromkeys(wanted["payment"]))
            state.payments.update({str(r["id"]): PaymentRow(**dict(r)) for r in rows})

    async def _flush(self, conn: asyncpg.Connection, state: BatchState,
                     unparked: list[uuid.UUID], keys: BatchKeys) -> None:
        await self.privacy.prepare(conn, state, keys)  # redact erased people, seal the new rows
        users = [r for r in state.users.values() if r is not None]
        creds = [r for r in state.credentials.values() if r is not None]
        pays = [r for r in state.payments.values() if r is not None]
        for copy in inserts(users, creds, pays):
            if copy.records:
                await conn.copy_records_to_table(copy.table, records=copy.records,
                                                 columns=list(copy.columns))
        await self._update(conn, "users", UserRow.UPDATE_COLUMNS,
                           [r for r in users if r.dirty and not r.is_new])
        changed_creds = [r for r in creds if r.dirty and not r.is_new]
        await self._update(conn, "credentials", CredentialRow.UPDATE_COLUMNS, changed_creds)
        if changed_creds:
            await conn.execute(
                "UPDATE credential_status s SET status = v.status, reason = v.reason, "
                "status_changed_at = v.changed, updated_at = v.updated FROM unnest($1::uuid[], "
                "$2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[]) "
                "AS v(id, status, reason, changed, updated) WHERE s.credential_id = v.id",
                [r.id for r in changed_creds], [r.status for r in changed_creds],
                [r.status_reason for r in changed_creds],
                [r.status_changed_at for r in changed_creds],
                [r.updated_at for r in changed_creds])
        await self._update(conn, "payments", PaymentRow.UPDATE_COLUMNS,
                           [r for r in pays if r.dirty and not r.is_new])
        # audit and applied are appended together (Applier.apply): row i came from applied[i].
        await self.audit.append(conn, state.audit,
                                [(i.topic, i.partition) for i in state.applied])
        # After the audit rows (they are redacted too) and before parking (parked payloads are
        # redacted as they are stored, erased people of this batch included).
        await self.privacy.finish(conn, state)
        await self._park(conn, state.to_park)
        if unparked:
            await conn.execute("UPDATE processed_events SET state = 'APPLIED' "
                               "WHERE event_id = ANY($1::uuid[])", unparked)

    async def _park(self, conn: asyncpg.Connection, parked: list[tuple[Incoming, Subject]]
                    ) -> None:
        if not parked:
            return
        ids = [inc.event.event_id for inc, _ in parked]
        # One look-up for both: payloads and (user) subject keys may name an erased person.
        n = len(parked)
        clean = await self.privacy.clean_payloads(
            conn, [*(i.raw for i, _ in parked), *(s.key.encode() for _, s in parked)])
        payloads, subject_keys = clean[:n], [(k or b"").decode() for k in clean[n:]]
        await conn.execute(
            "INSERT INTO parked_events (event_id, event_type, subject_type, subject_key, "
            "payload, topic, kafka_partition, kafka_offset, occurred_at) SELECT * FROM "
            "unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::text[], "
            "$7::int[], $8::bigint[], $9::timestamptz[]) ON CONFLICT (event_id) DO NOTHING",
            ids, [i.event.event_type for i, _ in parked], [s.kind for _, s in parked],
            subject_keys, payloads, [i.topic for i, _ in parked],
            [i.partition for i, _ in parked], [i.offset for i, _ in parked],
            [i.event.occurred_at for i, _ in parked],
        )
        await conn.execute("UPDATE processed_events SET state = 'PARKED' "
                           "WHERE event_id = ANY($1::uuid[])", ids)

    async def _update(self, conn: asyncpg.Connection, table: str, columns: tuple[str, ...],
                      rows: Sequence[UserRow | CredentialRow | PaymentRow]) -> None:
        if not rows:
            return
        types = await self._column_types(conn, table, columns)
        assignments = ", ".join(f"{c} = v.{c}" for c in columns)
        arrays = ", ".join(f"${i + 2}::{types[c]}[]" for i, c in enumerate(columns))
        await conn.execute(
            f"UPDATE {table} t SET {assignments} FROM unnest($1::uuid[], {arrays}) "
            f"AS v(id, {', '.join(columns)}) WHERE t.id = v.id",
            [r.id for r in rows], *([getattr(r, c) for r in rows] for c in columns),
        )

    _types_cache: dict[str, dict[str, str]] = {}  # noqa: RUF012  (process-wide, read-mostly)

    async def _column_types(self, conn: asyncpg.Connection, table: str,
                            columns: Sequence[str]) -> dict[str, str]:
        if table not in self._types_cache:
            rows = await conn.fetch(
                "SELECT attname, format_type(atttypid, atttypmod) AS t FROM pg_attribute "
                "WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped", table)
            self._types_cache[table] = {r["attname"]: r["t"] for r in rows}
        return self._types_cache[table]

    async def _insert_dead_letters(self, conn: asyncpg.Connection,
                                   dead: Sequence[DeadLetter]) -> None:
        n = len(dead)
        clean = await self.privacy.clean_payloads(  # an erased person's DID stays out
            conn, [*(d.key for d in dead), *(d.value for d in dead),
                   *(d.reason.encode() for d in dead)])
        keys, values = clean[:n], clean[n:2 * n]
        reasons = [(r or b"").decode() for r in clean[2 * n:]]
        await conn.execute(
            "INSERT INTO dead_letter_events (consumer_group, topic, kafka_partition, "
            "kafka_offset, message_key, raw_value, reason, event_id, event_type) "
            "SELECT $1, * FROM unnest($2::text[], $3::int[], $4::bigint[], $5::bytea[], "
            "$6::bytea[], $7::text[], $8::uuid[], $9::text[]) "
            "ON CONFLICT ON CONSTRAINT uq_dead_letter_events_source DO NOTHING",
            self.group, [d.topic for d in dead], [d.partition for d in dead],
            [d.offset for d in dead], keys, values,
            reasons, [d.event_id for d in dead], [d.event_type for d in dead],
        )

    async def _check_not_moved(self, conn: asyncpg.Connection,
                               progress: dict[TopicPartition, PartitionProgress]) -> None:
        """Lock this batch's offset rows (sorted: consumers never wait on each other in a cycle)
        and raise `OffsetsMoved` if one is ahead of where the batch starts: an operator skipped
        (`offsets skip`) while this consumer ran, and nothing below the new offset may apply."""
        starts = {tp: p.from_offset for tp, p in progress.items() if p.from_offset is not None}
        if not starts:
            return
        items = sorted(starts)
        rows = await conn.fetch(
            "SELECT topic, kafka_partition, next_offset FROM consumer_offsets "
            "WHERE consumer_group = $1 AND (topic, kafka_partition) IN "
            "(SELECT * FROM unnest($2::text[], $3::int[])) "
            "ORDER BY topic, kafka_partition FOR UPDATE",
            self.group, [t for t, _ in items], [p for _, p in items])
        moved = {(r["topic"], r["kafka_partition"]): int(r["next_offset"]) for r in rows
                 if r["next_offset"] > starts[(r["topic"], r["kafka_partition"])]}
        if moved:
            raise OffsetsMoved(moved)

    async def _store_progress(self, conn: asyncpg.Connection,
                              progress: dict[TopicPartition, PartitionProgress]) -> None:
        if not progress:
            return
        items = list(progress.items())
        # GREATEST: an overlapping owner during a rebalance can never move an offset backwards.
        await conn.execute(
            "INSERT INTO consumer_offsets AS o (consumer_group, topic, kafka_partition, "
            "next_offset, consecutive_dead_letters) SELECT $1, * FROM unnest($2::text[], "
            "$3::int[], $4::bigint[], $5::int[]) ON CONFLICT (consumer_group, topic, "
            "kafka_partition) DO UPDATE SET next_offset = GREATEST(o.next_offset, "
            "EXCLUDED.next_offset), consecutive_dead_letters = EXCLUDED.consecutive_dead_letters, "
            "updated_at = now()",
            self.group, [tp[0] for tp, _ in items], [tp[1] for tp, _ in items],
            [p.next_offset for _, p in items], [p.consecutive_dead_letters for _, p in items],
        )
