-- V14: one Merkle tree over the audit log, Ed25519-signed checkpoints, erasable personal data.
--
-- Undone exactly by U14__audit_merkle.sql. docs/audit.md §6 has the design; in short:
--   * audit_events gains pii_salt (16 random bytes per row), pii_digest (32 bytes) =
--     SHA-256(pii_salt || canonical JSON of the personal columns) and hash_version (1 = chain hash
--     over the clear values, every row before V14; 2 = over pii_digest instead). Rows before V14
--     get their salt and digest from the sealer, before they become leaves.
--   * The append-only trigger now allows exactly two UPDATEs besides retention: filling a NULL
--     salt and digest (nothing else changes), and erasure: the personal columns and pii_salt set
--     to NULL, pii_digest kept (nothing else changes). Everything else is still refused.
--   * The tree (RFC 9162): audit_tree_leaves (leaf index -> row, leaf hash; never deleted, also
--     when retention drops the row), audit_tree_nodes (hashes of the complete subtrees of height
--     >= 4), audit_tree_state (size and root), audit_tree_chains (how far each chain is sealed),
--     audit_checkpoints (every signed checkpoint the log recorded).
--
-- Scripts run inside one transaction per version (finpass_pipeline.migrations): no BEGIN/COMMIT.

ALTER TABLE audit_events
    ADD COLUMN pii_salt BYTEA,
    ADD COLUMN pii_digest BYTEA,
    ADD COLUMN hash_version SMALLINT NOT NULL DEFAULT 1,
    ADD CONSTRAINT ck_audit_events_pii CHECK (
        (pii_salt IS NULL OR octet_length(pii_salt) = 16)
        AND (pii_digest IS NULL OR octet_length(pii_digest) = 32)
        AND (pii_salt IS NULL OR pii_digest IS NOT NULL)
        AND hash_version IN (1, 2) AND (hash_version = 1 OR pii_digest IS NOT NULL));
COMMENT ON COLUMN audit_events.pii_salt IS
    'Random salt of pii_digest; NULL once the row''s personal data was erased';
COMMENT ON COLUMN audit_events.pii_digest IS
    'SHA-256(pii_salt || canonical JSON of session_id, ip_address, user_agent, geolocation, '
    'device_fingerprint, details, error_message): what the chain (v2) and the Merkle leaf hold';
COMMENT ON COLUMN audit_events.hash_version IS
    '1: row_hash over the clear personal values (before V14); 2: over pii_digest instead';

-- Rows not sealed by any chain (written with chaining off, or before V4): the sealer finds them.
CREATE INDEX idx_audit_events_unchained ON audit_events (created_at) WHERE chain_id IS NULL;

CREATE OR REPLACE FUNCTION audit_events_refuse_change() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    v_empty BOOLEAN;
    v_personal CONSTANT TEXT[] := ARRAY['session_id', 'ip_address', 'user_agent', 'geolocation',
                                        'device_fingerprint', 'details', 'error_message'];
BEGIN
    IF current_setting('finpass.audit_retention', true) = 'on' THEN
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD WHEN 'UPDATE' THEN NEW END;
    END IF;
    IF TG_OP = 'UPDATE' AND TG_TABLE_NAME LIKE 'audit_events%' THEN
        -- Filling the digest of a row written before V14 (nothing else may change).
        IF OLD.pii_salt IS NULL AND OLD.pii_digest IS NULL AND NEW.pii_salt IS NOT NULL
           AND NEW.pii_digest IS NOT NULL
           AND (to_jsonb(NEW) - ARRAY['pii_salt', 'pii_digest'])
               = (to_jsonb(OLD) - ARRAY['pii_salt', 'pii_digest']) THEN
            RETURN NEW;
        END IF;
        -- Erasure: the personal values and the salt to NULL, the digest and the rest unchanged.
        IF OLD.pii_digest IS NOT NULL AND NEW.pii_digest = OLD.pii_digest
           AND NEW.pii_salt IS NULL AND NEW.session_id IS NULL AND NEW.ip_address IS NULL
           AND NEW.user_agent IS NULL AND NEW.geolocation IS NULL
           AND NEW.device_fingerprint IS NULL AND NEW.details IS NULL
           AND NEW.error_message IS NULL
           AND (to_jsonb(NEW) - (v_personal || 'pii_salt'::text))
               = (to_jsonb(OLD) - (v_personal || 'pii_salt'::text)) THEN
            RETURN NEW;
        END IF;
    END IF;
    IF TG_OP = 'TRUNCATE' THEN
        -- Truncating an empty table removes nothing (bulk loaders start with it).
        EXECUTE format('SELECT NOT EXISTS (SELECT 1 FROM %I.%I)', TG_TABLE_SCHEMA, TG_TABLE_NAME)
            INTO v_empty;
        IF v_empty THEN
            RETURN NULL;
        END IF;
    END IF;
    RAISE EXCEPTION '% is append-only: % refused on %',
        CASE WHEN TG_TABLE_NAME LIKE 'audit_events%' THEN 'audit_events' ELSE TG_TABLE_NAME END,
        TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'audit rows are removed only by `finpass-pipeline audit retention`, '
                     'which drops whole partitions past their retention; personal data only by '
                     'erasure (finpass_pipeline.audit.redaction)';
