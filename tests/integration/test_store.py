"""`consumers.store.Store.commit_batch` against a real, freshly migrated PostgreSQL, without Kafka
or the daemon: duplicates, re-used event ids, parking and reviving, offsets.

Each batch is what the daemon would hand over: decoded `Incoming` events (raw bytes as on the
wire), the dead letters it found itself (none here) and the progress per partition.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence

import pytest

from consumers.apply import Applier
from consumers.records import DeadLetter, Incoming, PartitionProgress
from consumers.store import Store
from finpass_pipeline.audit.pseudonym import Pseudonymizer
from finpass_pipeline.db import create_pool
from finpass_pipeline.events import EventBase, parse_event, serialize_event
from finpass_pipeline.migrations import migrate
from tests.support.builders import ev, issued, registered
from tests.support.privacy import plain_users

GROUP = "g-store"
USERS, CREDENTIALS = "finpass.users", "finpass.credentials"
REUSED = "event_id reused with different content"


@pytest.fixture
async def store(fresh_db: str) -> AsyncIterator[Store]:
    """A Store on a fresh database at the newest version, as the daemon builds it."""
    await migrate(fresh_db)
    pool = await create_pool(fresh_db)
    try:
        yield Store(pool, GROUP, Applier(Pseudonymizer(b"test-audit-key", "k1")))
    finally:
        await pool.close()


def incoming(event: EventBase, topic: str, offset: int) -> Incoming:
    """`event` as read from partition 0 of `topic` at `offset` (decoded from its bytes)."""
    raw = serialize_event(event)
    return Incoming(parse_event(raw), topic, 0, offset, raw, event.message_key())


def at(topic: str, next_offset: int) -> dict[tuple[str, int], PartitionProgress]:
    return {(topic, 0): PartitionProgress(next_offset, 0)}


async def rows(store: Store, sql: str, *args: object) -> list[tuple[object, ...]]:
    return [tuple(r) for r in await store.pool.fetch(sql, *args)]


async def emails(store: Store) -> dict[str, str | None]:
    """did -> email, opened (the store's default vault is the dev keyring)."""
    async with store.pool.acquire() as conn:
        return {did: email for did, (email, _) in (await plain_users(
            conn, audit_key=b"test-audit-key", keyring=store.privacy.vault.keyring)).items()}


async def test_an_exact_duplicate_in_the_batch_applies_once(store: Store) -> None:
    """An event and its identical re-send in one batch: one user, one claim, one audit row,
    one duplicate and no dead letter; sent again in a later batch, it is a duplicate again."""
    did = "did:example:twice"
    reg = registered(did, email="twice@example.com")
    result = await store.commit_batch(
        [incoming(reg, USERS, 0), incoming(reg, USERS, 1)], [], at(USERS, 2))
    assert (result.duplicates, result.dead, result.parked) == (1, [], 0)
    assert [i.offset for i in result.applied] == [0]
    assert await emails(store) == {did: "twice@example.com"}
    assert await rows(store, "SELECT event_id, kafka_offset, state FROM processed_events") == [
        (reg.event_id, 0, "APPLIED")]
    assert await rows(store, "SELECT event_id, event_type, outcome FROM audit_events") == [
        (reg.event_id, "USER_REGISTERED", "SUCCESS")]
    assert await rows(store, "SELECT count(*) FROM dead_letter_events") == [(0,)]

    again = await store.commit_batch([incoming(reg, USERS, 2)], [], at(USERS, 3))
    assert (again.duplicates, again.dead, again.applied) == (1, [], [])
    assert await rows(store, "SELECT count(*) FROM users") == [(1,)]
    assert await rows(store, "SELECT count(*) FROM audit_events") == [(1,)]


@pytest.mark.parametrize("same_batch", [True, False], ids=["same-batch", "later-batch"])
async def test_a_reused_event_id_with_other_content_is_a_dead_letter(
        store: Store, same_batch: bool) -> None:
    """The same event_id with different content (here: another email) is not applied: it is a
    dead letter `event_id reused with different content` in `BatchResult.dead`, handed to
    `publish` before the commit and stored; the first event stays as it was."""
    did, event_id = "did:example:reused", uuid.uuid4()
    first = registered(did, event_id=event_id, email="first@example.com")
    other = registered(did, event_id=event_id, email="other@example.com")
    published: list[DeadLetter] = []

    async def publish(dead: Sequence[DeadLetter]) -> None:
        published.extend(dead)

    if same_batch:
        result = await store.commit_batch(
            [incoming(first, USERS, 0), incoming(other, USERS, 1)], [], at(USERS, 2), publish)
    else:
        await store.commit_batch([incoming(first, USERS, 0)], [], at(USERS, 1), publish)
        result = await store.commit_batch([incoming(other, USERS, 1)], [], at(USERS, 2), publish)
    assert result.duplicates == 1
    (dead,) = result.dead
    assert (dead.reason, dead.topic, dead.partition, dead.offset) == (REUSED, USERS, 0, 1)
    assert (dead.event_id, dead.event_type, dead.key) == (event_id, "user.registered",
                                                          did.encode())
    assert dead.value == serialize_event(other)
    assert published == [dead]
    assert await rows(store, "SELECT consumer_group, topic, kafka_offset, reason, event_id, "
                             "raw_value FROM dead_letter_events") == [
        (GROUP, USERS, 1, REUSED, event_id, serialize_event(other))]
    assert await emails(store) == {did: "first@example.com"}
    assert await rows(store, "SELECT event_id, kafka_offset FROM processed_events") == [
        (event_id, 0)]
    assert await rows(store, "SELECT count(*) FROM audit_events") == [(1,)]


async def test_an_event_before_its_subject_is_parked_then_applied_when_it_arrives(
        store: Store) -> None:
    """A credential issued to a user not registered yet, and its suspension, are parked (no
    credential, no audit row); the batch that registers the user applies both, in order: the
    credential exists, SUSPENDED, and nothing is left parked."""
    did, cid = "did:example:late", uuid.uuid4()
    iss = issued(cid, did, at=1)
    suspended = ev("credential.suspended", credential_id=cid, reason="review", at=2)
    early = await store.commit_batch(
        [incoming(iss, CREDENTIALS, 0), incoming(suspended, CREDENTIALS, 1)], [],
        at(CREDENTIALS, 2))
    assert (early.parked, early.applied, early.dead) == (2, [], [])
    assert await rows(store, "SELECT event_id, subject_type, subject_key, kafka_offset "
                             "FROM parked_events ORDER BY kafka_offset") == [
        (iss.event_id, "user", did, 0), (suspended.event_id, "credential", str(cid), 1)]
    assert await rows(store, "SELECT event_id, state FROM processed_events "
                             "ORDER BY kafka_offset") == [
        (iss.event_id, "PARKED"), (suspended.event_id, "PARKED")]
    assert await rows(store, "SELECT count(*) FROM credentials") == [(0,)]
    assert await rows(store, "SELECT count(*) FROM audit_events") == [(0,)]

    reg = registered(did, at=0)
    late = await store.commit_batch([incoming(reg, USERS, 0)], [], at(USERS, 1))
    assert [i.event.event_id for i in late.applied] == [
        reg.event_id, iss.event_id, suspended.event_id]
    assert (late.parked, late.dead) == (0, [])
    assert await rows(store, "SELECT c.id, u.did, c.status, s.status FROM credentials c "
                             "JOIN users u ON u.id = c.user_id "
                             "JOIN credential_status s ON s.credential_id = c.id") == [
        (cid, did, "SUSPENDED", "SUSPENDED")]
    assert await rows(store, "SELECT count(*) FROM parked_events") == [(0,)]
    assert await rows(store, "SELECT state, count(*) FROM processed_events GROUP BY state") == [
        ("APPLIED", 3)]
    assert sorted(await rows(store, "SELECT event_type, outcome FROM audit_events")) == [
        ("CREDENTIAL_ISSUED", "SUCCESS"), ("CREDENTIAL_SUSPENDED", "SUCCESS"),
        ("USER_REGISTERED", "SUCCESS")]


async def test_offsets_never_move_backwards(store: Store) -> None:
    """Progress 10, then 5 (an overlapping owner during a rebalance): the table keeps 10; a
    later 12 moves it on."""
    await store.commit_batch([], [], at(USERS, 10))
    await store.commit_batch([], [], at(USERS, 5))
    assert await rows(store, "SELECT consumer_group, topic, kafka_partition, next_offset "
                             "FROM consumer_offsets") == [(GROUP, USERS, 0, 10)]
    assert (await store.load_progress([(USERS, 0)]))[(USERS, 0)].next_offset == 10
    await store.commit_batch([], [], at(USERS, 12))
    assert await rows(store, "SELECT next_offset FROM consumer_offsets") == [(12,)]

