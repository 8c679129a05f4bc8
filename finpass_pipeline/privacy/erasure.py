"""What `user.erasure_requested` does to what is stored (CONTRACT.md §5 v1.1, docs/privacy.md).

One set of rules, applied two ways that end in the same rows:
- `erase_stored`: in the erasure's transaction, to the rows already written (SQL), the parked
  events and the dead letters;
- `redact_images`: to the row images of a later batch, for people already erased (an event for
  them that arrives late, from another topic or in a replay), before they are written.

A person's raw DID becomes `hmac:<pseudonym>` (the form `Pseudonymizer.scrub_text` writes into
free text); their sealed fields and plaintext contact data become NULL (the data key is destroyed
too: copies in backups stay unreadable); free text about them becomes NULL (`metadata` `{}`).
Amounts, currencies, states and times stay.
"""

from __future__ import annotations

import json
import re
from typing import Any

import asyncpg

from finpass_pipeline.audit.pseudonym import Pseudonymizer
from finpass_pipeline.audit.record import PERSONAL_COLUMNS, AuditRow

ERASED_PREFIX = "hmac:"
EMPTY_METADATA = "{}"
_DID_BYTES = re.compile(rb"did:[a-z0-9]+:(?:[A-Za-z0-9._%-]*:)*[A-Za-z0-9._%-]+")
ACTOR_PERSONAL = ("ip_address", "user_agent", "geolocation", "device_fingerprint")
"""Actor fields that describe the person (session_id and role do not)."""
DATA_PERSONAL = ("email", "phone", "credential_jwt", "description", "metadata",
                 "kyc_decision_token")
"""`data` fields removed from a stored payload that mentions an erased person."""


def erased_form(pseudonym: str) -> str:
    """What a stored DID becomes once its person is erased."""
    return ERASED_PREFIX + pseudonym


def pseudonym_of(pz: Pseudonymizer, did: str) -> str:
    """The pseudonym of a stored DID, whether raw or already erased."""
    if did.startswith(ERASED_PREFIX) and len(did) == len(ERASED_PREFIX) + 64:
        return did[len(ERASED_PREFIX):]
    return pz.hash(did)


def strip_audit_actor(row: AuditRow) -> None:
    """An audit row about an erased person is written without its personal columns: the same
    ones `audit.redaction.erase_rows` clears in the rows written before the erasure, so the
    audit log ends the same whether the erasure came first or last."""
    for name in PERSONAL_COLUMNS:
        setattr(row, name, None)


def dids_in(payload: bytes | None) -> set[str]:
    """Every DID-shaped string in raw bytes (fast path: none without `did:`)."""
    if not payload or b"did:" not in payload:
        return set()
    return {m.decode() for m in _DID_BYTES.findall(payload)}


def redact_payload(payload: bytes, erased: dict[str, str]) -> bytes:
    """`payload` with every DID of `erased` (raw DID -> pseudonym) replaced by its erased form;
    when it is a JSON object, also without the actor's personal fields and the personal `data`
    fields (a parked event redacted so may no longer be valid: revived, it is dead-lettered)."""
    def sub(m: re.Match[bytes]) -> bytes:
        did = m.group().decode()
        return erased_form(erased[did]).encode() if did in erased else m.group()

    text = _DID_BYTES.sub(sub, payload)
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return text
    if not isinstance(doc, dict):
        return text
    _drop(doc.get("actor"), ACTOR_PERSONAL)
    _drop(doc.get("data"), DATA_PERSONAL)
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def _drop(obj: Any, names: tuple[str, ...]) -> None:
    if isinstance(obj, dict):
        for name in names:
            obj.pop(name, None)


# --- rows already stored -----------------------------------------------------------------------

async def erase_stored(conn: asyncpg.Connection, did: str, pseudonym: str) -> dict[str, int]:
    """Redact every stored copy of `did`'s personal data in the domain rows, parked events and
    dead letters; in the caller's transaction. Returns rows touched per table. (The data key is
    destroyed by `Vault.destroy`; audit rows by `audit.redaction.erase_rows` at merge.)"""
    gone = erased_form(pseudonym)
    counts: dict[str, int] = {}

    async def run(name: str, sql: str, *args: Any) -> None:
        status = await conn.execute(sql, *args)
        counts[name] = counts.get(name, 0) + int(status.rsplit(" ", 1)[-1])

    await run("users", "UPDATE users SET did = $2, email = NULL, phone = NULL, email_enc = NULL, "
              "phone_enc = NULL, email_index = NULL, phone_index = NULL, metadata = $3 "
              "WHERE did = $1", did, gone, EMPTY_METADATA)
    await run("credentials", "UPDATE credentials c SET credential_jwt = NULL, "
              "credential_jwt_enc = NULL, metadata = $3, verification_method = NULL, "
              "subject_did = CASE WHEN c.subject_did = $1 THEN $2 ELSE c.subject_did END, "
              "revoked_by = CASE WHEN c.revoked_by = $1 THEN $2 ELSE c.revoked_by END "
              "FROM users u WHERE u.id = c.user_id AND u.did = $2", did, gone, EMPTY_METADATA)
    await run("credentials", "UPDATE credentials SET subject_did = $2 WHERE subject_did = $1",
              did, gone)
    await run("credentials", "UPDATE credentials SET revoked_by = $2 WHERE revoked_by = $1",
              did, gone)
    await run("payments", "UPDATE payments SET payer_did = $2, description = NULL, "
              "kyc_decision_token = NULL, metadata = $3 WHERE payer_did = $1",
              did, gone, EMPTY_METADATA)
    await run("payments", "UPDATE payments SET payee_did = $2 WHERE payee_did = $1", did, gone)
    erased = {did: pseudonym}
    parked = await conn.fetch(
        "SELECT event_id, subject_key, payload FROM parked_events WHERE subject_key = $1 "
        "OR position(convert_to($1, 'UTF8') IN payload) > 0", did)
    for r in parked:
        await conn.execute(
            "UPDATE parked_events SET payload = $2, subject_key = $3 WHERE event_id = $1",
            r["event_id"], redact_payload(bytes(r["payload"]), erased),
            gone if r["subject_key"] == did else r["subject_key"])
    counts["parked_events"] = len(parked)
    letters = await conn.fetch(
        "SELECT id, message_key, raw_value, reason FROM dead_letter_events "
        "WHERE position(convert_to($1, 'UTF8') IN coalesce(message_key, '')) > 0 "
        "OR position(convert_to($1, 'UTF8') IN coalesce(raw_value, '')) > 0 "
        "OR position($1 IN reason) > 0", did)
    for r in letters:
        key, value = r["message_key"], r["raw_value"]
        await conn.execute(
            "UPDATE dead_letter_events SET message_key = $2, raw_value = $3, reason = $4 "
            "WHERE id = $1", r["id"],
            redact_payload(bytes(key), erased) if key is not None else None,
            redact_payload(bytes(value), erased) if value is not None else None,
            redact_payload(r["reason"].encode(), erased).decode())
    counts["dead_letter_events"] = len(letters)
    return counts
