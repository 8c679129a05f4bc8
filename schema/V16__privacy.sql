-- V16: personal data encrypted at rest, the right to erasure and the right of access.
-- Undone by U16__privacy.sql (sealed values are lost with it: decrypt first). docs/privacy.md
-- has the design; in short:
--   * person_keys: one AES-256-GCM data key per person, keyed by the person's pseudonym (the
--     keyed HMAC of the DID, = audit_events.user_id_hash: the blind index), wrapped by the
--     master key master_key_id. Erasure destroys wrapped_key (crypto-shredding) and keeps the
--     row as the tombstone that keeps the DID erased (erased_at, erasure_event_id).
--   * users.email_enc/phone_enc, credentials.credential_jwt_enc: the sealed fields. The
--     plaintext columns stay for rows written before V16 and are NULL for rows written after
--     (credentials.credential_jwt becomes nullable); credential_hash stays SHA-256 of the JWT.
--   * users.email_index/phone_index: blind indexes (keyed HMAC of the normalised value) for
--     equality look-ups without decrypting.
--   * finpass_privacy: the only role that may read raw personal data, and only through
--     privacy_subject_data(), a SECURITY DEFINER function that logs every call in
--     privacy_access_log before it returns anything (`privacy export` also writes an audit row).

CREATE TABLE person_keys (
    user_id_hash VARCHAR(64) PRIMARY KEY,
    hash_key_id VARCHAR(32) NOT NULL,
    master_key_id VARCHAR(32),
    wrapped_key BYTEA,
    created_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    rotated_at TIMESTAMPTZ,
    erased_at TIMESTAMPTZ,
    erasure_event_id UUID,
    CONSTRAINT ck_person_keys_state CHECK (
        (erased_at IS NULL AND wrapped_key IS NOT NULL AND master_key_id IS NOT NULL)
        OR (erased_at IS NOT NULL AND wrapped_key IS NULL AND master_key_id IS NULL))
);
COMMENT ON TABLE person_keys IS
    'Per-person data keys (wrapped by the PII master key); an erased person keeps a tombstone row';
CREATE INDEX idx_person_keys_master_key ON person_keys (master_key_id) WHERE erased_at IS NULL;

ALTER TABLE users
    ADD COLUMN email_enc BYTEA,
    ADD COLUMN phone_enc BYTEA,
    ADD COLUMN email_index VARCHAR(64),
    ADD COLUMN phone_index VARCHAR(64);
CREATE INDEX idx_users_email_index ON users (email_index) WHERE email_index IS NOT NULL;
CREATE INDEX idx_users_phone_index ON users (phone_index) WHERE phone_index IS NOT NULL;

ALTER TABLE credentials
    ADD COLUMN credential_jwt_enc BYTEA,
    ALTER COLUMN credential_jwt DROP NOT NULL;
-- Erasure finds a person's DID in other people's credentials by these.
CREATE INDEX idx_credentials_subject_did ON credentials (subject_did);
CREATE INDEX idx_credentials_revoked_by ON credentials (revoked_by) WHERE revoked_by IS NOT NULL;

-- Reads of raw personal data -------------------------------------------------------------------
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'finpass_privacy') THEN
        BEGIN
            CREATE ROLE finpass_privacy NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- a concurrent migration of another database created it first
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'finpass_privacy'
               AND (rolsuper OR rolbypassrls)) THEN
        RAISE EXCEPTION 'role finpass_privacy exists with SUPERUSER or BYPASSRLS; it must be a '
            'plain role (ALTER ROLE finpass_privacy NOSUPERUSER NOBYPASSRLS)';
    END IF;
END
$$;

CREATE TABLE privacy_access_log (
    id BIGSERIAL PRIMARY KEY,
    accessed_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    session_user_name TEXT NOT NULL,
    current_user_name TEXT NOT NULL,
    user_id_hash VARCHAR(64) NOT NULL,
    purpose TEXT NOT NULL
);
COMMENT ON TABLE privacy_access_log IS
    'One row per read of raw personal data through privacy_subject_data() (who, whom, why)';

CREATE TRIGGER privacy_access_log_append_only
    BEFORE UPDATE OR DELETE ON privacy_access_log
    FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_change();

-- Everything held about one person, raw (sealed fields as stored: the caller decrypts with the
-- master key, which the database never sees). Logged before anything is returned.
CREATE FUNCTION privacy_subject_data(p_user_id_hash TEXT, p_did TEXT, p_purpose TEXT)
RETURNS JSONB
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
DECLARE
    v_dids TEXT[] := ARRAY[p_did, 'hmac:' || p_user_id_hash];
    v_user_ids UUID[];
    v_result JSONB;
