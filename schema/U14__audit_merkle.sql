-- Undo of V14: the tree tables go, the digest columns go, the V4 trigger function comes back.
--
-- Personal data already erased stays erased (NULL); rows written with hash version 2 can no
-- longer be verified by a V13 `audit verify` (their hash covers pii_digest, now dropped).
--
-- Scripts run inside one transaction per version (finpass_pipeline.migrations): no BEGIN/COMMIT.

REVOKE UPDATE (session_id, ip_address, user_agent, geolocation, device_fingerprint, details,
               error_message, pii_salt, pii_digest) ON audit_events FROM finpass_writer;
DROP TABLE audit_checkpoints;
DROP TABLE audit_tree_chains;
DROP TABLE audit_tree_state;
DROP TABLE audit_tree_nodes;
DROP TABLE audit_tree_leaves;
DROP INDEX idx_audit_events_unchained;

CREATE OR REPLACE FUNCTION audit_events_refuse_change() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    v_empty BOOLEAN;
BEGIN
    IF current_setting('finpass.audit_retention', true) = 'on' THEN
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD WHEN 'UPDATE' THEN NEW END;
    END IF;
    IF TG_OP = 'TRUNCATE' THEN
        -- Truncating an empty table removes nothing (bulk loaders start with it).
        EXECUTE format('SELECT NOT EXISTS (SELECT 1 FROM %I.%I)', TG_TABLE_SCHEMA, TG_TABLE_NAME)
            INTO v_empty;
        IF v_empty THEN
            RETURN NULL;
        END IF;
    END IF;
    RAISE EXCEPTION 'audit_events is append-only: % refused on %', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'audit rows are removed only by `finpass-pipeline audit retention`, '
                     'which drops whole partitions past their retention';
END
$$;

ALTER TABLE audit_events
    DROP CONSTRAINT ck_audit_events_pii,
    DROP COLUMN hash_version,
    DROP COLUMN pii_digest,
    DROP COLUMN pii_salt;
