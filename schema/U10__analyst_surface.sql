-- Undo of V10: the analyst schema, its indexes on the pipeline's tables and the role's grants.
--
-- The role finpass_analyst itself is kept: roles are cluster-wide, other databases on this server
-- (and the login users that are its members) may still use it. Every privilege it held in this
-- database is revoked here, so it can read nothing in it. To remove the role once no database
-- uses it:  DROP ROLE finpass_analyst;  (PostgreSQL refuses while any database still grants it
-- something). Revoking leaves each table's ACL written out explicitly, which grants exactly what
-- the default (NULL) ACL granted.

REVOKE ALL ON users, credentials, credential_status, payments, audit_events FROM finpass_analyst;

-- Explicit drops, then DROP SCHEMA without CASCADE: an object someone else put in `analyst`
-- stops the rollback instead of vanishing with it.
DROP FUNCTION analyst.correlation_trail(TEXT);
DROP FUNCTION analyst.user_timeline(TEXT, TIMESTAMPTZ, TIMESTAMPTZ, INTEGER);
DROP FUNCTION analyst.compliance_report(TIMESTAMPTZ, TIMESTAMPTZ);
DROP FUNCTION analyst.suspicious_activity(TIMESTAMPTZ, TIMESTAMPTZ, INTEGER, INTEGER, INTEGER);
DROP FUNCTION analyst.high_value_payments(NUMERIC, TIMESTAMPTZ, TIMESTAMPTZ, TEXT, INTEGER);
DROP FUNCTION analyst.captured_totals(TIMESTAMPTZ, TIMESTAMPTZ, TEXT);
DROP FUNCTION analyst.payment_analytics(TIMESTAMPTZ, TIMESTAMPTZ, TEXT);
DROP FUNCTION analyst.payments_needing_attention(INTEGER, INTEGER, INTEGER);
DROP FUNCTION analyst.credential_statistics();
DROP FUNCTION analyst.credentials_needing_renewal(INTEGER, INTEGER, INTEGER);
DROP FUNCTION analyst.credentials_expiring(INTEGER, INTEGER);
DROP FUNCTION analyst.credentials_expired(INTEGER);
DROP FUNCTION analyst.user_statistics(INTEGER);
DROP FUNCTION analyst.search_users(TEXT, INTEGER);
DROP FUNCTION analyst.users_inactive(TIMESTAMPTZ, TEXT, INTEGER);
DROP FUNCTION analyst.users_kyc_verified(TIMESTAMPTZ, TIMESTAMPTZ, INTEGER);
DROP VIEW analyst.credentials;
DROP VIEW analyst.users;
DROP FUNCTION analyst.refresh_rollups(BOOLEAN);
DROP FUNCTION analyst.ip_bursts_between(TIMESTAMPTZ, TIMESTAMPTZ, INTEGER);
DROP FUNCTION analyst.rollup_window(TEXT, TIMESTAMPTZ, TIMESTAMPTZ);
DROP TABLE analyst.ip_bursts;
DROP TABLE analyst.audit_daily;
DROP TABLE analyst.rollup_state;
DROP STATISTICS analyst.st_payments_day_status_currency;
DROP SCHEMA analyst;

DROP INDEX idx_audit_events_ip_created;
DROP INDEX idx_audit_events_rejected;
DROP INDEX idx_audit_events_login_failed;
DROP INDEX idx_audit_events_user_created;
DROP INDEX idx_payments_amount;
DROP INDEX idx_payments_captured_at;
DROP INDEX idx_payments_created_at_analytics;
DROP INDEX idx_payments_failed_at;
DROP INDEX idx_payments_open_created_at;
DROP INDEX idx_credentials_status_type_issuer;
DROP INDEX idx_credentials_expired_expires_at;
DROP INDEX idx_credentials_valid_issued_at;
DROP INDEX idx_credentials_valid_expires_at;
DROP INDEX idx_users_phone_digits;
DROP INDEX idx_users_email_lower;
DROP INDEX idx_users_did_pattern;
DROP INDEX idx_users_last_active;
DROP INDEX idx_users_kyc_verified_at;
