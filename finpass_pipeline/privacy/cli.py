"""`finpass-pipeline privacy export|rotate-key` (docs/privacy.md).

- `export --did DID [--purpose TEXT]`: the right of access: everything held about the person,
  decrypted, as JSON on stdout, read through the `finpass_privacy` role and audited
  (`finpass_pipeline.privacy.export`).
- `seal-legacy`: seal the plaintext contact data and JWTs of rows written before V16.
- `rotate-key`: re-wrap every live data key under the current master key
  (`FINPASS_PII_MASTER_KEY`, id `FINPASS_PII_MASTER_KEY_ID`), unwrapping with the older ones in
  `FINPASS_PII_MASTER_KEYS`; sealed fields are not touched (their data keys do not change).
  Audited on the same chain as exports.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg

from finpass_pipeline.audit.chain import AuditWriter
from finpass_pipeline.audit.operator import operator_row
from finpass_pipeline.audit.pseudonym import Pseudonymizer
from finpass_pipeline.db import command_connection
from finpass_pipeline.errors import EXIT_OK, FinpassError
from finpass_pipeline.privacy.crypto import field_aad, seal
from finpass_pipeline.privacy.export import PRIVACY_SOURCE, export_subject
from finpass_pipeline.privacy.vault import Vault, blind_index_key
from finpass_pipeline.settings import Settings

Say = Callable[[str], None]


class PrivacyCommandError(FinpassError):
    """A one-line failure of a privacy command (exit 1)."""


def _connect(settings: Settings) -> AbstractAsyncContextManager[asyncpg.Connection]:
    return command_connection(
        settings.database_url, settings.database_role, "person_keys",
        missing="person_keys is missing: run `finpass-pipeline migrate` (V16+) against this "
                "database", error=PrivacyCommandError)


def _vault(settings: Settings) -> tuple[Vault, Pseudonymizer]:
    pz = Pseudonymizer(settings.hash_key(), settings.audit_hash_key_id)
    return Vault(settings.pii_keyring(), blind_index_key(pz)), pz


async def export(settings: Settings, did: str, purpose: str, say: Say = print) -> int:
    """Print the person's data as JSON (one document)."""
    vault, pz = _vault(settings)  # ConfigError (exit 2) before connecting
    async with _connect(settings) as conn:
        try:
            doc = await export_subject(conn, vault, pz, did, purpose,
                                       chained=settings.audit_chain)
        except asyncpg.InsufficientPrivilegeError as e:
            raise PrivacyCommandError(
                f"{e}: the login needs membership of finpass_privacy "
                "(GRANT finpass_privacy TO <login>)") from e
    say(json.dumps(doc, indent=2, sort_keys=True, default=str, ensure_ascii=False))
    return EXIT_OK


async def rotate_key(settings: Settings, batch_size: int = 1000, say: Say = print) -> int:
    """Re-wrap, in transactions of `batch_size`, every live data key not under the current
    master key. Rows another transaction holds are skipped (run again); exit 1 if any remain."""
    vault, pz = _vault(settings)
    ring = vault.keyring
    done = 0
    async with _connect(settings) as conn:
        while True:
            async with conn.transaction():
                rows = await conn.fetch(
                    "SELECT user_id_hash, master_key_id, wrapped_key FROM person_keys "
                    "WHERE erased_at IS NULL AND master_key_id <> $1 ORDER BY user_id_hash "
                    "LIMIT $2 FOR UPDATE SKIP LOCKED", ring.current_id, batch_size)
                if not rows:
                    break
                rewrapped = [ring.wrap(vault.unwrap(r["user_id_hash"], r["master_key_id"],
                                                    bytes(r["wrapped_key"])), r["user_id_hash"])
                             for r in rows]
                await conn.execute(
                    "UPDATE person_keys k SET master_key_id = v.m, wrapped_key = v.w, "
                    "rotated_at = now() FROM unnest($1::text[], $2::text[], $3::bytea[]) "
                    "AS v(p, m, w) WHERE k.user_id_hash = v.p AND k.erased_at IS NULL",
                    [r["user_id_hash"] for r in rows], [m for m, _ in rewrapped],
                    [w for _, w in rewrapped])
                done += len(rows)
        left = int(await conn.fetchval(
            "SELECT count(*) FROM person_keys WHERE erased_at IS NULL AND master_key_id <> $1",
            ring.current_id))
        row = dataclasses.replace(operator_row(
            pz.key_id, resource_type="PII_MASTER_KEY", resource_id=ring.current_id,
            event_type="PRIVACY_KEY_ROTATED", action="ROTATE",
            outcome="SUCCESS" if not left else "FAILURE",
            description=f"data keys re-wrapped under master key {ring.current_id}",
            details={"rewrapped": done, "remaining": left}), performed_by_role="OPERATOR")
        async with conn.transaction():
            await AuditWriter(chained=settings.audit_chain).append(conn, [row], [PRIVACY_SOURCE])
    say(f"re-wrapped {done} data key(s) under master key {ring.current_id!r}; "
        f"{left} still under other keys")
    if left:
        raise PrivacyCommandError(f"{left} data key(s) were busy: run rotate-key again")
    return EXIT_OK


