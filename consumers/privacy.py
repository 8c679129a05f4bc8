"""The batch transaction's personal-data steps (docs/privacy.md), used by `consumers.store`:

1. `begin`: read `person_keys` of everyone the batch mentions (one query): who is erased;
2. `prepare` (before the rows are written): redact the row images of erased people, then seal
   the contact data and JWTs of new rows under their owner's data key (created when missing);
3. `finish` (after the audit rows): for each erasure of the batch, destroy the data key and
   redact what is already stored (domain rows, parked events, dead letters, audit rows);
4. `clean_payloads`: raw bytes about to be stored (parked events, dead letters) are redacted
   for people already erased.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable, Sequence

import asyncpg

from consumers.apply import BatchState
from consumers.records import Incoming
from consumers.rows import CredentialRow, PaymentRow, UserRow
from finpass_pipeline.audit.pseudonym import Pseudonymizer
from finpass_pipeline.audit.redaction import erase_rows
from finpass_pipeline.events import Event, EventData
from finpass_pipeline.privacy.crypto import field_aad, seal
from finpass_pipeline.privacy.erasure import (
    EMPTY_METADATA,
    ERASED_PREFIX,
    dids_in,
    erase_stored,
    erased_form,
    pseudonym_of,
    redact_payload,
)
from finpass_pipeline.privacy.vault import BatchKeys, Vault

LockPeople = Callable[[asyncpg.Connection, set[str]], Awaitable[None]]

_DID_FIELDS = ("did", "user_did", "payer_did", "payee_did", "subject_did", "revoked_by")


@functools.cache
def _did_fields(data_type: type[EventData]) -> tuple[str, ...]:
    # Only the fields the model declares: getattr of a missing one on a pydantic model with
    # extras raises inside (~4 µs each), which made this the costliest line of a batch.
    return tuple(n for n in _DID_FIELDS if n in data_type.model_fields)


def event_dids(event: Event) -> set[str]:
    """The DIDs an event names: its subject, its actor, and the DID fields of its data."""
    data = event.data
    found = {v for name in _did_fields(type(data))
             if isinstance(v := getattr(data, name), str) and v.startswith("did:")}
    if event.actor is not None and event.actor.did:
        found.add(event.actor.did)
    return found


def incoming_dids(inc: Incoming) -> set[str]:
    """`event_dids` of an incoming event, computed once (a batch asks twice: locks, keys)."""
    if inc.dids is None:
        inc.dids = event_dids(inc.event)
    return inc.dids


async def _erase_audit_rows(conn: asyncpg.Connection, pseudonym: str) -> int:
    """Redact the person's audit rows: their personal columns and salts become NULL, their
    digests stay, so `audit verify` and every Merkle proof still hold (docs/audit.md §6)."""
    return await erase_rows(conn, pseudonym)


class BatchPrivacy:
    """Personal-data steps of one Store (one per Store: the vault caches unwrapped keys)."""

    def __init__(self, vault: Vault, pz: Pseudonymizer,
                 lock_people: LockPeople | None = None) -> None:
        self.vault = vault
        self.pz = pz
        self.lock_people = lock_people
        """Takes shared locks on the users of these DIDs (the store's advisory locks)."""

    async def begin(self, conn: asyncpg.Connection, state: BatchState,
                    events: Iterable[Incoming]) -> BatchKeys:
        dids: set[str] = set()
        for inc in events:
            dids |= incoming_dids(inc)
        keys = await self.vault.load(conn, {self.pz.hash(d) for d in dids})
        state.erased |= keys.erased
        # Rows already erased hold `hmac:<pseudonym>`: their people are erased too, though the
        # event may not name them (a payment's capture names only the payment).
        for u in state.users.values():
            if u is not None and u.did.startswith(ERASED_PREFIX):
                state.erased.add(pseudonym_of(self.pz, u.did))
        for c in state.credentials.values():
            if c is not None and c.user_did.startswith(ERASED_PREFIX):
                state.erased.add(pseudonym_of(self.pz, c.user_did))
        for p in state.payments.values():
            for did in (p.payer_did, p.payee_did) if p is not None else ():
                if did.startswith(ERASED_PREFIX):
                    state.erased.add(pseudonym_of(self.pz, did))
        return keys

    async def prepare(self, conn: asyncpg.Connection, state: BatchState, keys: BatchKeys
                      ) -> None:
        users = [r for r in state.users.values() if r is not None]
        creds = [r for r in state.credentials.values() if r is not None]
        if state.erased:
            self._redact_images(state.erased, users, creds,
                                [r for r in state.payments.values() if r is not None])
        new_users = [r for r in users if r.is_new and (r.email or r.phone)
                     and not r.did.startswith("hmac:")]
        new_creds = [r for r in creds if r.is_new and r.credential_jwt]
        if not new_users and not new_creds:
            return
        owner = {id(r): self.pz.hash(r.did) for r in new_users}
        owner.update({id(r): pseudonym_of(self.pz, r.user_did) for r in new_creds})
        data_keys = await self.vault.data_keys(conn, keys, set(owner.values()), self.pz.key_id)
        for u in new_users:
            key = data_keys[owner[id(u)]]
            if u.email:
                u.email_enc = seal(key, u.email, field_aad("users", "email", u.id))
                u.email_index = self.vault.blind_index("email", u.email)
            if u.phone:
                u.phone_enc = seal(key, u.phone, field_aad("users", "phone", u.id))
                u.phone_index = self.vault.blind_index("phone", u.phone)
        for c in new_creds:
            assert c.credential_jwt is not None  # noqa: S101  (filtered above)
            c.credential_jwt_enc = seal(data_keys[owner[id(c)]], c.credential_jwt,
                                        field_aad("credentials", "credential_jwt", c.id))

    def _redact_images(self, erased: set[str], users: list[UserRow],
                       creds: list[CredentialRow], pays: list[PaymentRow]) -> None:
        """The same end state as `erasure.erase_stored` on these rows (a test holds the two
        equal): the images of a batch that mentions erased people, before they are written."""
        def gone(did: str | None) -> str | None:
            if did is None:
                return None
            p = pseudonym_of(self.pz, did)
            return erased_form(p) if p in erased else None

        for u in users:
            if (g := gone(u.did)) is not None:
                u.did, u.email, u.phone, u.metadata = g, None, None, EMPTY_METADATA
                u.email_enc = u.phone_enc = u.email_index = u.phone_index = None
        for c in creds:
            if gone(c.user_did) is not None:
                c.credential_jwt = c.credential_jwt_enc = c.verification_method = None
                c.metadata = EMPTY_METADATA
            c.subject_did = gone(c.subject_did) or c.subject_did
            c.revoked_by = gone(c.revoked_by) or c.revoked_by
        for p in pays:
            if (g := gone(p.payer_did)) is not None:
                p.payer_did, p.description, p.kyc_decision_token = g, None, None
                p.metadata = EMPTY_METADATA
            p.payee_did = gone(p.payee_did) or p.payee_did

    async def finish(self, conn: asyncpg.Connection, state: BatchState) -> None:
        for did, pseudonym, event in state.erasures:
            await self.vault.destroy(conn, pseudonym, self.pz.key_id, event.event_id,
                                     event.occurred_at)
            await erase_stored(conn, did, pseudonym)
            await _erase_audit_rows(conn, pseudonym)

    async def clean_payloads(self, conn: asyncpg.Connection,
                             payloads: Sequence[bytes | None]) -> list[bytes | None]:
        """`payloads` with the DIDs of erased people (and what goes with them) redacted."""
        found: dict[str, str] = {}
        for payload in payloads:
            for did in dids_in(payload):
                found.setdefault(did, self.pz.hash(did))
        if not found:
            return list(payloads)
        if self.lock_people is not None:  # as for events: never beside a concurrent erasure
            await self.lock_people(conn, set(found))
        erased = (await self.vault.load(conn, set(found.values()))).erased
        gone = {d: p for d, p in found.items() if p in erased}
        if not gone:
            return list(payloads)
        return [redact_payload(b, gone) if b is not None and dids_in(b) & gone.keys() else b
                for b in payloads]
