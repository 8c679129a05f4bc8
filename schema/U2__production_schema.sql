-- U2: undo V2__production_schema.sql, leaving exactly the V1 schema.
--
-- Drops what V2 added (tables, columns, named constraints, idx_* indexes); V1's columns and
-- their values are untouched. Dropping a column would take its indexes and constraints with it,
-- but they are dropped by name first so this script states the whole undo, and so idx_* indexes
-- on V1 columns (idx_users_did, idx_credentials_user_id, idx_credentials_issuer_id) go as well.
-- The credential_status rows V2 inserted stay: they are valid V1 rows (one per credential, as
-- V1 intends), and a later re-run of V2 skips credentials that already have one.
-- DATA LOSS: payments, audit_events and every V2-only column are gone after this script.
--
-- Scripts run inside one transaction per version (finpass_pipeline.migrations): no BEGIN/COMMIT.

DROP TABLE audit_events;
DROP TABLE payments;

DROP INDEX idx_users_did;
DROP INDEX idx_users_status;
DROP INDEX idx_users_kyc_verified;
DROP INDEX idx_users_last_seen;

DROP INDEX idx_credentials_user_id;
DROP INDEX idx_credentials_status;
DROP INDEX idx_credentials_issuer_id;
DROP INDEX idx_credentials_expires_at;
DROP INDEX idx_credentials_revocation_handle;
DROP INDEX idx_credentials_credential_hash;

ALTER TABLE credential_status
    DROP CONSTRAINT ck_credential_status_status,
    DROP COLUMN reason,
    DROP COLUMN status_changed_at;

ALTER TABLE credentials
    DROP CONSTRAINT ck_credentials_status,
    DROP CONSTRAINT credentials_credential_hash_key,
    DROP COLUMN expires_at,
    DROP COLUMN status,
    DROP COLUMN revoked_at,
    DROP COLUMN revocation_handle,
    DROP COLUMN revocation_reason,
    DROP COLUMN revoked_by,
    DROP COLUMN credential_hash,
    DROP COLUMN nonce,
    DROP COLUMN subject_did,
    DROP COLUMN verification_method,
    DROP COLUMN proof_type,
    DROP COLUMN proof_created_at,
    DROP COLUMN proof_purpose,
    DROP COLUMN metadata,
    DROP COLUMN updated_at;

ALTER TABLE users
    DROP CONSTRAINT ck_users_status,
    DROP COLUMN last_seen,
    DROP COLUMN email,
    DROP COLUMN phone,
    DROP COLUMN kyc_verified,
    DROP COLUMN kyc_verified_at,
    DROP COLUMN status,
    DROP COLUMN metadata,
    DROP COLUMN updated_at;
