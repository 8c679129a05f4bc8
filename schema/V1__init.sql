-- V1: the initial basic schema, reconstructed.
--
-- The Java issuer service's log (M1.7) lists "V1__init.sql - Initial basic schema (existing)"
-- but never shows it. This file rebuilds it from what the log's V2 implies:
--   * V2 *adds* columns to `users` and `credentials`, so both existed, holding exactly the
--     columns the V2 DDL has that V2's "ALTER TABLE ... ADD COLUMN" list does not touch:
--     users(id, did, created_at) and credentials(id, user_id, issuer_id, credential_type,
--     credential_jwt, issued_at, created_at);
--   * V2's data migration runs
--       INSERT INTO credential_status (credential_id, status, created_at, updated_at)
--       SELECT id, 'VALID', created_at, CURRENT_TIMESTAMP FROM credentials;
--     so `credential_status` existed too, with at least those columns, one row per
--     credential (CredentialStatus is 1:1 with Credentials in the log's ER diagram).
-- Timestamps are TIMESTAMPTZ from the start (the log's "TIMESTAMP with Time Zone"; the pipeline
-- stores UTC), so V2 never has to convert a column's type.
--
-- Scripts run inside one transaction per version (finpass_pipeline.migrations): no BEGIN/COMMIT.
-- gen_random_uuid() is built into PostgreSQL 13+, so no extension is needed.

CREATE TABLE users (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    did TEXT NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE credentials (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    issuer_id TEXT NOT NULL,
    credential_type TEXT NOT NULL,
    credential_jwt TEXT NOT NULL,
    issued_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    created_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP
);

-- One row per credential (UNIQUE credential_id); removed with its credential.
CREATE TABLE credential_status (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    credential_id UUID NOT NULL UNIQUE REFERENCES credentials(id) ON DELETE CASCADE,
    status VARCHAR(20) NOT NULL DEFAULT 'VALID',
    created_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP
);
