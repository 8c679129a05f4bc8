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


def test_keyring() -> MasterKeyring:
    """The master keyring of `make_settings`."""
    return MasterKeyring("m1", {"m1": parse_key(TEST_PII_MASTER_KEY, "test key")})


def test_vault(audit_key: bytes = TEST_AUDIT_KEY, keyring: MasterKeyring | None = None
               ) -> tuple[Vault, Pseudonymizer]:
    """The vault and pseudonymizer of `make_settings` (the tests' keys), or of `keyring`."""
    pz = Pseudonymizer(audit_key, "k1")
    return Vault(keyring or test_keyring(), blind_index_key(pz)), pz


async def _key_rows(conn: asyncpg.Connection) -> dict[str, dict[str, Any]]:
    return {r["user_id_hash"]: {**dict(r), "wrapped_key": bytes(r["wrapped_key"])
                                if r["wrapped_key"] is not None else None}
            for r in await conn.fetch("SELECT * FROM person_keys")}


async def plain_users(conn: asyncpg.Connection, audit_key: bytes = TEST_AUDIT_KEY,
                      keyring: MasterKeyring | None = None
                      ) -> dict[str, tuple[str | None, str | None]]:
    """did -> (email, phone), opened with the tests' keys (plaintext columns as a fallback)."""
    vault, pz = test_vault(audit_key, keyring)
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
    vault, pz = test_vault(audit_key, keyring)
    keys = await _key_rows(conn)
    rows = await conn.fetch("SELECT c.id, u.did, c.credential_jwt, c.credential_jwt_enc "
                            "FROM credentials c JOIN users u ON u.id = c.user_id")
    return {str(r["id"]): open_field(vault, keys.get(pz.hash(r["did"])), "credentials",
                                     "credential_jwt", r["id"], r["credential_jwt_enc"])
            or r["credential_jwt"] for r in rows}
