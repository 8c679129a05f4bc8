"""The pure, seeded row generation behind `finpass-pipeline datagen` (no database).

`Generator` builds every table's rows as COPY text lines, in the order `datagen.generate` loads
them; the same sizes, key, seed and `now` give byte-identical rows.
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
import time
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from consumers.rows import user_id_for
from finpass_pipeline.audit.pseudonym import pseudonym

DAY = 86_400.0
NULL = "\\N"
CHUNK_ROWS = 4_000


@dataclass(frozen=True)
class Sizes:
    users: int = 500_000
    credentials: int = 1_000_000
    payments: int = 1_000_000
    audit: int = 10_000_000
    days: int = 395


_FIRST = "anna ben clara david emma felix greta hugo ida jonas lena max mia noah olga paul".split()
_LAST = "meyer schmidt fischer weber wagner becker hoffmann koch richter klein wolf".split()
_DOMAINS = ["example.com", "mail.example", "post.example.org", "web.example.net"]
_ISSUERS = [("did:web:issuer.finpass.example", 40), ("did:web:kyc.bank-a.example", 20),
            ("did:web:id.bank-b.example", 15), ("did:web:gov-id.example", 10),
            ("did:web:telco.example", 8), ("did:web:employer.example", 7)]
_TYPES = [("KYC_VERIFIED", 40), ("AGE_OVER_18", 20), ("PROOF_OF_ADDRESS", 15),
          ("ACCOUNT_OWNERSHIP", 15), ("EMPLOYMENT", 10)]
_CURRENCIES = [("EUR", 55), ("USD", 30), ("GBP", 10), ("CHF", 5)]
_METHODS = ["CARD", "CARD", "CARD", "SEPA_DEBIT", "INSTANT_TRANSFER", "WALLET"]
_AGENTS = ["Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) FinPass/3.4",
           "Mozilla/5.0 (Linux; Android 15; Pixel 9) FinPass/3.4",
           "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/131.0 Safari/537.36",
           "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) Safari/605.1.15", "finpass-sdk-python/2.1"]
_GEO = ["DE", "DE", "DE", "AT", "CH", "FR", "NL", "GB", "US", "PL"]
_FAIL_REASONS = ["insufficient_funds", "card_declined", "expired_card", "risk_rejected"]
_LOGIN_FAIL = ["bad_password", "bad_password", "unknown_did", "expired_credential", "bad_otp"]

USER_COLS = ("id", "did", "created_at", "last_seen", "email", "phone", "kyc_verified",
             "kyc_verified_at", "status", "metadata", "updated_at", "user_id_hash")
CRED_COLS = ("id", "user_id", "issuer_id", "credential_type", "credential_jwt", "issued_at",
             "expires_at", "status", "revoked_at", "revocation_handle", "revocation_reason",
             "revoked_by", "credential_hash", "nonce", "subject_did", "verification_method",
             "proof_type", "proof_created_at", "proof_purpose", "created_at", "updated_at",
             "user_id_hash", "subject_id_hash")
STATUS_COLS = ("id", "credential_id", "status", "reason", "status_changed_at", "created_at",
               "updated_at")
PAY_COLS = ("id", "payer_did", "payee_did", "amount", "currency", "status", "payment_type",
            "kyc_decision_token", "payment_method", "transaction_id", "reference_id",
            "fee_amount", "tax_amount", "total_amount", "authorized_at", "captured_at",
            "failed_at", "refunded_at", "failure_reason", "refund_reason", "created_at",
            "updated_at", "completed_at", "payer_id_hash", "payee_id_hash")
AUDIT_COLS = ("id", "event_type", "user_id_hash", "session_id", "ip_address", "user_agent",
              "resource_id", "resource_type", "action", "outcome", "severity", "description",
              "new_values", "performed_by", "performed_by_role", "source_system",
              "correlation_id", "error_code", "error_message", "geolocation",
              "device_fingerprint", "retention_days", "event_id", "occurred_at", "hash_key_id",
              "created_at")

# Audit event kinds: (event_type, action, resource_type, source_system, severity, outcome)
_KINDS = [
    ("USER_REGISTERED", "REGISTER", "USER", "identity-service", "INFO", "SUCCESS"),
    ("USER_KYC_VERIFIED", "VERIFY_KYC", "USER", "identity-service", "INFO", "SUCCESS"),
    ("USER_STATUS_CHANGED", "CHANGE_STATUS", "USER", "identity-service", "WARNING", "SUCCESS"),
    ("USER_SEEN", "SEEN", "USER", "identity-service", "INFO", "SUCCESS"),
    ("AUTH_LOGIN_SUCCEEDED", "LOGIN", "SESSION", "auth-gateway", "INFO", "SUCCESS"),
    ("AUTH_LOGIN_FAILED", "LOGIN", "SESSION", "auth-gateway", "WARNING", "FAILURE"),
    ("CREDENTIAL_ISSUED", "ISSUE", "CREDENTIAL", "issuer-service", "INFO", "SUCCESS"),
    ("CREDENTIAL_REVOKED", "REVOKE", "CREDENTIAL", "issuer-service", "WARNING", "SUCCESS"),
    ("CREDENTIAL_SUSPENDED", "SUSPEND", "CREDENTIAL", "issuer-service", "WARNING", "SUCCESS"),
    ("CREDENTIAL_EXPIRED", "EXPIRE", "CREDENTIAL", "issuer-service", "INFO", "SUCCESS"),
    ("PAYMENT_INITIATED", "INITIATE", "PAYMENT", "payments-api", "INFO", "SUCCESS"),
    ("PAYMENT_AUTHORIZED", "AUTHORIZE", "PAYMENT", "payments-api", "INFO", "SUCCESS"),
    ("PAYMENT_CAPTURED", "CAPTURE", "PAYMENT", "payments-api", "INFO", "SUCCESS"),
    ("PAYMENT_FAILED", "FAIL", "PAYMENT", "payments-api", "WARNING", "SUCCESS"),
    ("PAYMENT_REFUNDED", "REFUND", "PAYMENT", "payments-api", "INFO", "SUCCESS"),
    ("PAYMENT_CANCELLED", "CANCEL", "PAYMENT", "payments-api", "INFO", "SUCCESS"),
    ("PAYMENT_CAPTURED", "CAPTURE", "PAYMENT", "payments-api", "WARNING", "REJECTED"),
]
(K_REG, K_KYC, K_STATUS, K_SEEN, K_LOGIN, K_FAIL, K_ISSUED, K_REVOKED, K_SUSPENDED, K_EXPIRED,
 K_P_INIT, K_P_AUTH, K_P_CAPT, K_P_FAIL, K_P_REFUND, K_P_CANCEL, K_P_DUP) = range(len(_KINDS))
_PAY_STATUS = {K_P_INIT: "PENDING", K_P_AUTH: "AUTHORIZED", K_P_CAPT: "CAPTURED",
               K_P_FAIL: "FAILED", K_P_REFUND: "REFUNDED", K_P_CANCEL: "CANCELLED"}
_CRED_STATUS = {K_REVOKED: "REVOKED", K_SUSPENDED: "SUSPENDED", K_EXPIRED: "EXPIRED"}


def _picker(rnd: random.Random, weighted: list[tuple[str, int]]) -> Callable[[], str]:
    values = [v for v, _ in weighted]
    cum, total = [], 0
    for _, w in weighted:
        total += w
        cum.append(total)
    return lambda: values[bisect_right(cum, rnd.random() * total)]


class _Clock:
    """Epoch seconds → `YYYY-MM-DD HH:MM:SS.ffffff+00`, fast (cached up to the minute)."""

    def __init__(self) -> None:
        self._minutes: dict[int, str] = {}

    def __call__(self, t: float) -> str:
        m = int(t // 60)
        prefix = self._minutes.get(m)
        if prefix is None:
            prefix = datetime.fromtimestamp(m * 60, UTC).strftime("%Y-%m-%d %H:%M:")
            self._minutes[m] = prefix
        us = int((t - m * 60) * 1e6)
        return f"{prefix}{us // 1_000_000:02d}.{us % 1_000_000:06d}+00"

    def opt(self, t: float) -> str:
        return NULL if t <= 0 else self(t)


class Generator:
    """Builds the rows; `tables()` yields (table, columns, row count, chunk iterator)."""

    def __init__(self, sizes: Sizes, hash_key: bytes, key_id: str, seed: int,
                 now: float | None = None) -> None:
        self.s, self.key, self.key_id = sizes, hash_key, key_id
        self.rnd = random.Random(seed)  # noqa: S311  (synthetic data: reproducible, not secret)
        self.now = now if now is not None else time.time()
        self.start = self.now - sizes.days * DAY
        self.ts = _Clock()
        self.admin_hash = pseudonym(hash_key, "did:web:ops.finpass.example")
        self.events: list[list[tuple[float, int, int]]] = [[] for _ in range(sizes.days + 1)]
        self.domain_events = 0

    # --- helpers --------------------------------------------------------------------------
    def _uuid(self) -> str:
        h = f"{self.rnd.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"

    def _event(self, t: float, kind: int, idx: int) -> None:
        if t <= self.now:
            self.events[int((t - self.start) // DAY)].append((t, kind, idx))
            self.domain_events += 1

    def _times(self, n: int, lo: float, growth: bool = True) -> list[float]:
        """n sorted instants in [lo, now); density grows linearly with time when `growth`."""
        r, span = self.rnd.random, self.now - lo
        return sorted(lo + span * (math.sqrt(r()) if growth else r()) for _ in range(n))

    def _chunks(self, rows: Iterator[str]) -> Iterator[list[str]]:
        batch: list[str] = []
        for line in rows:
            batch.append(line)
            if len(batch) >= CHUNK_ROWS:
                yield batch
                batch = []
        if batch:
            yield batch

    # --- users ------------------------------------------------------------------------------
    def users(self) -> Iterator[str]:
        r, ts, n = self.rnd, self.ts, self.s.users
        self.created = array("d", self._times(n, self.start))
        self.last_seen = array("d", bytes(8 * n))
        self.dids: list[str] = []
        self.ids: list[str] = []
        self.hashes: list[str] = []
        for i in range(n):
            c = self.created[i]
            did = f"did:key:z6Mk{r.getrandbits(200):050x}"
            uid = str(user_id_for(did))
            self.dids.append(did)
            self.ids.append(uid)
            self.hashes.append(pseudonym(self.key, did))
            self._event(c, K_REG, i)
            email = (f"{r.choice(_FIRST)}.{r.choice(_LAST)}{r.randrange(1000)}"
                     f"@{r.choice(_DOMAINS)}") if r.random() < 0.88 else NULL
            phone = f"+49{r.randrange(150, 180)}{r.randrange(10**7, 10**8)}" \
                if r.random() < 0.72 else NULL
            kyc_at = c + r.expovariate(1 / (1.5 * DAY)) if r.random() < 0.72 else 0.0
            if kyc_at > self.now:
                kyc_at = 0.0
            if kyc_at:
                self._event(kyc_at, K_KYC, i)
            seen = self.now - r.expovariate(1 / (25 * DAY)) if r.random() < 0.93 else 0.0
            if seen and seen < c:
                seen = c + (self.now - c) * r.random()
            if seen:
                self.last_seen[i] = seen
                self._event(seen, K_SEEN, i)
            x = r.random()
            status = "ACTIVE" if x < 0.955 else "SUSPENDED" if x < 0.99 else "TERMINATED"
            changed = 0.0
            if status != "ACTIVE":
                changed = c + (self.now - c) * r.random()
                self._event(changed, K_STATUS, i)
            updated = max(c, kyc_at, seen, changed)
            yield (f"{uid}\t{did}\t{ts(c)}\t{ts.opt(seen)}\t{email}\t{phone}\t"
                   f"{'t' if kyc_at else 'f'}\t{ts.opt(kyc_at)}\t{status}\t"
                   f'{{"signup_channel":"{r.choice(("ios", "android", "web"))}"}}\t{ts(updated)}\t'
                   f"{self.hashes[i]}\n")

    # --- credentials ------------------------------------------------------------------------
    def credentials(self) -> Iterator[str]:
        r, ts, n, now = self.rnd, self.ts, self.s.credentials, self.now
        issuer, ctype = _picker(r, _ISSUERS), _picker(r, _TYPES)
        picks = []
        for _ in range(n):
            u = r.randrange(self.s.users)
            c = self.created[u]
            issued = c + r.expovariate(1 / (10 * DAY))
            if issued >= now:
                issued = c + (now - c) * r.random()
            picks.append((issued, u))
        picks.sort()
        self.cred_ids: list[str] = []
        self.cred_user = array("i", bytes(4 * n))
        self.status_rows: list[str] = []
        for k, (issued, u) in enumerate(picks):
            cid = self._uuid()
            self.cred_ids.append(cid)
            self.cred_user[k] = u
            self._event(issued, K_ISSUED, k)
            x = r.random()
            expires = issued + DAY * (90 if x < 0.3 else 365 if x < 0.8 else 730) \
                if x < 0.95 else 0.0
            status, changed, revoked, reason = "VALID", issued, 0.0, NULL
            y = r.random()
            if y < 0.03:
                status, changed = "REVOKED", issued + (now - issued) * r.random()
                revoked = changed
                reason = r.choice(("key_compromise", "superseded", "user_request"))
                self._event(changed, K_REVOKED, k)
            elif y < 0.04:
                status, changed = "SUSPENDED", issued + (now - issued) * r.random()
                reason = "fraud_review"
                self._event(changed, K_SUSPENDED, k)
            elif expires and expires < now and y < 0.94:  # the expiry job lags for some
                status, changed = "EXPIRED", expires + r.uniform(60, 3600)
                if changed > now:
                    changed = now
                self._event(changed, K_EXPIRED, k)
            did, iss = self.dids[u], issuer()
            jwt = (b"eyJhbGciOiJFUzI1NiIsInR5cCI6InZjK2p3dCJ9." + base64.urlsafe_b64encode(
                r.randbytes(r.randrange(420, 600))).rstrip(b"=") + b"." +
                base64.urlsafe_b64encode(r.randbytes(64)).rstrip(b"=")).decode()
            self.status_rows.append(f"{self._uuid()}\t{cid}\t{status}\t{reason}\t{ts(changed)}\t"
                                    f"{ts(issued)}\t{ts(changed)}\n")
            yield (f"{cid}\t{self.ids[u]}\t{iss}\t{ctype()}\t{jwt}\t{ts(issued)}\t"
                   f"{ts.opt(expires)}\t{status}\t{ts.opt(revoked)}\t"
                   f"https://status.finpass.example/1#{k}\t{reason if revoked else NULL}\t"
                   f"{'did:web:ops.finpass.example' if revoked else NULL}\t"
                   f"{hashlib.sha256(jwt.encode()).hexdigest()}\t{r.getrandbits(64):016x}\t"
                   f"{did}\t{iss}#key-1\tJsonWebSignature2020\t{ts(issued)}\tassertionMethod\t"
                   f"{ts(issued)}\t{ts(changed)}\t{self.hashes[u]}\t{self.hashes[u]}\n")

    def credential_status(self) -> Iterator[str]:
        yield from self.status_rows
        self.status_rows = []

    # --- payments ---------------------------------------------------------------------------
    def payments(self) -> Iterator[str]:
        r, ts, n, now = self.rnd, self.ts, self.s.payments, self.now
        currency = _picker(r, _CURRENCIES)
        picks = []
        for _ in range(n):
            u = r.randrange(self.s.users)
            c = self.created[u]
            picks.append((c + (now - c) * r.random(), u))
        picks.sort()
        self.pay_ids: list[str] = []
        self.pay_user = array("i", bytes(4 * n))
        self.pay_amount: list[str] = []
        for k, (t, u) in enumerate(picks):
            pid = self._uuid()
            self.pay_ids.append(pid)
            self.pay_user[k] = u
            amount = round(min(r.lognormvariate(3.8, 1.3), 250_000.0), 2)
            fee = round(amount * 0.014 + 0.25, 2)
            cur = currency()
            self.pay_amount.append(f"{amount:.2f} {cur}")
            self._event(t, K_P_INIT, k)
            auth = capt = failed = refunded = 0.0
            status, fail_reason, refund_reason = "PENDING", NULL, NULL
            x, age = r.random(), now - t
            # Every step happens before `now` or not at all (then the payment is still open).
            step = t + (r.uniform(1, 8) if x < 0.07 else r.expovariate(1 / 3600) if x < 0.10
                        else r.uniform(0.3, 4))
            if (age < 600 and x < 0.5) or x < 0.002 or step >= now:  # in flight, or stuck
                pass
            elif x < 0.07:
                status, failed, fail_reason = "FAILED", step, r.choice(_FAIL_REASONS)
                self._event(failed, K_P_FAIL, k)
            elif x < 0.10:
                status = "CANCELLED"
                self._event(step, K_P_CANCEL, k)
            else:
                status, auth = "AUTHORIZED", step
                self._event(auth, K_P_AUTH, k)
                if x > 0.104:  # else stuck AUTHORIZED
                    capt = auth + r.expovariate(1 / 1800)
                    if capt < now:
                        status = "CAPTURED"
                        self._event(capt, K_P_CAPT, k)
                        if r.random() < 0.005:
                            self._event(capt + r.uniform(5, 600), K_P_DUP, k)
                        if r.random() < 0.05:
                            refunded = capt + r.expovariate(1 / (5 * DAY))
                            if refunded < now:
                                status, refund_reason = "REFUNDED", "customer_request"
                                self._event(refunded, K_P_REFUND, k)
                            else:
                                refunded = 0.0
                    else:
                        capt = 0.0
            updated = max(t, auth, capt, failed, refunded)
            payee = f"did:web:merchant-{r.randrange(2000):04d}.example"
            yield (f"{pid}\t{self.dids[u]}\t{payee}\t{amount:.2f}\t{cur}\t{status}\t"
                   f"{'ONE_TIME' if x < 0.8 else 'RECURRING' if x < 0.92 else 'SUBSCRIPTION'}\t"
                   f"kyc-{pid[:8]}\t{r.choice(_METHODS)}\t"
                   f"{('txn_' + pid.replace('-', '')) if auth else NULL}\tord-{k:08d}\t"
                   f"{fee:.2f}\t0.00\t{amount + fee:.2f}\t{ts.opt(auth)}\t{ts.opt(capt)}\t"
                   f"{ts.opt(failed)}\t{ts.opt(refunded)}\t{fail_reason}\t{refund_reason}\t"
                   f"{ts(t)}\t{ts(updated)}\t{ts.opt(capt)}\t{self.hashes[u]}\t"
                   f"{pseudonym(self.key, payee)}\n")

    # --- audit ------------------------------------------------------------------------------
    def _noise(self, day: int, n: int) -> list[tuple[float, int, int]]:
        """Logins, failed logins (with attack bursts) and user.seen for one day."""
        r, lo = self.rnd, self.start + day * DAY
        hi = min(lo + DAY, self.now)
        known = bisect_right(self.created, hi)
        out: list[tuple[float, int, int]] = []
        if known == 0 or hi <= lo:
            return out
        while len(out) < n:
            if r.random() < 0.002:  # an attack: brute force on one user, or stuffing from one IP
                t0, user = lo + (hi - lo) * r.random(), r.randrange(known)
                stuffing = r.random() < 0.4
                for _ in range(r.randrange(40, 200) if stuffing else r.randrange(6, 30)):
                    who = r.randrange(known) if stuffing else user
                    out.append((min(t0 + r.expovariate(0.5), hi), K_FAIL,
                                -(who + 1) if stuffing else -(who + 1 + self.s.users)))
                continue
            t, x = lo + (hi - lo) * r.random(), r.random()
            registered = max(1, bisect_right(self.created, t))
            u = self._active_user(t, registered) if x < 0.9 else r.randrange(registered)
            if u < 0:
                x, u = 1.0, r.randrange(registered)
            out.append((t, K_LOGIN if x < 0.72 else K_SEEN if x < 0.9 else K_FAIL, u))
        return out[:n]

    def _active_user(self, t: float, registered: int) -> int:
        """A user registered by `t` and seen at or after it (so last_seen stays the maximum)."""
        r, n = self.rnd, self.s.users
        still_seen = bisect_left(self.seen_sorted, t)
        if still_seen >= n:
            return -1
        for _ in range(8):
            if registered <= n - still_seen:
                u = r.randrange(registered)
                if self.last_seen[u] >= t:
                    return u
            else:
                u = self.by_seen[r.randrange(still_seen, n)]
                if self.created[u] <= t:
                    return u
        return -1

    def audit(self) -> Iterator[str]:
        r, ts, users, now = self.rnd, self.ts, self.s.users, self.now
        self.by_seen = array("i", sorted(range(users), key=self.last_seen.__getitem__))
        self.seen_sorted = array("d", (self.last_seen[u] for u in self.by_seen))
        keep = min(1.0, self.s.audit / max(1, self.domain_events))
        noise_total = max(0, self.s.audit - self.domain_events)
        # Noise per day follows the registered population; cumulative rounding keeps the total.
        # (The last bucket holds only events at exactly `now`: it gets no noise.)
        cum, acc = [0], 0
        for d in range(self.s.days):
            acc += bisect_right(self.created, self.start + (d + 1) * DAY)
            cum.append(acc)
        quota = [round(noise_total * cum[d + 1] / (acc or 1)) - round(noise_total * cum[d] /
                                                                    (acc or 1))
                 for d in range(self.s.days)] + [0]
        attacker = [f"185.220.{r.randrange(256)}.{r.randrange(256)}" for _ in range(64)]
        carry = 0
        for day, domain in enumerate(self.events):
            todo = domain if keep >= 1 else [e for e in domain if r.random() < keep]
            noise = self._noise(day, quota[day] + carry)
            carry += quota[day] - len(noise)  # days before anyone registered pass theirs on
            todo.extend(noise)
            todo.sort()
            self.events[day] = []
            for t, kind, idx in todo:
                etype, action, rtype, source, sev, outcome = _KINDS[kind]
                ip, ua, session, err, msg, role = NULL, NULL, NULL, NULL, NULL, "USER"
                new, desc, corr = NULL, NULL, f"req-{r.getrandbits(48):012x}"
                if kind <= K_FAIL:  # user, session and auth events
                    if idx < 0:  # attack traffic
                        u = (-idx - 1) % users
                        ip = attacker[(int(t) // 3600 + (-idx - 1) // users) % 64]
                        ua = "python-requests/2.32"
                    else:
                        u = idx
                        ip = f"{10 + u % 200}.{u // 200 % 250}.{u // 50000 % 250}.{u % 97 + 2}"
                        ua = _AGENTS[u % len(_AGENTS)]
                    uhash, rid = self.hashes[u], self.ids[u]
                    if kind == K_FAIL:
                        session = rid = f"s-{r.getrandbits(64):016x}"
                        err, msg = "LOGIN_FAILED", _LOGIN_FAIL[r.randrange(5)]
                        if idx >= 0 and r.random() < 0.15:
                            uhash = NULL  # an unknown DID: no subject to pseudonymise
                        desc = "login failed"
                    elif kind == K_LOGIN:
                        session = rid = f"s-{r.getrandbits(64):016x}"
                        desc = "login succeeded"
                    elif kind in (K_REG, K_KYC):
                        corr = f"onb-{rid[:8]}{rid[9:13]}"
                        desc = "user registered" if kind == K_REG else "KYC verified"
                    elif kind == K_STATUS:
                        role, desc = "ADMIN", "user status changed"
                    else:
                        desc = "user seen"
                elif kind <= K_EXPIRED:
                    rid = self.cred_ids[idx]
                    uhash = self.hashes[self.cred_user[idx]]
                    corr = f"vc-{rid[:8]}{rid[9:13]}" if kind == K_ISSUED else corr
                    role = "ISSUER" if kind == K_ISSUED else "SYSTEM" if kind == K_EXPIRED \
                        else "ADMIN"
                    status = _CRED_STATUS.get(kind, "VALID")
                    new, desc = f'{{"status":"{status}"}}', f"credential -> {status}"
                else:
                    rid = self.pay_ids[idx]
                    u = self.pay_user[idx]
                    uhash, corr = self.hashes[u], f"chk-{rid[:8]}{rid[9:13]}{rid[14:18]}"
                    ip = f"{10 + u % 200}.{u // 200 % 250}.{u // 50000 % 250}.{u % 97 + 2}"
                    if kind == K_P_DUP:
                        err = "INVALID_TRANSITION"
                        msg = desc = "payment CAPTURED -> CAPTURED is not allowed"
                    elif kind == K_P_INIT:
                        amount, cur = self.pay_amount[idx].split()
                        new = (f'{{"amount":"{amount}","currency":"{cur}",'
                               f'"status":"PENDING"}}')
                        desc = "payment initiated"
                    else:
                        new = f'{{"status":"{_PAY_STATUS[kind]}"}}'
                        desc = f"payment -> {_PAY_STATUS[kind]}"
                created = min(t + r.uniform(0.05, 1.5), now)
                row_id = self._uuid()  # also the event_id, as the pipeline writes its rows
                yield (f"{row_id}\t{etype}\t{uhash}\t{session}\t{ip}\t{ua}\t{rid}\t"
                       f"{rtype}\t{action}\t{outcome}\t{sev}\t{desc}\t{new}\t"
                       f"{uhash if role == 'USER' else self.admin_hash}\t{role}\t"
                       f"{source}\t{corr}\t{err}\t{msg}\t{_GEO[r.randrange(10)]}\t{NULL}\t"
                       f"{365 if kind in (K_LOGIN, K_FAIL) else 2555}\t{row_id}\t"
                       f"{ts(t)}\t{self.key_id}\t{ts(created)}\n")

    def tables(self) -> Iterator[tuple[str, tuple[str, ...], int, Iterator[list[str]]]]:
        yield "users", USER_COLS, self.s.users, self._chunks(self.users())
        yield "credentials", CRED_COLS, self.s.credentials, self._chunks(self.credentials())
        yield "credential_status", STATUS_COLS, self.s.credentials, \
            self._chunks(self.credential_status())
        yield "payments", PAY_COLS, self.s.payments, self._chunks(self.payments())
        yield "audit_events", AUDIT_COLS, self.s.audit, self._chunks(self.audit())
