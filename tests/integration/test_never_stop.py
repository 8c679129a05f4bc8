"""No message stops the consumer (CONTRACT.md §5), against the real broker and database.

Thousands of messages on the same partitions: valid events, the messages that used to crash the
daemon into a restart loop, hostile spellings, random byte mutations of valid events (whatever
they turn into), key faults, a reused event id, and two events PostgreSQL refuses through
triggers this test installs (an SQLSTATE outside 22/23: bisection pins it, whatever it is). The
daemon must never exit; every message must end exactly once as an applied (or parked) event or
as a dead letter, identical re-sends as nothing; every valid event must be applied.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from aiokafka import AIOKafkaProducer

from consumers.daemon import ConsumerDaemon
from finpass_pipeline.events import EventBase, message_key, serialize_event, topic_suffix
from finpass_pipeline.settings import Settings
from tests.support.builders import ev, initiated, issued, registered
from tests.support.pipeline_support import fetch, refuse_payments, wait_for

SEED = 20261201


@dataclass
class Sent:
    """One message as produced, and what it must end as."""

    suffix: str
    key: bytes | None
    value: bytes | None
    expect: str  # "applied", "dead:<reason fragment>", "duplicate", or "either"
    event_id: uuid.UUID | None = None
    topic: str = ""
    partition: int = -1
    offset: int = -1


def _valid(e: EventBase) -> Sent:
    return Sent(topic_suffix(e.event_type), message_key(e), serialize_event(e), "applied",
                e.event_id)


def _doc(e: EventBase) -> dict[str, object]:
    document: dict[str, object] = json.loads(serialize_event(e))
    return document


def _poison(e: EventBase, change: Callable[[dict[str, object]], None], why: str) -> Sent:
    document = _doc(e)
    change(document)
    return Sent(topic_suffix(e.event_type), message_key(e), json.dumps(document).encode(),
                f"dead:{why}")


def _set(path: str, value: object) -> Callable[[dict[str, object]], None]:
    def change(document: dict[str, object]) -> None:
        *parents, name = path.split(".")
        node: dict[str, object] = document
        for p in parents:
            child = node[p]
            assert isinstance(child, dict)
            node = child
        node[name] = value

    return change


def _mutate(rng: random.Random, raw: bytes) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randint(1, 3)):
        where = rng.randrange(len(data))
        kind = rng.choice(("flip", "insert", "delete", "truncate", "swap"))
        if kind == "flip":
            data[where] = rng.randrange(256)
        elif kind == "insert":
            data[where:where] = rng.choice((b'"', b"{", b"]", b"\\", b"\x00", b"\xff", b",",
                                            b"9", b"-", b" "))
        elif kind == "delete":
            del data[where]
        elif kind == "truncate":
            del data[where:]
            if not data:
                data = bytearray(b"{")
        else:
            other = rng.randrange(len(data))
            data[where], data[other] = data[other], data[where]
    return bytes(data)


def build_stream(rng: random.Random) -> list[Sent]:
    """Valid events and poison, shuffled together while each key keeps its own order."""
    by_key: dict[bytes | None, list[Sent]] = {}

    def add(s: Sent) -> None:
        by_key.setdefault(s.key if s.expect == "applied" else None, []).append(s)

    wide = "did:example:" + "\U0001f600" * 488  # 500 characters, 1,964 bytes: stored, indexed
    dids = [wide] + [f"did:example:ns-{i}" for i in range(299)]
    for i, did in enumerate(dids):
        add(_valid(registered(did, at=i % 60)))
        add(_valid(ev("user.seen", did=did, at=100 + i % 30)))
    for j in range(300):
        pid = uuid.uuid4()
        amount = "0" if j % 10 == 0 else f"{j}.{j % 100:02d}"  # zero is a valid amount
        for e in (initiated(pid, dids[j % len(dids)], amount=amount, at=200),
                  ev("payment.authorized", payment_id=pid, at=201),
                  ev("payment.captured", payment_id=pid, at=202)):
            add(_valid(e))
    for k in range(100):
        cid = uuid.uuid4()
        add(_valid(issued(cid, dids[k], at=300)))
        add(_valid(ev("credential.revoked", credential_id=cid, reason="lost", at=301)))

    poison: list[Sent] = []
    seen = ev("user.seen", did=dids[1])
    for stamp in ("9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "1732726800",
                  "2026-11-27 17:00:00Z", "2026-11-27T17:00Z", "2026-02-30T00:00:00Z"):
        poison.append(_poison(ev("user.seen", did=dids[2]), _set("occurred_at", stamp),
                              "occurred_at"))
    long_did = "did:example:" + "".join(rng.choice("abcdef0123456789") for _ in range(6000))
    poison.append(_poison(registered("did:example:short"), _set("data.did", long_did),
                          "data.did: String should have at most 500 characters"))
    pay = initiated(uuid.uuid4(), dids[3])
    pid_text = str(_doc(pay)["data"]["payment_id"])  # type: ignore[index]
    for spelling in (pid_text.upper(), pid_text.replace("-", ""), "{" + pid_text + "}",
                     "urn:uuid:" + pid_text):
        poison.append(_poison(initiated(uuid.uuid4(), dids[3]), _set("data.payment_id", spelling),
                              "data.payment_id"))
    for version in (True, "1", 2):
        poison.append(_poison(ev("user.seen", did=dids[4]), _set("schema_version", version),
                              "schema_version"))
    poison.append(_poison(initiated(uuid.uuid4(), dids[5]), _set("data.amount", "-0.00"),
                          "data.amount"))
    poison.append(_poison(ev("user.seen", did=dids[6]), _set("data.did", "a\x00b"),
                          "data.did"))
    poison += [
        Sent("users", message_key(seen), b"\xef\xbb\xbf" + serialize_event(seen),
             "dead:byte-order mark"),
        Sent("users", message_key(seen),
             serialize_event(seen)[:-2] + b',"did":"did:example:other"}}',
             "dead:duplicate member"),
        Sent("users", message_key(seen), serialize_event(seen).replace(b'"data":{', b'"data":{"x":'
             + b"[" * 300 + b"]" * 300 + b",", 1), "dead:nested too deep"),
        Sent("users", b"did:example:someone-else", serialize_event(ev("user.seen", did=dids[7])),
             "dead:differs from the subject"),
        Sent("users", None, serialize_event(ev("user.seen", did=dids[8])), "dead:key missing"),
        Sent("users", b"k", None, "dead:tombstone"),
        Sent("users", b"k", b"not json at all", "dead:not JSON"),
        Sent("users", b"k", b'{"a":"\xff\xfe"}', "dead:not UTF-8"),
        Sent("payments", message_key(seen), serialize_event(seen), "dead:belongs on topic"),
    ]
    # Refused by PostgreSQL for its content, with SQLSTATEs outside 22/23 (triggers below).
    for reference, state in (("poison-p0001", "P0001"), ("poison-54000", "54000")):
        e = initiated(uuid.uuid4(), dids[9], reference_id=reference)
        poison.append(Sent("payments", message_key(e), serialize_event(e),
                           f"dead:SQLSTATE {state}"))
    # An event id re-sent: identically (nothing happens), then with other content.
    original = ev("user.seen", did=dids[10], at=500)
    add(_valid(original))
    changed = _doc(original)
    changed["correlation_id"] = "someone-reused-this-id"
    tail = [Sent("users", message_key(original), serialize_event(original), "duplicate"),
            Sent("users", message_key(original), json.dumps(changed).encode(),
                 "dead:event_id reused with different content")]
    # Random byte mutations of fresh valid events: whatever they become, they end exactly once.
    for _ in range(1500):
        base = rng.choice((registered(f"did:example:m-{uuid.uuid4().hex}"),
                           ev("user.seen", did=rng.choice(dids)),
                           initiated(uuid.uuid4(), rng.choice(dids)),
                           ev("payment.captured", payment_id=uuid.uuid4())))
        poison.append(Sent(topic_suffix(base.event_type), message_key(base),
                           _mutate(rng, serialize_event(base)), "either"))
    rng.shuffle(poison)
    # Interleave: each valid key's events stay in order, poison falls between them.
    queues = [q for q in by_key.values() if q]
    stream: list[Sent] = []
    while queues or poison:
        if poison and (not queues or rng.random() < 0.5):
            stream.append(poison.pop())
        else:
            q = rng.choice(queues)
            stream.append(q.pop(0))
            if not q:
                queues.remove(q)
    return stream + tail


async def produce(settings: Settings, stream: list[Sent]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all",
                                enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        futures = [(s, await producer.send(settings.topic(s.suffix), key=s.key, value=s.value))
                   for s in stream]
        for s, future in futures:
            meta = await future
            s.topic, s.partition, s.offset = meta.topic, meta.partition, meta.offset
    finally:
        await producer.stop()


@pytest.fixture
async def settings(settings: Settings) -> AsyncIterator[Settings]:
    """The shared settings, with no stop-the-line limit in reach, batches of 500, and a trigger
    that makes PostgreSQL refuse two marked payments."""
    s = settings.model_copy(update={"max_consecutive_dead_letters": 100_000,
                                    "batch_max_events": 500})
    await refuse_payments(s.database_url, {"poison-p0001": "P0001", "poison-54000": "54000"})
    yield s


async def test_no_message_stops_the_consumer(settings: Settings) -> None:
    """Every message ends exactly once (applied/parked or dead-lettered); the daemon never
    exits; every valid event behind the poison is applied."""
    stream = build_stream(random.Random(SEED))
    await produce(settings, stream)
    daemon = ConsumerDaemon(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    ends: dict[tuple[str, int], int] = {}
    for s in stream:
        ends[(s.topic, s.partition)] = max(ends.get((s.topic, s.partition), 0), s.offset + 1)

    async def caught_up() -> bool:
        assert not task.done(), f"the daemon exited with {task.result()}"
        rows = await fetch(settings.database_url,
                           "SELECT topic, kafka_partition, next_offset FROM consumer_offsets "
                           "WHERE consumer_group = $1", settings.consumer_group)
        stored = {(r["topic"], r["kafka_partition"]): r["next_offset"] for r in rows}
        return all(stored.get(tp, 0) >= end for tp, end in ends.items())

    try:
        await wait_for(caught_up, timeout=240, what="every message consumed")
        assert not task.done()
    finally:
        stop.set()
        code = await asyncio.wait_for(task, timeout=60)
    assert code == 0

    taken = {(r["topic"], r["kafka_partition"], r["kafka_offset"]): r for r in await fetch(
        settings.database_url,
        "SELECT topic, kafka_partition, kafka_offset, event_id, state FROM processed_events")}
    dead_rows = await fetch(settings.database_url,
                            "SELECT topic, kafka_partition, kafka_offset, reason "
                            "FROM dead_letter_events")
    dead = {(r["topic"], r["kafka_partition"], r["kafka_offset"]): r["reason"]
            for r in dead_rows}
    assert len(dead) == len(dead_rows), "a message was dead-lettered twice"
    audited = {r["event_id"] for r in await fetch(settings.database_url,
                                                  "SELECT event_id FROM audit_events")}
    counts = {"applied": 0, "dead": 0, "duplicate": 0, "either": 0}
    for s in stream:
        where = (s.topic, s.partition, s.offset)
        ended = (where in taken) + (where in dead)
        if s.expect == "duplicate":
            assert ended == 0, f"identical re-send at {where} left a trace"
        else:
            assert ended == 1, f"message at {where} ({s.expect}) ended {ended} times"
        if s.expect == "applied":
            row = taken.get(where)
            assert row is not None, f"valid event at {where} not applied: {dead.get(where)}"
            assert row["state"] == "APPLIED" and row["event_id"] in audited
        elif s.expect.startswith("dead:"):
            fragment = s.expect.removeprefix("dead:")
            assert where in dead, f"{fragment!r} at {where} was not dead-lettered"
            assert fragment in dead[where], (fragment, dead[where])
        counts[s.expect.partition(":")[0]] += 1
    assert (counts["dead"], counts["duplicate"], counts["either"]) == (28, 1, 1500)
    assert counts["applied"] == 1701
    # The wide DID was stored and indexed; zero amounts too.
    wide = await fetch(settings.database_url,
                       "SELECT count(*) AS n FROM users WHERE length(did) = 500")
    assert wide[0]["n"] == 1
    zero = await fetch(settings.database_url,
                       "SELECT count(*) AS n FROM payments WHERE amount = 0 AND status = "
                       "'CAPTURED'")
    assert zero[0]["n"] == 30
