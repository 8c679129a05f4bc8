"""Large, deterministic event streams with exactly known final table contents.

- `payments_stream`: users, payments and logins in which every event applies (fault tests).
- `generate` and `model_of`: seeded per-key streams with late subjects, disallowed
  transitions, re-sends, re-used event ids and poison messages, and a small model of
  CONTRACT.md §3 that computes how the tables must end (tests/*/test_batching_invariance.py).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from consumers.apply import CREDENTIAL_TRANSITIONS
from finpass_pipeline.events import EventBase, message_key, serialize_event
from tests.support.builders import ev, initiated, issued, registered


@dataclass
class Expected:
    users: int = 0
    payments_by_status: dict[str, int] = field(default_factory=dict)
    audit_rows: int = 0
    events: list[EventBase] = field(default_factory=list)


def payments_stream(users: int = 2_000, payments: int = 4_000, logins: int = 3_000,
                    seed: int = 7) -> Expected:
    """users x (registered, seen) + payments x (initiated, authorized, captured[, refunded])
    + logins. Every event applies with outcome SUCCESS, so audit rows == events."""
    ns = uuid.UUID(int=seed)
    out = Expected()
    dids = [f"did:example:u{seed}-{i}" for i in range(users)]
    for i, did in enumerate(dids):
        out.events.append(registered(did, at=i % 100, event_id=uuid.uuid5(ns, f"reg{i}")))
        out.events.append(ev("user.seen", did=did, at=200 + i % 50,
                             event_id=uuid.uuid5(ns, f"seen{i}")))
    statuses: dict[str, int] = {}
    for j in range(payments):
        pid = uuid.uuid5(ns, f"pay{j}")
        payer = dids[j % users]
        steps = [initiated(pid, payer, at=300, event_id=uuid.uuid5(ns, f"i{j}"),
                           amount=f"{j % 997 + 1}.{j % 100:02d}"),
                 ev("payment.authorized", payment_id=pid, at=301,
                    event_id=uuid.uuid5(ns, f"a{j}")),
                 ev("payment.captured", payment_id=pid, at=302,
                    event_id=uuid.uuid5(ns, f"c{j}"))]
        status = "CAPTURED"
        if j % 4 == 0:
            steps.append(ev("payment.refunded", payment_id=pid, refund_reason="r", at=303,
                            event_id=uuid.uuid5(ns, f"r{j}")))
            status = "REFUNDED"
        statuses[status] = statuses.get(status, 0) + 1
        out.events.extend(steps)
    for k in range(logins):
        out.events.append(ev("auth.login_succeeded", did=dids[k % users], session_id=f"s{k}",
                             at=400 + k % 30, event_id=uuid.uuid5(ns, f"l{k}")))
    out.users = users
    out.payments_by_status = statuses
    out.audit_rows = len(out.events)
    return out


RawMessage = tuple[str, bytes | None, bytes | None]
"""(topic suffix, key, value) of a message sent as it is."""


# --- the stream --------------------------------------------------------------------------------


PAYMENT_TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "payment.authorized": (frozenset({"PENDING"}), "AUTHORIZED"),
    "payment.captured": (frozenset({"AUTHORIZED"}), "CAPTURED"),
    "payment.refunded": (frozenset({"CAPTURED"}), "REFUNDED"),
    "payment.failed": (frozenset({"PENDING", "AUTHORIZED"}), "FAILED"),
    "payment.cancelled": (frozenset({"PENDING", "AUTHORIZED"}), "CANCELLED"),
}
"""CONTRACT §3: PENDING → AUTHORIZED → CAPTURED → REFUNDED; PENDING/AUTHORIZED → FAILED or
CANCELLED. (The credential state machine is the product's own: `apply.CREDENTIAL_TRANSITIONS`.)"""


@dataclass
class Stream:
    """What is sent, in order: `parts` of (events, raw messages), and the fixed cases' ids."""

    parts: list[tuple[list[EventBase], list[RawMessage]]] = field(default_factory=list)
    late_then_captured: uuid.UUID = field(default_factory=uuid.uuid4)
    capture_of_pending: EventBase | None = None
    revoked_before_issued: uuid.UUID = field(default_factory=uuid.uuid4)
    credential_before_user: uuid.UUID = field(default_factory=uuid.uuid4)

    @property
    def events(self) -> list[EventBase]:
        return [e for events, _ in self.parts for e in events]

    @property
    def raw(self) -> list[RawMessage]:
        return [m for _, raws in self.parts for m in raws]

    @property
    def total(self) -> int:
        return len(self.events) + len(self.raw)


class Generator:
    """Seeded per-key event sequences, merged at random (each key's order kept)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.n = 0

    def uid(self) -> uuid.UUID:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4)

    def at(self) -> int:
        return self.rng.randrange(0, 86_400)

    def envelope(self, did: str | None = None) -> dict[str, Any]:
        """Reproducible envelope fields; sometimes an actor (its DID is pseudonymised)."""
        self.n += 1
        fields: dict[str, Any] = {"event_id": self.uid(), "at": self.at(),
                                  "correlation_id": f"corr-{self.seed}-{self.n}"}
        if did is not None and self.rng.random() < 0.3:
            fields["actor"] = {"did": did, "role": "USER", "session_id": f"s-{self.n}",
                               "ip_address": f"203.0.113.{self.n % 250}", "geolocation": "DE"}
        return fields

    def mix(self, sequences: list[list[EventBase]]) -> list[EventBase]:
        """A random interleaving of `sequences` that keeps each one's order."""
        slots = [i for i, seq in enumerate(sequences) for _ in seq]
        self.rng.shuffle(slots)
        cursors = [0] * len(sequences)
        out: list[EventBase] = []
        for i in slots:
            out.append(sequences[i][cursors[i]])
            cursors[i] += 1
        return out

    def with_resends(self, seq: list[EventBase]) -> list[EventBase]:
        """Sometimes one of the key's events again, identical, later on the same key."""
        if seq and self.rng.random() < 0.12:
            i = self.rng.randrange(len(seq))
            seq.insert(self.rng.randrange(i + 1, len(seq) + 1), seq[i])
        return seq

    def reorder(self, seq: list[EventBase], creator: int) -> list[EventBase]:
        """Move the creating event (index `creator`) later sometimes: its subject is late."""
        if len(seq) > 1 and self.rng.random() < 0.25:
            e = seq.pop(creator)
            seq.insert(self.rng.randrange(1, len(seq) + 1), e)
        return seq

    def user(self, did: str, *, register: bool) -> list[EventBase]:
        seq: list[EventBase] = []
        if register:
            seq.append(registered(did, email=f"{did[12:]}@example.com", phone="+49 30 1234",
                                  metadata={"seed": self.seed}, **self.envelope(did)))
        for _ in range(self.rng.randrange(0, 5)):
            kind = self.rng.choice(("kyc", "status", "seen", "seen"))
            if kind == "kyc":
                seq.append(ev("user.kyc_verified", did=did, **self.envelope(did)))
            elif kind == "status":
                seq.append(ev("user.status_changed", did=did,
                              status=self.rng.choice(("ACTIVE", "SUSPENDED", "TERMINATED")),
                              reason=self.rng.choice((None, "review")), **self.envelope(did)))
            else:
                seq.append(ev("user.seen", did=did, **self.envelope(did)))
        if register and self.rng.random() < 0.05:  # a second registration: REJECTED
            seq.append(registered(did, **self.envelope(did)))
        return self.with_resends(self.reorder(seq, 0) if register else seq)

    def credential(self, cid: uuid.UUID, owner: str) -> list[EventBase]:
        seq: list[EventBase] = [issued(cid, owner, nonce=f"n-{self.n}", **self.envelope(owner))]
        for _ in range(self.rng.randrange(0, 5)):
            kind = self.rng.choice(("revoked", "suspended", "suspended", "reinstated",
                                    "expired"))
            if kind == "revoked":
                seq.append(ev("credential.revoked", credential_id=cid, reason="compromised",
                              revoked_by="did:example:issuer", **self.envelope()))
            else:
                seq.append(ev(f"credential.{kind}", credential_id=cid, **self.envelope()))
        if self.rng.random() < 0.04:  # issued twice: the second is REJECTED
            seq.append(issued(cid, owner, **self.envelope()))
        return self.with_resends(self.reorder(seq, 0))

    def payment(self, pid: uuid.UUID, payer: str) -> list[EventBase]:
        seq: list[EventBase] = []
        if self.rng.random() < 0.96:  # else: never initiated, its events stay parked
            amount = f"{self.rng.randrange(0, 5000)}.{self.n % 100:02d}"
            seq.append(initiated(pid, payer, amount=amount,
                                 fee_amount=self.rng.choice((None, "0.50")),
                                 **self.envelope(payer)))
        happy = self.rng.choice((["authorized", "captured"], ["authorized", "captured",
                                 "refunded"], ["authorized", "failed"], ["cancelled"],
                                 ["failed"], ["authorized"], []))
        steps = list(happy)
        for _ in range(self.rng.choice((0, 0, 0, 1, 2))):  # extra steps: mostly REJECTED
            steps.insert(self.rng.randrange(len(steps) + 1),
                         self.rng.choice(tuple(s.partition(".")[2] for s in PAYMENT_TRANSITIONS)))
        for step in steps:
            data: dict[str, Any] = {}
            if step == "authorized":
                data["transaction_id"] = f"tx-{self.n}"
            elif step == "failed":
                data["failure_reason"] = "insufficient funds"
            elif step == "refunded":
                data["refund_reason"] = "customer request"
            seq.append(ev(f"payment.{step}", payment_id=pid, **data, **self.envelope()))
        if len(seq) > 1 and self.rng.random() < 0.15:  # two adjacent steps swapped
            i = self.rng.randrange(len(seq) - 1)
            seq[i], seq[i + 1] = seq[i + 1], seq[i]
        return self.with_resends(self.reorder(seq, 0) if seq and
                                 seq[0].event_type == "payment.initiated" else seq)

    def logins(self, did: str) -> list[EventBase]:
        seq = [ev("auth.login_succeeded", did=did, session_id=f"sess-{self.n}-{i}",
                  **self.envelope(did)) for i in range(self.rng.randrange(0, 3))]
        if self.rng.random() < 0.3:
            seq.append(ev("auth.login_failed", did=did, reason="bad password",
                          **self.envelope(did)))
        return self.with_resends(seq)

    def reused(self, original: EventBase) -> EventBase:
        """`original`'s event_id with different content, for the same key (a dead letter)."""
        raw: dict[str, Any] = original.model_dump(mode="json")
        raw["correlation_id"] = raw["correlation_id"] + "-other"
        changed = type(original).model_validate(raw)
        assert message_key(changed) == message_key(original)
        return changed


def generate(seed: int, users: int = 140, credentials: int = 170, payments: int = 300
             ) -> Stream:
    g = Generator(seed)
    stream = Stream(late_then_captured=g.uid(), revoked_before_issued=g.uid(),
                    credential_before_user=g.uid())
    dids = [f"did:example:s{seed}-u{i}" for i in range(users)]
    ghosts = set(dids[:8])  # never registered: their events stay parked
    late = dids[8:28]  # registered only at the very end of the stream
    seqs: list[list[EventBase]] = []
    tail: list[EventBase] = []
    for did in dids:
        seq = g.user(did, register=did not in ghosts)
        if did in late:
            regs = [e for e in seq if e.event_type == "user.registered"]
            seq = [e for e in seq if e.event_type != "user.registered"]
            tail.extend(regs)
        seqs.append(seq)
        seqs.append(g.logins(did))
    for _ in range(credentials):
        seqs.append(g.credential(g.uid(), g.rng.choice(dids)))
    for _ in range(payments):
        seqs.append(g.payment(g.uid(), g.rng.choice(dids)))
    for _ in range(25):  # failed logins of nobody: audited, keyed by the event id
        seqs.append([ev("auth.login_failed", reason="unknown user", **g.envelope())])

    # The fixed cases (CONTRACT §5), first and each one contiguous, so that a big batch holds
    # all of one case: one by one, these end exactly as stated.
    p = stream.late_then_captured
    fixed = [ev("payment.authorized", payment_id=p, transaction_id="tx-fixed", at=10),
             initiated(p, dids[30], at=5), ev("payment.captured", payment_id=p, at=20)]
    pending = g.uid()
    stream.capture_of_pending = ev("payment.captured", payment_id=pending, at=30)
    fixed += [initiated(pending, dids[31], at=25), stream.capture_of_pending]
    c = stream.revoked_before_issued
    fixed += [ev("credential.revoked", credential_id=c, reason="compromised", at=40),
              issued(c, dids[32], at=35)]
    cb = stream.credential_before_user  # its user registers in the tail
    fixed += [issued(cb, late[0], at=50), ev("credential.suspended", credential_id=cb, at=51)]

    body = fixed + g.mix(seqs)
    # Event ids re-used with different content, right after a random later point of their key.
    for _ in range(6):
        i = g.rng.randrange(len(body))
        later = [j for j in range(i + 1, len(body))
                 if message_key(body[j]) == message_key(body[i])
                 and body[j].event_type.partition(".")[0] == body[i].event_type.partition(".")[0]]
        body.insert((later[-1] if later else i) + 1, g.reused(body[i]))
    poison: list[RawMessage] = [
        ("users", b"poison-1", b"{not json"),
        ("payments", b"poison-2", b"[1, 2]"),
        ("credentials", b"poison-3", b'{"event_type": "no.such"}'),
        ("security", b"poison-4", b"\xff\xfe not utf-8"),
    ]
    wrong = ev("user.seen", did=dids[40], **g.envelope())  # valid, but keyed by someone else
    poison.append(("users", dids[41].encode(), serialize_event(wrong)))
    third = len(body) // 3
    stream.parts = [(body[:third], poison[:3]), (body[third:2 * third], poison[3:]),
                    (body[2 * third:] + tail, [])]
    return stream


# --- the model of CONTRACT §3 --------------------------------------------------------------------


@dataclass
class UserState:
    status: str = "ACTIVE"
    kyc_verified: bool = False
    kyc_verified_at: datetime | None = None
    last_seen: datetime | None = None


@dataclass
class Model:
    users: dict[str, UserState] = field(default_factory=dict)
    credentials: dict[uuid.UUID, str] = field(default_factory=dict)
    payments: dict[uuid.UUID, str] = field(default_factory=dict)
    audited: set[uuid.UUID] = field(default_factory=set)
    rejected: set[uuid.UUID] = field(default_factory=set)
    parked: set[uuid.UUID] = field(default_factory=set)
    reused: int = 0
    """Later copies of an event id with different content: dead letters."""
    resent: int = 0
    """Later identical copies: silent duplicates."""
    waited: int = 0
    """Events applied only after their subject arrived (later in the stream)."""


def model_of(stream: Stream) -> Model:
    """The final state one-at-a-time application must reach. Only each key's order matters
    (the stream keeps it); across topics an event waits until its subject exists."""
    m = Model()
    first: dict[uuid.UUID, bytes] = {}
    events: list[EventBase] = []
    for e in stream.events:
        body = serialize_event(e)
        if e.event_id in first:
            m.reused += first[e.event_id] != body
            m.resent += first[e.event_id] == body
            continue
        first[e.event_id] = body
        events.append(e)
    registered_dids = {d.did for e in events if e.event_type == "user.registered"
                       for d in [_data(e)]}
    waiting: dict[str, list[EventBase]] = {}

    def apply_user(e: EventBase) -> None:
        d, u = _data(e), m.users[_data(e).did]
        m.audited.add(e.event_id)
        if e.event_type == "user.kyc_verified":
            u.kyc_verified, u.kyc_verified_at = True, e.occurred_at
        elif e.event_type == "user.status_changed":
            u.status = d.status
        elif e.event_type in ("user.seen", "auth.login_succeeded"):
            u.last_seen = max(filter(None, (u.last_seen, e.occurred_at)))
        elif e.event_type == "user.registered":
            m.rejected.add(e.event_id)

    def create(key: str, e: EventBase, kind: str) -> None:
        m.audited.add(e.event_id)
        for w in waiting.pop(key, []):
            m.waited += 1
            apply(w, kind)

    def apply(e: EventBase, kind: str) -> None:
        d = _data(e)
        if kind == "user":
            apply_user(e)
            return
        table: dict[uuid.UUID, str] = m.credentials if kind == "credential" else m.payments
        key = d.credential_id if kind == "credential" else d.payment_id
        rules = CREDENTIAL_TRANSITIONS if kind == "credential" else PAYMENT_TRANSITIONS
        m.audited.add(e.event_id)
        if e.event_type in ("credential.issued", "payment.initiated"):
            m.rejected.add(e.event_id)  # apply() sees creators only once the subject exists
            return
        allowed, target = rules[e.event_type]
        if table[key] in allowed:
            table[key] = target
        else:
            m.rejected.add(e.event_id)

    for e in events:
        d, t = _data(e), e.event_type
        if t == "auth.login_failed":
            m.audited.add(e.event_id)
        elif t.startswith("user.") or t == "auth.login_succeeded":
            if d.did not in registered_dids:
                m.parked.add(e.event_id)
            elif t == "user.registered" and d.did not in m.users:
                m.users[d.did] = UserState()
                create(f"user:{d.did}", e, "user")
            elif d.did in m.users:
                apply(e, "user")
            else:
                waiting.setdefault(f"user:{d.did}", []).append(e)
        elif t.startswith("credential."):
            key = f"credential:{d.credential_id}"
            if t == "credential.issued" and d.user_did not in registered_dids:
                m.parked.add(e.event_id)
            elif t == "credential.issued" and d.credential_id not in m.credentials:
                m.credentials[d.credential_id] = "VALID"
                create(key, e, "credential")
            elif d.credential_id in m.credentials:
                apply(e, "credential")
            else:
                waiting.setdefault(key, []).append(e)
        else:
            key = f"payment:{d.payment_id}"
            if t == "payment.initiated" and d.payment_id not in m.payments:
                m.payments[d.payment_id] = "PENDING"
                create(key, e, "payment")
            elif d.payment_id in m.payments:
                apply(e, "payment")
            else:
                waiting.setdefault(key, []).append(e)
    # Logins (security topic) are applied above in stream order among the user's own events;
    # only the latest sighting counts (last_seen never moves backwards), so the max() in
    # apply_user does not depend on that cross-topic order.
    m.parked |= {e.event_id for queue in waiting.values() for e in queue}
    return m


def _data(e: EventBase) -> Any:
    return e.data