END
$$;

-- The tree ------------------------------------------------------------------------------------------
CREATE TABLE audit_tree_leaves (
    leaf_index BIGINT PRIMARY KEY CONSTRAINT ck_audit_tree_leaves_index CHECK (leaf_index >= 0),
    row_id UUID NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    leaf_hash BYTEA NOT NULL CONSTRAINT ck_audit_tree_leaves_hash CHECK (octet_length(leaf_hash) = 32)
);
CREATE INDEX idx_audit_tree_leaves_row ON audit_tree_leaves (row_id);
COMMENT ON TABLE audit_tree_leaves IS
    'Leaf i of the audit Merkle tree: the audit row (id, created_at) and SHA-256(0x00 || leaf); '
    'kept when retention drops the row';

CREATE TABLE audit_tree_nodes (
    level SMALLINT NOT NULL CONSTRAINT ck_audit_tree_nodes_level CHECK (level BETWEEN 4 AND 63),
    idx BIGINT NOT NULL,
    hash BYTEA NOT NULL,
    PRIMARY KEY (level, idx)
);
COMMENT ON TABLE audit_tree_nodes IS
    'Hash of the complete subtree over leaves [idx * 2^level, (idx + 1) * 2^level), level >= 4';

CREATE TABLE audit_tree_state (
    singleton BOOLEAN PRIMARY KEY DEFAULT true CONSTRAINT ck_audit_tree_state_one CHECK (singleton),
    tree_size BIGINT NOT NULL,
    root_hash BYTEA NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP
);
INSERT INTO audit_tree_state (tree_size, root_hash) VALUES (0, sha256(''::bytea));
COMMENT ON TABLE audit_tree_state IS 'Size and root hash of the audit Merkle tree as sealed';

CREATE TABLE audit_tree_chains (
    chain_id TEXT PRIMARY KEY,
    sealed_seq BIGINT NOT NULL
);
COMMENT ON TABLE audit_tree_chains IS 'Last chain_seq of each chain sealed into the tree';

CREATE TABLE audit_checkpoints (
    tree_size BIGINT PRIMARY KEY,
    root_hash BYTEA NOT NULL,
    note TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP
);
COMMENT ON TABLE audit_checkpoints IS
    'Every signed checkpoint (C2SP tlog-checkpoint signed note) the log recorded, by tree size';

-- Leaves, nodes and checkpoints are append-only too (the same trigger function).
CREATE TRIGGER audit_tree_leaves_append_only BEFORE UPDATE OR DELETE ON audit_tree_leaves
    FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_change();
CREATE TRIGGER audit_tree_nodes_append_only BEFORE UPDATE OR DELETE ON audit_tree_nodes
    FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_change();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_change();

ALTER TABLE audit_tree_leaves OWNER TO finpass_owner;
ALTER TABLE audit_tree_nodes OWNER TO finpass_owner;
ALTER TABLE audit_tree_state OWNER TO finpass_owner;
ALTER TABLE audit_tree_chains OWNER TO finpass_owner;
ALTER TABLE audit_checkpoints OWNER TO finpass_owner;

-- The consumer seals (the daemon's sealer), checkpoints on a schedule and erases personal data.
GRANT UPDATE (session_id, ip_address, user_agent, geolocation, device_fingerprint, details,
              error_message, pii_salt, pii_digest) ON audit_events TO finpass_writer;
GRANT SELECT, INSERT ON audit_tree_leaves, audit_tree_nodes, audit_checkpoints TO finpass_writer;
GRANT SELECT, INSERT, UPDATE ON audit_tree_state, audit_tree_chains TO finpass_writer;
