"""A large, deterministic event stream with exactly known final table contents."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from finpass_pipeline.events import EventBase
from tests.support.builders import ev, initiated, registered


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