async def seal_legacy(settings: Settings, batch_size: int = 1000, say: Say = print) -> int:
    """Seal the plaintext email, phone and JWT of rows written before V16 (and NULL the
    plaintext), in transactions of `batch_size` rows; safe while consumers run (the rows are
    locked, busy ones skipped until the next pass)."""
    vault, pz = _vault(settings)
    sealed = {"users": 0, "credentials": 0}
    async with _connect(settings) as conn:
        while True:
            async with conn.transaction():
                users = await conn.fetch(
                    "SELECT id, did, email, phone FROM users WHERE (email IS NOT NULL OR "
                    "phone IS NOT NULL) AND did NOT LIKE 'hmac:%' ORDER BY id LIMIT $1 "
                    "FOR UPDATE SKIP LOCKED", batch_size)
                creds = await conn.fetch(
                    "SELECT c.id, u.did, c.credential_jwt FROM credentials c JOIN users u ON "
                    "u.id = c.user_id WHERE c.credential_jwt IS NOT NULL AND u.did NOT LIKE "
                    "'hmac:%' ORDER BY c.id LIMIT $1 FOR UPDATE OF c SKIP LOCKED", batch_size)
                if not users and not creds:
                    break
                people = {r["did"]: pz.hash(r["did"]) for r in [*users, *creds]}
                known = await vault.load(conn, set(people.values()))
                keys = await vault.data_keys(conn, known, set(people.values()), pz.key_id)
                await conn.executemany(
                    "UPDATE users SET email = NULL, phone = NULL, email_enc = $2, phone_enc = $3, "
                    "email_index = $4, phone_index = $5 WHERE id = $1",
                    [(r["id"], _seal(keys[people[r["did"]]], r["email"], "users", "email",
                                     r["id"]),
                      _seal(keys[people[r["did"]]], r["phone"], "users", "phone", r["id"]),
                      vault.blind_index("email", r["email"]),
                      vault.blind_index("phone", r["phone"])) for r in users])
                await conn.executemany(
                    "UPDATE credentials SET credential_jwt = NULL, credential_jwt_enc = $2 "
                    "WHERE id = $1",
                    [(r["id"], _seal(keys[people[r["did"]]], r["credential_jwt"], "credentials",
                                     "credential_jwt", r["id"])) for r in creds])
                sealed["users"] += len(users)
                sealed["credentials"] += len(creds)
    say(f"sealed {sealed['users']} user row(s) and {sealed['credentials']} credential row(s)")
    return EXIT_OK


def _seal(key: bytes, value: str | None, table: str, column: str, row_id: object
          ) -> bytes | None:
    return seal(key, value, field_aad(table, column, row_id)) if value else None


def add_parser(sub: Any) -> None:
    privacy = sub.add_parser("privacy", help="personal data: export (right of access), "
                                             "rotate-key (master key rotation)")
    actions = privacy.add_subparsers(dest="privacy_action", required=True, metavar="ACTION")
    exp = actions.add_parser("export", help="everything held about a DID, decrypted, as JSON "
                                            "(read as finpass_privacy; audited)")
    exp.add_argument("--did", required=True, metavar="DID")
    exp.add_argument("--purpose", default="data subject access request (GDPR Art. 15)",
                     help="why: recorded in privacy_access_log and the audit row")
    rot = actions.add_parser("rotate-key", help="re-wrap every data key under the current "
                                                "FINPASS_PII_MASTER_KEY")
    rot.add_argument("--batch-size", type=int, default=1000)
    legacy = actions.add_parser("seal-legacy", help="seal the plaintext email, phone and JWT "
                                                    "of rows written before V16")
    legacy.add_argument("--batch-size", type=int, default=1000)
    privacy.set_defaults(handler=cmd_privacy)


def cmd_privacy(args: argparse.Namespace, settings: Settings) -> int:
    if args.privacy_action == "export":
        return asyncio.run(export(settings, args.did, args.purpose))
    if args.privacy_action == "seal-legacy":
        return asyncio.run(seal_legacy(settings, max(1, args.batch_size)))
    return asyncio.run(rotate_key(settings, max(1, args.batch_size)))
