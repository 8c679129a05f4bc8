"""Reading sealed personal data back in tests (the tests' master and pseudonym keys)."""

from __future__ import annotations

from typing import Any

import asyncpg

from finpass_pipeline.audit.pseudonym import Pseudonymizer
from finpass_pipeline.privacy.crypto import MasterKeyring, parse_key
from finpass_pipeline.privacy.export import open_field
from finpass_pipeline.privacy.vault import Vault, blind_index_key
from tests.support.pipeline_support import TEST_PII_MASTER_KEY

TEST_AUDIT_KEY = b"test-audit-key"


def keyring_for_tests() -> MasterKeyring:
    """The master keyring of `make_settings`."""
    return MasterKeyring("m1", {"m1": parse_key(TEST_PII_MASTER_KEY, "test key")})


def vault_for_tests(audit_key: bytes = TEST_AUDIT_KEY, keyring: MasterKeyring | None = None
               ) -> tuple[Vault, Pseudonymizer]:
    """The vault and pseudonymizer of `make_settings` (the tests' keys), or of `keyring`."""
    pz = Pseudonymizer(audit_key, "k1")
    return Vault(keyring or keyring_for_tests(), blind_index_key(pz)), pz


async def _key_rows(conn: asyncpg.Connection) -> dict[str, dict[str, Any]]:
    return {r["user_id_hash"]: {**dict(r), "wrapped_key": bytes(r["wrapped_key"])
                                if r["wrapped_key"] is not None else None}
            for r in await conn.fetch("SELECT * FROM person_keys")}


async def plain_users(conn: asyncpg.Connection, audit_key: bytes = TEST_AUDIT_KEY,
                      keyring: MasterKeyring | None = None
                      ) -> dict[str, tuple[str | None, str | None]]:
    """did -> (email, phone), opened with the tests' keys (plaintext columns as a fallback)."""
    vault, pz = vault_for_tests(audit_key, keyring)
    keys = await _key_rows(conn)
    out = {}
    for r in await conn.fetch("SELECT id, did, email, phone, email_enc, phone_enc FROM users"):
        key = keys.get(pz.hash(r["did"]))
        out[r["did"]] = (
            open_field(vault, key, "users", "email", r["id"], r["email_enc"]) or r["email"],
            open_field(vault, key, "users", "phone", r["id"], r["phone_enc"]) or r["phone"])
    return out


async def plain_jwts(conn: asyncpg.Connection, audit_key: bytes = TEST_AUDIT_KEY,
                     keyring: MasterKeyring | None = None) -> dict[str, str | None]:
    """credential id (text) -> JWT, opened with the tests' keys."""
    vault, pz = vault_for_tests(audit_key, keyring)
    keys = await _key_rows(conn)
    rows = await conn.fetch("SELECT c.id, u.did, c.credential_jwt, c.credential_jwt_enc "
                            "FROM credentials c JOIN users u ON u.id = c.user_id")
    return {str(r["id"]): open_field(vault, keys.get(pz.hash(r["did"])), "credentials",
                                     "credential_jwt", r["id"], r["credential_jwt_enc"])
            or r["credential_jwt"] for r in rows}


AUDIT_PERSONAL_COLUMNS_ERASED = True
"""Switch on at the merge with branch `merkle` (`audit.redaction.erase_rows` wired into
`consumers.privacy._erase_audit_rows`): then audit rows' personal columns are redacted on
erasure too, and the checks that read them (`audit_personal_columns`, the dump scan of
`audit_events`) include them."""

AUDIT_PERSONAL = ("ip_address", "user_agent", "geolocation", "device_fingerprint", "session_id",
                  "details", "description", "error_message")

SNAPSHOT_SQL = {
    "users": "SELECT id, did, created_at, last_seen, email, phone, email_enc IS NOT NULL, "
             "phone_enc IS NOT NULL, email_index, phone_index, kyc_verified, kyc_verified_at, "
             "status, metadata, updated_at FROM users ORDER BY id",
    "credentials": "SELECT id, user_id, issuer_id, credential_type, credential_jwt, "
                   "credential_jwt_enc IS NOT NULL, issued_at, expires_at, status, revoked_at, "
                   "revocation_handle, revocation_reason, revoked_by, credential_hash, nonce, "
                   "subject_did, verification_method, proof_type, proof_created_at, "
                   "proof_purpose, metadata, created_at, updated_at FROM credentials ORDER BY id",
    "credential_status": "SELECT * FROM credential_status ORDER BY id",
    "payments": "SELECT * FROM payments ORDER BY id",
    "person_keys": "SELECT user_id_hash, hash_key_id, master_key_id, wrapped_key IS NOT NULL, "
                   "erased_at, erasure_event_id FROM person_keys ORDER BY user_id_hash",
    "parked_events": "SELECT event_id, event_type, subject_type, subject_key, payload, topic, "
                     "kafka_partition, kafka_offset FROM parked_events ORDER BY event_id",
    "dead_letter_events": "SELECT topic, kafka_partition, kafka_offset, message_key, raw_value, "
                          "reason, event_id FROM dead_letter_events "
                          "ORDER BY topic, kafka_partition, kafka_offset",
    "audit_events": "SELECT id, event_type, user_id_hash, resource_type, resource_id, outcome, "
                    "performed_by FROM audit_events ORDER BY id",
}


async def snapshot(conn: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """The tables as a replay must reproduce them: sealed bytes (random nonces) and wrapped keys
    only as present or not; audit rows without their personal columns until the merge switch."""
    out = {name: [tuple(r) for r in await conn.fetch(sql)] for name, sql in SNAPSHOT_SQL.items()}
    if AUDIT_PERSONAL_COLUMNS_ERASED:
        out["audit_personal"] = [tuple(r) for r in await conn.fetch(
            f"SELECT id, {', '.join(AUDIT_PERSONAL)} FROM audit_events ORDER BY id")]
    return out
