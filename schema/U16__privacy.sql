-- Undo of V16. Sealed values, data keys and the access log are lost: run
-- `finpass-pipeline privacy export` for whatever must be kept first. The role stays (cluster-wide).
REVOKE ALL ON SCHEMA public FROM finpass_privacy;
DROP FUNCTION IF EXISTS privacy_subject_data(TEXT, TEXT, TEXT);
DROP TABLE IF EXISTS privacy_access_log;
DROP INDEX IF EXISTS idx_credentials_revoked_by;
DROP INDEX IF EXISTS idx_credentials_subject_did;
ALTER TABLE credentials DROP COLUMN IF EXISTS credential_jwt_enc;
UPDATE credentials SET credential_jwt = '' WHERE credential_jwt IS NULL;
ALTER TABLE credentials ALTER COLUMN credential_jwt SET NOT NULL;
DROP INDEX IF EXISTS idx_users_phone_index;
DROP INDEX IF EXISTS idx_users_email_index;
ALTER TABLE users
    DROP COLUMN IF EXISTS phone_index,
    DROP COLUMN IF EXISTS email_index,
    DROP COLUMN IF EXISTS phone_enc,
    DROP COLUMN IF EXISTS email_enc;
DROP TABLE IF EXISTS person_keys;