BEGIN
    IF coalesce(btrim(p_purpose), '') = '' THEN
        RAISE EXCEPTION 'privacy_subject_data needs a purpose' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO privacy_access_log (session_user_name, current_user_name, user_id_hash, purpose)
    VALUES (session_user, current_user, p_user_id_hash, p_purpose);
    SELECT array_agg(id) INTO v_user_ids FROM users WHERE did = ANY(v_dids);
    SELECT jsonb_build_object(
        'person_key', (SELECT to_jsonb(k) - 'wrapped_key' || jsonb_build_object(
                           'wrapped_key', encode(k.wrapped_key, 'base64'))
                       FROM person_keys k WHERE k.user_id_hash = p_user_id_hash),
        'users', coalesce((SELECT jsonb_agg(to_jsonb(u) - 'email_enc' - 'phone_enc'
                           || jsonb_build_object('email_enc', encode(u.email_enc, 'base64'),
                                                 'phone_enc', encode(u.phone_enc, 'base64')))
                           FROM users u WHERE u.id = ANY(v_user_ids)), '[]'),
        'credentials', coalesce((SELECT jsonb_agg((to_jsonb(c) - 'credential_jwt_enc'
                           || jsonb_build_object('credential_jwt_enc',
                                                 encode(c.credential_jwt_enc, 'base64'),
                                                 'status_row', to_jsonb(s))) ORDER BY c.issued_at)
                           FROM credentials c LEFT JOIN credential_status s ON s.credential_id = c.id
                           WHERE c.user_id = ANY(v_user_ids) OR c.subject_did = ANY(v_dids)), '[]'),
        'payments', coalesce((SELECT jsonb_agg(to_jsonb(p) ORDER BY p.created_at, p.id)
                           FROM payments p
                           WHERE p.payer_did = ANY(v_dids) OR p.payee_did = ANY(v_dids)), '[]'),
        'audit_events', coalesce((SELECT jsonb_agg(to_jsonb(a) ORDER BY a.created_at, a.chain_id,
                                                   a.chain_seq)
                           FROM audit_events a
                           WHERE a.user_id_hash = p_user_id_hash
                              OR a.performed_by = p_user_id_hash), '[]'),
        'parked_events', coalesce((SELECT jsonb_agg(jsonb_build_object(
                               'event_id', e.event_id, 'event_type', e.event_type,
                               'parked_at', e.parked_at,
                               'payload', convert_from(e.payload, 'UTF8')) ORDER BY e.parked_at)
                           FROM parked_events e
                           WHERE e.subject_key = p_did
                              OR position(convert_to(p_did, 'UTF8') IN e.payload) > 0), '[]'),
        'dead_letter_events', coalesce((SELECT jsonb_agg(jsonb_build_object(
                               'id', d.id, 'topic', d.topic, 'reason', d.reason,
                               'dead_lettered_at', d.dead_lettered_at,
                               'raw_value', encode(d.raw_value, 'escape')) ORDER BY d.id)
                           FROM dead_letter_events d
                           WHERE d.message_key = convert_to(p_did, 'UTF8')
                              OR position(convert_to(p_did, 'UTF8') IN d.raw_value) > 0), '[]'),
        'access_log', coalesce((SELECT jsonb_agg(to_jsonb(l) ORDER BY l.id)
                           FROM privacy_access_log l WHERE l.user_id_hash = p_user_id_hash), '[]')
    ) INTO v_result;
    RETURN v_result;
END
$$;
COMMENT ON FUNCTION privacy_subject_data(TEXT, TEXT, TEXT) IS
    'Everything held about one person (sealed fields still sealed); logs the call first';

-- Ownership and grants ---------------------------------------------------------------------------
ALTER TABLE person_keys OWNER TO finpass_owner;
ALTER TABLE privacy_access_log OWNER TO finpass_owner;
ALTER FUNCTION privacy_subject_data(TEXT, TEXT, TEXT) OWNER TO finpass_owner;
REVOKE ALL ON FUNCTION privacy_subject_data(TEXT, TEXT, TEXT) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION privacy_subject_data(TEXT, TEXT, TEXT) TO finpass_privacy;
GRANT USAGE ON SCHEMA public TO finpass_privacy;
GRANT SELECT, INSERT, UPDATE ON person_keys TO finpass_writer;
