"""Personal data at rest, erasure and access (docs/privacy.md, CONTRACT.md §5 v1.1).

- `crypto`: AES-GCM sealing of fields under a person's data key, and the master keyring that
  wraps those keys (`FINPASS_PII_MASTER_KEY`, rotatable by key id);
- `vault`: the `person_keys` table in a batch's transaction (load, create, destroy) with a
  process-wide cache of unwrapped keys;
- `erasure`: what `user.erasure_requested` does: the redaction rules of row images, raw payloads
  and the SQL that applies them to rows already stored;
- `export`, `cli`: `finpass-pipeline privacy export|rotate-key`.
"""
