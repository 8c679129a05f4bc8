-- V2: the production schema of the Java issuer's M1.7 log, as an evolution of V1.
--
-- Source: the log's "Enhanced Tables" DDL, its 20 idx_* indexes and its data migration. Every
-- column, type, default, NOT NULL, UNIQUE, foreign key and index written there is here.
-- Decisions (undone exactly by U2__production_schema.sql):
--   * Every timestamp is TIMESTAMPTZ, not the DDL's bare TIMESTAMP: the log's own "Data Types"
--     notes say "TIMESTAMP with Time Zone", and the pipeline's contract stores UTC instants.
--     V1 already created its timestamps as TIMESTAMPTZ, so no existing column changes type.
--   * `metadata` (and the audit payload columns) stay TEXT holding JSON text, as in the DDL.
--   * Enumerated status columns get named CHECK constraints (ck_<table>_<column>), so bad values
--     fail at the database and U2 can drop them by name.
--   * No IF NOT EXISTS (unlike the log's sketch): a versioned script runs exactly once, and an
--     object that already exists means drift that should stop the migration, not be hidden.
--   * credential_status (from V1) gains `reason` and `status_changed_at`, which the pipeline
--     needs for revoke/suspend/reinstate; the DDL does not list that table.
--   * The redundant idx_users_did / idx_credentials_credential_hash / idx_payments_transaction_id
--     (their columns are UNIQUE, hence already indexed) are kept: the log lists them.
-- Data migration for rows that V1 holds (the log's "Initialize data for existing records"):
--   users: status 'ACTIVE', kyc_verified false, updated_at = the migration's time.
--   credentials: status 'VALID' (or the status their V1 credential_status row already records,
--     if that is REVOKED/SUSPENDED/EXPIRED: a revoked credential must not come back VALID),
--     updated_at = the migration's time, credential_hash = SHA-256 hex of the JWT's UTF-8 bytes.
--   credential_status: a 'VALID' row for every credential that has none.
--
-- Scripts run inside one transaction per version (finpass_pipeline.migrations): no BEGIN/COMMIT.

-- Users ---------------------------------------------------------------------------------------
-- NOT NULL ... DEFAULT fills existing rows with the default: ACTIVE, false, and the time of
-- this transaction for updated_at.
ALTER TABLE users
    ADD COLUMN last_seen TIMESTAMPTZ,
    ADD COLUMN email VARCHAR(255),
    ADD COLUMN phone VARCHAR(50),
    ADD COLUMN kyc_verified BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN kyc_verified_at TIMESTAMPTZ,
    ADD COLUMN status VARCHAR(20) NOT NULL DEFAULT 'ACTIVE',
    ADD COLUMN metadata TEXT,
    ADD COLUMN updated_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    ADD CONSTRAINT ck_users_status CHECK (status IN ('ACTIVE', 'SUSPENDED', 'TERMINATED'));

-- Credentials ---------------------------------------------------------------------------------
ALTER TABLE credentials
    ADD COLUMN expires_at TIMESTAMPTZ,
    ADD COLUMN status VARCHAR(20) NOT NULL DEFAULT 'VALID',
    ADD COLUMN revoked_at TIMESTAMPTZ,
    ADD COLUMN revocation_handle VARCHAR(255),
    ADD COLUMN revocation_reason VARCHAR(100),
    ADD COLUMN revoked_by VARCHAR(255),
    ADD COLUMN credential_hash VARCHAR(255) CONSTRAINT credentials_credential_hash_key UNIQUE,
    ADD COLUMN nonce VARCHAR(255),
    ADD COLUMN subject_did VARCHAR(255),
    ADD COLUMN verification_method VARCHAR(100),
    ADD COLUMN proof_type VARCHAR(50),
    ADD COLUMN proof_created_at TIMESTAMPTZ,
    ADD COLUMN proof_purpose VARCHAR(50),
    ADD COLUMN metadata TEXT,
    ADD COLUMN updated_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    ADD CONSTRAINT ck_credentials_status
        CHECK (status IN ('VALID', 'REVOKED', 'SUSPENDED', 'EXPIRED'));

-- Credential status (V1 table; not in the log's DDL) -------------------------------------------
ALTER TABLE credential_status
    ADD COLUMN reason VARCHAR(500),
    ADD COLUMN status_changed_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    ADD CONSTRAINT ck_credential_status_status
        CHECK (status IN ('VALID', 'REVOKED', 'SUSPENDED', 'EXPIRED'));

-- Payments ------------------------------------------------------------------------------------
CREATE TABLE payments (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    payer_did TEXT NOT NULL,
    payee_did TEXT NOT NULL,
    amount DECIMAL(18,2) NOT NULL,
    currency VARCHAR(3) NOT NULL DEFAULT 'USD',
    status VARCHAR(20) NOT NULL DEFAULT 'PENDING',
    payment_type VARCHAR(20) NOT NULL DEFAULT 'ONE_TIME',
    kyc_decision_token VARCHAR(500),
    payment_method VARCHAR(50),
    transaction_id VARCHAR(255) UNIQUE,
    reference_id VARCHAR(255),
    description VARCHAR(500),
    fee_amount DECIMAL(18,2),
    tax_amount DECIMAL(18,2),
    total_amount DECIMAL(18,2),
    authorized_at TIMESTAMPTZ,
    captured_at TIMESTAMPTZ,
    failed_at TIMESTAMPTZ,
    refunded_at TIMESTAMPTZ,
    failure_reason VARCHAR(500),
    refund_reason VARCHAR(500),
    metadata TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    completed_at TIMESTAMPTZ,
    CONSTRAINT ck_payments_status
        CHECK (status IN ('PENDING', 'AUTHORIZED', 'CAPTURED', 'FAILED', 'REFUNDED', 'CANCELLED')),
    CONSTRAINT ck_payments_payment_type
        CHECK (payment_type IN ('ONE_TIME', 'RECURRING', 'SUBSCRIPTION'))
);

-- Audit events --------------------------------------------------------------------------------
CREATE TABLE audit_events (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    event_type VARCHAR(50) NOT NULL,
    user_id_hash VARCHAR(64),
    session_id VARCHAR(255),
    ip_address VARCHAR(45),
    user_agent VARCHAR(500),
    tenant_id VARCHAR(255),
    resource_id VARCHAR(255),
    resource_type VARCHAR(100),
    action VARCHAR(100),
    outcome VARCHAR(20),
    severity VARCHAR(20) DEFAULT 'INFO',
    description VARCHAR(1000),
    details TEXT,
    previous_values TEXT,
    new_values TEXT,
    performed_by VARCHAR(255),
    performed_by_role VARCHAR(100),
    source_system VARCHAR(100),
    correlation_id VARCHAR(255),
    request_id VARCHAR(255),
    duration_ms BIGINT,
    error_code VARCHAR(100),
    error_message VARCHAR(1000),
    stack_trace TEXT,
    client_version VARCHAR(50),
    api_version VARCHAR(50),
    geolocation VARCHAR(255),
    device_fingerprint VARCHAR(255),
    compliance_flags VARCHAR(255),
    retention_days INTEGER,
    created_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    -- severity is nullable in the log's DDL; NULL passes the CHECK, as SQL intends.
    CONSTRAINT ck_audit_events_severity CHECK (severity IN ('INFO', 'WARNING', 'ERROR', 'CRITICAL'))
);

-- Data migration for V1 rows --------------------------------------------------------------------
-- convert_to(..., 'UTF8') rather than credential_jwt::bytea: the cast parses backslashes as
-- bytea escapes (and fails on some), while the pipeline hashes the JWT's UTF-8 bytes. For a
-- real JWT (base64url and dots) both give the same digest.
UPDATE credentials
SET credential_hash = encode(sha256(convert_to(credential_jwt, 'UTF8')), 'hex');

-- A status V1 already recorded wins over the 'VALID' default.
UPDATE credentials AS c
SET status = s.status
FROM credential_status AS s
WHERE s.credential_id = c.id
  AND s.status IN ('REVOKED', 'SUSPENDED', 'EXPIRED');

-- Rows V1 already had: the status last changed when the row was last written.
UPDATE credential_status SET status_changed_at = updated_at;

-- The log's INSERT, limited to credentials without a row (credential_id is UNIQUE).
INSERT INTO credential_status (credential_id, status, created_at, updated_at, status_changed_at)
SELECT c.id, 'VALID', c.created_at, CURRENT_TIMESTAMP, c.created_at
FROM credentials AS c
WHERE NOT EXISTS (SELECT 1 FROM credential_status AS s WHERE s.credential_id = c.id);

-- Indexes (the log's list, verbatim) ------------------------------------------------------------
CREATE INDEX idx_users_did ON users(did);
CREATE INDEX idx_users_status ON users(status);
CREATE INDEX idx_users_kyc_verified ON users(kyc_verified);
CREATE INDEX idx_users_last_seen ON users(last_seen);

CREATE INDEX idx_credentials_user_id ON credentials(user_id);
CREATE INDEX idx_credentials_status ON credentials(status);
CREATE INDEX idx_credentials_issuer_id ON credentials(issuer_id);
CREATE INDEX idx_credentials_expires_at ON credentials(expires_at);
CREATE INDEX idx_credentials_revocation_handle ON credentials(revocation_handle);
CREATE INDEX idx_credentials_credential_hash ON credentials(credential_hash);

CREATE INDEX idx_payments_payer_did ON payments(payer_did);
CREATE INDEX idx_payments_payee_did ON payments(payee_did);
CREATE INDEX idx_payments_status ON payments(status);
CREATE INDEX idx_payments_transaction_id ON payments(transaction_id);
CREATE INDEX idx_payments_created_at ON payments(created_at);

CREATE INDEX idx_audit_events_event_type ON audit_events(event_type);
CREATE INDEX idx_audit_events_created_at ON audit_events(created_at);
CREATE INDEX idx_audit_events_user_id_hash ON audit_events(user_id_hash);
CREATE INDEX idx_audit_events_severity ON audit_events(severity);
CREATE INDEX idx_audit_events_correlation_id ON audit_events(correlation_id);
