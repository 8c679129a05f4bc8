"""The data subject's right of access: `finpass-pipeline privacy export --did DID`.

Everything the database holds about one person comes from `privacy_subject_data()`, called as
the `finpass_privacy` role (the only way that role reads raw personal data; the function logs
the call in `privacy_access_log` first). The sealed fields are opened here with the person's
data key (the database never sees the master key), and one audit row `PRIVACY_EXPORT` is
appended, on the chain `finpass.ops.privacy:0`, in the same transaction: no export without its
audit row, no audit row for an export that did not happen.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import asyncpg

from finpass_pipeline.audit.chain import AuditWriter
from finpass_pipeline.audit.operator import operator_row
from finpass_pipeline.audit.pseudonym import Pseudonymizer
from finpass_pipeline.privacy.crypto import DecryptionError, field_aad, open_sealed
from finpass_pipeline.privacy.vault import Vault

PRIVACY_ROLE = "finpass_privacy"
PRIVACY_SOURCE = ("finpass.ops.privacy", 0)
"""The audit chain of privacy operations (`finpass.ops.privacy:0`)."""

SEALED = (("users", "email"), ("users", "phone"), ("credentials", "credential_jwt"))
"""(table, column) of every sealed field; the sealed bytes are in `<column>_enc`."""


def open_field(vault: Vault, person_key: dict[str, Any] | None, table: str, column: str,
               row_id: object, sealed: bytes | None) -> str | None:
    """One sealed field in the clear; None when there is none or the key is gone (erased)."""
    if sealed is None or person_key is None or person_key.get("wrapped_key") is None:
        return None
    key = vault.unwrap(person_key["user_id_hash"], person_key["master_key_id"],
                       person_key["wrapped_key"])
    return open_sealed(key, sealed, field_aad(table, column, row_id))


def _b64(value: Any) -> bytes | None:
    return base64.b64decode(value) if isinstance(value, str) else None


def decrypt_document(vault: Vault, doc: dict[str, Any]) -> dict[str, Any]:
    """`privacy_subject_data`'s document with every sealed field opened in place (the
    `<column>_enc` entries become `<column>`; the wrapped key is left out)."""
    pk = doc.get("person_key")
    key_row = None
    if pk is not None:
        key_row = {**pk, "wrapped_key": _b64(pk.get("wrapped_key"))}
        doc["person_key"] = {k: v for k, v in pk.items() if k != "wrapped_key"}
    for table, column in SEALED:
        for row in doc.get(table) or []:
            sealed = _b64(row.pop(f"{column}_enc", None))
            if sealed is not None:
                try:
                    row[column] = open_field(vault, key_row, table, column, row["id"], sealed)
                except DecryptionError as e:
                    row[column] = None
                    row[f"{column}_error"] = str(e)
    return doc


async def export_subject(conn: asyncpg.Connection, vault: Vault, pz: Pseudonymizer, did: str,
                         purpose: str, *, chained: bool = True) -> dict[str, Any]:
    """Everything held about `did`, decrypted; audited in the same transaction."""
    pseudonym = pz.hash(did)
    async with conn.transaction():
        prior = str(await conn.fetchval("SELECT current_user"))
        await conn.execute(f"SET LOCAL ROLE {PRIVACY_ROLE}")
        raw = await conn.fetchval("SELECT privacy_subject_data($1, $2, $3)::text",
                                  pseudonym, did, purpose)
        # Back to the command's role (RESET would go to the session user) for the audit row.
        await conn.execute("SET LOCAL ROLE " + '"' + prior.replace('"', '""') + '"')
        doc = decrypt_document(vault, json.loads(raw))
        counts = {k: len(v) for k, v in doc.items() if isinstance(v, list)}
        row = dataclasses.replace(
            operator_row(pz.key_id, resource_type="USER", resource_id=pseudonym,
                         event_type="PRIVACY_EXPORT", action="EXPORT", outcome="SUCCESS",
                         description="personal data exported (right of access)",
                         details={"purpose": purpose, "rows": counts}),
            user_id_hash=pseudonym, performed_by_role="PRIVACY_OFFICER")
        await AuditWriter(chained=chained).append(conn, [row], [PRIVACY_SOURCE])
    return {"did": did, "user_id_hash": pseudonym, "purpose": purpose,
            "audit_row_id": str(row.id), **doc}
