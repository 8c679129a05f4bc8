"""A realistic, reproducible event stream for demos and benchmarks (pure: no I/O).

`demo_events(count, users, seed, start)` simulates a FinPass deployment: users register (most pass
KYC, a few are suspended later), log in (and some get brute-forced from one IP), receive
credentials that are sometimes revoked, suspended, reinstated or expired, and pay each other or
merchants through whole payment lifecycles with fees and taxes.

It is a discrete-event simulation: root activities arrive at random intervals, each schedules its
follow-ups (a payment's authorisation, a credential's revocation...) on a heap, and events come
out in simulated-time order. So causal order holds as in a real system: a user's registration
precedes their credentials and payments, and a payment's events follow its lifecycle with
increasing `occurred_at`. Memory is bounded by the follow-ups in flight, not by `count`.

Everything, ids included, derives from `random.Random(seed)`: the same seed gives the same stream,
a shorter `count` gives a prefix of a longer one, and `start` only shifts the timestamps.
"""

from __future__ import annotations

import base64
import heapq
import itertools
import json
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from finpass_pipeline.events import CURRENT_VERSIONS, EVENT_ADAPTER, Actor, Event, upcast

__all__ = ["SIMULATED_SECONDS_PER_EVENT", "demo_events"]

SIMULATED_SECONDS_PER_EVENT = 0.04
"""Roughly how much simulated time one event spans (to place a stream so it ends near now)."""

_S = 1_000_000  # simulated time is in integer microseconds: exact and deterministic
_MEAN_ROOT_GAP_US = 100_000
_SOURCES = {"user": "identity-service", "credential": "credential-issuer",
            "payment": "payments-api", "auth": "auth-gateway"}
_ISSUER = "did:web:issuer.finpass.example"
_CURRENCIES = ("EUR", "EUR", "EUR", "USD", "USD", "GBP", "CHF")
_TAX_PER_MILLE = {"EUR": 190, "USD": 0, "GBP": 200, "CHF": 81}  # VAT on the fee
_METHODS = ("card", "card", "card", "sepa_debit", "wallet", "bank_transfer")
_DESCRIPTIONS = ("Groceries", "Coffee subscription", "Rent share", "Electronics", "Train ticket",
                 "Streaming plan", "Dinner split", "Gym membership", "Books", "Concert tickets")
_CREDENTIAL_TYPES = ("KYCCredential", "AgeOver18Credential", "ProofOfAddressCredential")
_AGENTS = ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) FinPass/4.2",
           "Mozilla/5.0 (Linux; Android 15; Pixel 9) FinPass/4.2",
           "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/131.0 Safari/537.36",
           "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) Safari/605.1.15")
_GEOS = ("DE", "DE", "DE", "FR", "NL", "AT", "CH", "GB", "US", "ES")
_NAMES = ("alex", "sam", "kim", "noa", "lea", "max", "mia", "ben", "ana", "tom", "eva", "jan")
_DOMAINS = ("example.com", "mail.example", "post.example", "example.org")
_ISSUER_ACTOR = Actor(did=_ISSUER, role="ISSUER")
_SYSTEM = Actor(role="SYSTEM")
_OPS = Actor(did="did:example:ops-risk", role="ADMIN")


@dataclass(slots=True)
class _User:
    did: str
    actor: Actor
    kyc: bool = False
    active: bool = True
    credentials: int = 0  # live credentials, so re-issuing stays bounded


@dataclass(slots=True)
class _Payment:
    payment_id: str
    correlation: str
    fate: str
    last_event: uuid.UUID | None = None


Action = Callable[[int], Event | None]


