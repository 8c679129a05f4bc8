"""The `person_keys` table inside a batch's transaction: which people are erased, their data
keys (unwrapped once per process, cached), new keys, tombstones.

One query per batch reads the rows of every person the batch mentions; a key is created only
when a person first has something to seal. The cache maps (pseudonym, wrapped bytes) to the
unwrapped key, so a key destroyed or re-wrapped elsewhere is never used from the cache: the
batch always reads the current row, under the subject's advisory lock.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from finpass_pipeline.audit.pseudonym import Pseudonymizer
from finpass_pipeline.privacy.crypto import MasterKeyring, new_data_key

CACHE_SIZE = 65_536
"""Unwrapped data keys kept per process (32 bytes each)."""


def blind_index_key(pz: Pseudonymizer) -> bytes:
    """The blind indexes' key, derived from the pseudonym key (HMAC as a PRF), so that the
    index is as stable, and rotates, as `user_id_hash` does."""
    return bytes.fromhex(pz.hash("finpass:v1:blind-index-key"))


@dataclass
class BatchKeys:
    """What a batch knows about the people it mentions."""

    erased: set[str] = field(default_factory=set)
    """Pseudonyms with a tombstone."""
    wrapped: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    """Pseudonym -> (master key id, wrapped data key) of the live ones that have a key."""


class Vault:
    """Per-person data keys under one master keyring; one per Store (process-wide cache)."""

    def __init__(self, keyring: MasterKeyring, index_key: bytes) -> None:
        self.keyring = keyring
        self._index_key = index_key
        self._cache: OrderedDict[tuple[str, bytes], bytes] = OrderedDict()

    def blind_index(self, kind: str, value: str | None) -> str | None:
        """Keyed HMAC of a normalised value (`email`: case-folded; `phone`: digits and `+`),
        for equality look-ups without decrypting."""
        if not value:
            return None
        norm = (value.strip().lower() if kind == "email"
                else "".join(c for c in value if c.isdigit() or c == "+"))
        return hmac.new(self._index_key, f"{kind}:{norm}".encode(), hashlib.sha256).hexdigest()

    async def load(self, conn: asyncpg.Connection, pseudonyms: Collection[str]) -> BatchKeys:
        found = BatchKeys()
        if not pseudonyms:
            return found
        rows = await conn.fetch(
            "SELECT user_id_hash, master_key_id, wrapped_key, erased_at IS NOT NULL AS erased "
            "FROM person_keys WHERE user_id_hash = ANY($1::text[])", list(pseudonyms))
        for r in rows:
            if r["erased"]:
                found.erased.add(r["user_id_hash"])
            else:
                found.wrapped[r["user_id_hash"]] = (r["master_key_id"], bytes(r["wrapped_key"]))
        return found

    async def data_keys(self, conn: asyncpg.Connection, keys: BatchKeys,
                        wanted: Collection[str], hash_key_id: str) -> dict[str, bytes]:
        """The data key of every live person in `wanted`, created (and stored) when missing."""
        out: dict[str, bytes] = {}
        missing: list[str] = []
        for p in wanted:
            if p in keys.erased:
                continue
            if p in keys.wrapped:
                out[p] = self._unwrap(p, *keys.wrapped[p])
            else:
                missing.append(p)
        if missing:
            fresh = {p: new_data_key() for p in missing}
            wrapped = {p: self.keyring.wrap(k, p) for p, k in fresh.items()}
            created = await conn.fetch(
                "INSERT INTO person_keys (user_id_hash, hash_key_id, master_key_id, wrapped_key) "
                "SELECT p, $2, m, w FROM unnest($1::text[], $3::text[], $4::bytea[]) AS "
                "u(p, m, w) ON CONFLICT (user_id_hash) DO NOTHING RETURNING user_id_hash",
                missing, hash_key_id, [wrapped[p][0] for p in missing],
                [wrapped[p][1] for p in missing])
            won = {r["user_id_hash"] for r in created}
            for p in missing:
                if p in won:
                    out[p] = fresh[p]
                    keys.wrapped[p] = wrapped[p]
            lost = [p for p in missing if p not in won]
            if lost:  # created (or erased) since the batch read them: read them again
                again = await self.load(conn, lost)
                keys.erased |= again.erased
                keys.wrapped.update(again.wrapped)
                out.update({p: self._unwrap(p, *again.wrapped[p]) for p in again.wrapped})
        return out

    def _unwrap(self, pseudonym: str, key_id: str, wrapped: bytes) -> bytes:
        cache_key = (pseudonym, wrapped)
        key = self._cache.get(cache_key)
        if key is None:
            key = self.keyring.unwrap(key_id, wrapped, pseudonym)
            self._cache[cache_key] = key
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return key

    def unwrap(self, pseudonym: str, key_id: str, wrapped: bytes) -> bytes:
        """One person's data key (export, rotation)."""
        return self._unwrap(pseudonym, key_id, wrapped)

    async def destroy(self, conn: asyncpg.Connection, pseudonym: str, hash_key_id: str,
                      event_id: uuid.UUID, when: datetime) -> None:
        """Crypto-shred: the wrapped key is gone; the row stays as the tombstone. A second
        erasure of the same person keeps the first one's time and event."""
        await conn.execute(
            "INSERT INTO person_keys AS k (user_id_hash, hash_key_id, master_key_id, "
            "wrapped_key, erased_at, erasure_event_id) VALUES ($1, $2, NULL, NULL, $3, $4) "
            "ON CONFLICT (user_id_hash) DO UPDATE SET master_key_id = NULL, wrapped_key = NULL, "
            "erased_at = EXCLUDED.erased_at, erasure_event_id = EXCLUDED.erasure_event_id "
            "WHERE k.erased_at IS NULL", pseudonym, hash_key_id, when, event_id)
        for cache_key in [k for k in self._cache if k[0] == pseudonym]:
            del self._cache[cache_key]