class _Simulation:
    def __init__(self, rng: random.Random, users: int, start: datetime) -> None:
        self.rng = rng
        self.start = start
        self.now = 0
        self.seq = itertools.count()
        self.heap: list[tuple[int, int, Action]] = []
        self.capacity = users
        self.users: list[_User] = []
        self.kyc_users: list[_User] = []
        self.targets: list[_User] = []  # the few accounts an attacker keeps trying
        self.attacker_ips = [f"198.51.100.{n}" for n in rng.sample(range(2, 250), 3)]
        self.merchants = [f"did:web:shop-{n:03d}.example" for n in range(40)]

    def run(self) -> Iterator[Event]:
        rng, heap = self.rng, self.heap
        while True:
            self.now += 1 + int(rng.expovariate(1 / _MEAN_ROOT_GAP_US))
            while heap and heap[0][0] <= self.now:
                at, _, action = heapq.heappop(heap)
                event = action(at)
                if event is not None:
                    yield event
            event = self.root(self.now)
            if event is not None:
                yield event

    def later(self, at: int, action: Action) -> None:
        heapq.heappush(self.heap, (at, next(self.seq), action))

    def after(self, at: int, low_s: float, high_s: float) -> int:
        return at + 1_000 + int(self.rng.uniform(low_s, high_s) * _S)  # always >= 1 ms later

    def make_id(self) -> uuid.UUID:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4)

    def hex(self, digits: int) -> str:
        return f"{self.rng.getrandbits(digits * 4):0{digits}x}"

    def event(self, event_type: str, at: int, data: dict[str, Any], *, correlation: str,
              actor: Actor | None = None, causation: uuid.UUID | None = None) -> Event:
        return upcast(EVENT_ADAPTER.validate_python({
            "event_id": self.make_id(), "event_type": event_type,
            "schema_version": CURRENT_VERSIONS[event_type],
            "occurred_at": self.start + timedelta(microseconds=at),
            "correlation_id": correlation, "causation_id": causation,
            "source_system": _SOURCES[event_type.partition(".")[0]], "actor": actor,
            "data": data,
        }))

    def session_actor(self, user: _User) -> Actor:
        return user.actor.model_copy(update={"session_id": f"s-{self.hex(16)}"})

    # --- root activities ------------------------------------------------------------------

    def root(self, at: int) -> Event | None:
        rng = self.rng
        remaining = self.capacity - len(self.users)
        if remaining and (not self.users or rng.random() < 0.05 + 0.7 * remaining / self.capacity):
            return self.register(at)
        roll = rng.random()
        if roll < 0.45:
            event = self.initiate_payment(at, None)
        elif roll < 0.75:
            event = self.login(at)
        elif roll < 0.77:
            event = self.brute_force(at)
        elif roll < 0.79 and self.kyc_users:  # a verified user adds another credential
            user = rng.choice(self.kyc_users)
            event = self.issue(user, rng.choice(_CREDENTIAL_TYPES[1:]), f"req-{self.hex(12)}", at)
        elif roll < 0.7915 and len(self.users) > 20:  # a customer asks to be forgotten
            event = self.erase(rng.choice(self.users), at)
        else:
            event = None
        return event or self.seen(at, rng.choice(self.users), None)

    def register(self, at: int) -> Event:
        rng, index = self.rng, len(self.users)
        did = f"did:example:{self.hex(24)}"
        name = f"{rng.choice(_NAMES)}.{rng.choice(_NAMES)}{rng.randrange(1000)}"
        actor = Actor(did=did, role="USER", ip_address=f"203.0.113.{rng.randrange(1, 255)}",
                      user_agent=rng.choice(_AGENTS), geolocation=rng.choice(_GEOS),
                      device_fingerprint=f"fp-{self.hex(20)}")
        user = _User(did, actor)
        self.users.append(user)
        if index < max(1, self.capacity // 100):
            self.targets.append(user)
        correlation = f"req-{self.hex(12)}"
        event = self.event("user.registered", at, {
            "did": did, "email": f"{name}@{rng.choice(_DOMAINS)}",
            "phone": f"+49 1{rng.randrange(50, 80)} {rng.randrange(10**7):07d}",
            "metadata": {"signup_channel": rng.choice(("ios", "android", "web")),
                         "locale": rng.choice(("de-DE", "en-GB", "fr-FR")),
                         "marketing_opt_in": rng.random() < 0.3},
        }, correlation=correlation, actor=self.session_actor(user))
        self.later(self.after(at, 0, 30), partial(self.seen, user=user, correlation=correlation))
        if rng.random() < 0.85:
            self.later(self.after(at, 2, 60), partial(self.kyc, user, event.event_id))
        if rng.random() < 0.03:
            self.later(self.after(at, 20, 300), partial(self.set_status, user, "SUSPENDED"))
        return event

    def seen(self, at: int, user: _User, correlation: str | None) -> Event:
        return self.event("user.seen", at, {"did": user.did},
                          correlation=correlation or f"req-{self.hex(12)}", actor=user.actor)

    def kyc(self, user: _User, cause: uuid.UUID, at: int) -> Event:
        user.kyc = True
        self.kyc_users.append(user)
        correlation = f"kyc-{self.hex(12)}"
        event = self.event("user.kyc_verified", at, {
            "did": user.did, "verified_at": self.start + timedelta(microseconds=at - 500_000),
        }, correlation=correlation, causation=cause)
        self.later(self.after(at, 1, 10), partial(self.issue, user, "KYCCredential", correlation))
        if self.rng.random() < 0.4:
            kind = self.rng.choice(_CREDENTIAL_TYPES[1:])
            self.later(self.after(at, 5, 60), partial(self.issue, user, kind, correlation))
        return event

    def set_status(self, user: _User, status: str, at: int) -> Event:
        user.active = status == "ACTIVE"
        reasons = {"SUSPENDED": "suspicious activity flagged by risk engine",
                   "ACTIVE": "review completed, no fraud found",
                   "TERMINATED": "account closed after fraud review"}
        if status == "SUSPENDED":
            roll = self.rng.random()
            if roll < 0.4:
                self.later(self.after(at, 30, 300), partial(self.set_status, user, "ACTIVE"))
            elif roll < 0.6:
                self.later(self.after(at, 30, 300), partial(self.set_status, user, "TERMINATED"))
        elif status == "TERMINATED" and self.rng.random() < 0.5:
            # Half the closed accounts ask to be forgotten; their later events (late logins,
            # payments to them) are applied without their personal data.
            self.later(self.after(at, 60, 600), partial(self.erase, user))
        return self.event("user.status_changed", at,
                          {"did": user.did, "status": status, "reason": reasons[status]},
                          correlation=f"ops-{self.hex(12)}", actor=_OPS)

    def erase(self, user: _User, at: int) -> Event:
        return self.event("user.erasure_requested", at,
                          {"did": user.did, "reason": "right to erasure (GDPR Art. 17)"},
                          correlation=f"dpo-{self.hex(12)}", actor=_OPS)

    def login(self, at: int) -> Event:
        rng, user = self.rng, self.rng.choice(self.users)
        actor = self.session_actor(user)
        correlation = f"req-{self.hex(12)}"
        if not user.active or rng.random() < 0.04:
            if user.active:  # a typo first, then the real login
                self.later(self.after(at, 3, 20), partial(self.login_ok, user, actor, correlation))
            reason = "invalid password" if user.active else "account suspended"
            return self.event("auth.login_failed", at, {"did": user.did, "reason": reason},
                              correlation=correlation, actor=actor)
        return self.login_ok(user, actor, correlation, at)

    def login_ok(self, user: _User, actor: Actor, correlation: str, at: int) -> Event:
        self.later(self.after(at, 1, 60), partial(self.seen, user=user, correlation=correlation))
        if user.kyc and self.rng.random() < 0.3:
            self.later(self.after(at, 5, 120), partial(self.initiate_payment, payer=user))
        return self.event("auth.login_succeeded", at,
                          {"did": user.did, "session_id": actor.session_id},
                          correlation=correlation, actor=actor)

    def brute_force(self, at: int) -> Event | None:
        if not self.targets:
            return None
        rng = self.rng
        target, ip = rng.choice(self.targets), rng.choice(self.attacker_ips)
        correlation = f"req-{self.hex(12)}"
        when = at
        for _ in range(rng.randrange(2, 9)):  # the burst: 3-9 attempts, a second or so apart
            when = self.after(when, 0.3, 2)
            self.later(when, partial(self.failed_attempt, target, ip, correlation))
        return self.failed_attempt(target, ip, correlation, at)

    def failed_attempt(self, target: _User, ip: str, correlation: str, at: int) -> Event:
        actor = Actor(role="ANONYMOUS", session_id=f"s-{self.hex(16)}", ip_address=ip,
                      user_agent="python-requests/2.32", geolocation="RU")
        did = target.did if self.rng.random() < 0.85 else None  # else a username that misses
        return self.event("auth.login_failed", at,
                          {"did": did, "reason": "invalid password" if did else "unknown user"},
                          correlation=correlation, actor=actor)

    # --- credentials ----------------------------------------------------------------------

    def issue(self, user: _User, kind: str, correlation: str, at: int) -> Event | None:
        if not user.active or user.credentials >= 4:
            return None
        user.credentials += 1
        credential_id = str(self.make_id())
        issued_at = self.start + timedelta(microseconds=at)
        roll = self.rng.random()
        lifetime = timedelta(days=365)
        if roll < 0.10:
            expires = self.after(at, 20, 120)
            lifetime = timedelta(microseconds=expires - at)
            self.later(expires + 2 * _S, partial(self.credential_end, user, credential_id,
                                                 kind, "credential.expired"))
        elif roll < 0.16:
            self.later(self.after(at, 10, 150), partial(self.credential_end, user, credential_id,
                                                         kind, "credential.revoked"))
        elif roll < 0.24:
            self.later(self.after(at, 10, 120), partial(self.suspend, credential_id))
        claims = {"iss": _ISSUER, "sub": user.did, "jti": f"urn:uuid:{credential_id}",
                  "iat": int(issued_at.timestamp()), "vc": {"type": [kind]}}
        jwt = ".".join((_b64(b'{"alg":"EdDSA","typ":"JWT"}'), _b64(json.dumps(claims).encode()),
                        _b64(self.rng.randbytes(64))))
        return self.event("credential.issued", at, {
            "credential_id": credential_id, "user_did": user.did, "issuer_id": _ISSUER,
            "credential_type": kind, "credential_jwt": jwt, "expires_at": issued_at + lifetime,
            "subject_did": user.did, "nonce": self.hex(32),
            "revocation_handle": f"{_ISSUER}/status/1#{self.rng.randrange(100_000)}",
            "verification_method": f"{_ISSUER}#key-1", "proof_type": "Ed25519Signature2020",
            "proof_created_at": issued_at, "proof_purpose": "assertionMethod",
            "metadata": {"schema": f"https://schemas.finpass.example/{kind}.json"},
        }, correlation=correlation, actor=_ISSUER_ACTOR)

    def suspend(self, credential_id: str, at: int) -> Event:
        if self.rng.random() < 0.7:
            self.later(self.after(at, 10, 90), partial(self.reinstate, credential_id))
        return self.event("credential.suspended", at, {
            "credential_id": credential_id, "reason": "holder reported device lost",
        }, correlation=f"ops-{self.hex(12)}", actor=_ISSUER_ACTOR)

    def reinstate(self, credential_id: str, at: int) -> Event:
        return self.event("credential.reinstated", at, {
            "credential_id": credential_id, "reason": "device recovered, holder re-verified",
        }, correlation=f"ops-{self.hex(12)}", actor=_ISSUER_ACTOR)

    def credential_end(self, user: _User, credential_id: str, kind: str, event_type: str,
                       at: int) -> Event:
        user.credentials -= 1
        correlation = f"ops-{self.hex(12)}"
        if user.active and self.rng.random() < 0.5:  # a replacement follows
            self.later(self.after(at, 10, 120), partial(self.issue, user, kind, correlation))
        data: dict[str, Any] = {"credential_id": credential_id}
        if event_type == "credential.revoked":
            data |= {"reason": self.rng.choice(("key_compromise", "superseded", "user_request")),
                     "revoked_by": _ISSUER}
        return self.event(event_type, at, data, correlation=correlation, actor=_ISSUER_ACTOR)

    # --- payments -------------------------------------------------------------------------

    def initiate_payment(self, at: int, payer: _User | None) -> Event | None:
        rng = self.rng
        payer = payer or (rng.choice(self.kyc_users) if self.kyc_users else None)
        if payer is None or not payer.active:
            return None
        payee = (rng.choice(self.users).did if rng.random() < 0.4
                 else rng.choice(self.merchants))
        if payee == payer.did:
            payee = rng.choice(self.merchants)
        fate = rng.choices(("capture", "refund", "cancel", "fail", "fail_late", "void"),
                           (85, 4, 4, 4, 2, 1))[0]
        payment = _Payment(str(self.make_id()), f"req-{self.hex(12)}", fate)
        currency, method = rng.choice(_CURRENCIES), rng.choice(_METHODS)
        cents = min(100 + int(rng.lognormvariate(8.0, 1.1)), 2_500_000)
        fee = {"card": (cents * 14 + 500) // 1000 + 25, "sepa_debit": 35,
               "wallet": (cents * 19 + 500) // 1000, "bank_transfer": 0}[method]
        tax = (fee * _TAX_PER_MILLE[currency] + 500) // 1000
        kind = rng.choices(("ONE_TIME", "RECURRING", "SUBSCRIPTION"), (80, 12, 8))[0]
        event = self.event("payment.initiated", at, {
            "payment_id": payment.payment_id, "payer_did": payer.did, "payee_did": payee,
            "amount": {"value": _money(cents), "currency": currency}, "payment_type": kind,
            "payment_method": method,
            "merchant_reference": f"INV-{rng.randrange(10**8):08d}",
            "description": rng.choice(_DESCRIPTIONS), "kyc_decision_token": f"kdt-{self.hex(24)}",
            "fee_amount": _money(fee), "tax_amount": _money(tax),
        }, correlation=payment.correlation, actor=self.session_actor(payer))
        payment.last_event = event.event_id
        if fate == "cancel":
            self.later(self.after(at, 5, 120), partial(self.cancel, payment, "payer cancelled"))
        elif fate == "fail":
            self.later(self.after(at, 0.2, 3), partial(self.fail, payment, rng.choice(
                ("insufficient funds", "card declined by issuer", "risk check rejected"))))
        else:
            self.later(self.after(at, 0.2, 3), partial(self.authorize, payment))
        return event

    def _step(self, payment: _Payment, event_type: str, at: int, data: dict[str, Any]) -> Event:
        event = self.event(event_type, at, {"payment_id": payment.payment_id, **data},
                           correlation=payment.correlation, causation=payment.last_event,
                           actor=_SYSTEM)
        payment.last_event = event.event_id
        return event

    def authorize(self, payment: _Payment, at: int) -> Event:
        if payment.fate == "fail_late":
            self.later(self.after(at, 1, 60), partial(self.fail, payment, "capture declined"))
        elif payment.fate == "void":
            self.later(self.after(at, 1, 120), partial(self.cancel, payment, "merchant voided"))
        else:
            self.later(self.after(at, 1, 60), partial(self.capture, payment))
        return self._step(payment, "payment.authorized", at,
                          {"transaction_id": f"txn_{self.hex(20)}"})

    def capture(self, payment: _Payment, at: int) -> Event:
        if payment.fate == "refund":
            self.later(self.after(at, 10, 150), partial(self.refund, payment))
        return self._step(payment, "payment.captured", at, {})

    def refund(self, payment: _Payment, at: int) -> Event:
        reason = self.rng.choice(("item returned", "duplicate charge", "service not delivered"))
        return self._step(payment, "payment.refunded", at, {"refund_reason": reason})

    def fail(self, payment: _Payment, reason: str, at: int) -> Event:
        return self._step(payment, "payment.failed", at, {"failure_reason": reason})

    def cancel(self, payment: _Payment, reason: str, at: int) -> Event:
        return self._step(payment, "payment.cancelled", at, {"reason": reason})


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def demo_events(count: int, users: int, seed: int, start: datetime) -> Iterator[Event]:
    """The first `count` events of the simulation seeded with `seed`, lazily.

    `users` caps how many users register; `start` (timezone-aware) is the simulated clock's
    origin. Identical arguments give an identical stream, event ids included.
    """
    if count < 0 or users < 1:
        raise ValueError("count must be >= 0 and users >= 1")
    if start.utcoffset() is None:
        raise ValueError("start must be timezone-aware")
    rng = random.Random(seed)  # noqa: S311  (a reproducible simulation, not cryptography)
    return itertools.islice(_Simulation(rng, users, start).run(), count)
