-- V4: an audit log you can prove — database roles, append-only audit_events, hash chains.
--
-- Undone exactly by U4__audit_integrity.sql. docs/audit.md has the full design; in short:
--   * Roles (cluster-wide, NOLOGIN, created only if missing; a login user is made a member):
--       finpass_owner   owns the pipeline's tables and the audit functions; runs migrations.
--       finpass_writer  the consumer (FINPASS_DATABASE_ROLE=finpass_writer): reads and writes the
--                       domain and bookkeeping tables, but may only SELECT and INSERT audit rows.
--     Neither may be a superuser or bypass RLS: a pre-existing role that does is refused.
--   * audit_events refuses UPDATE and DELETE (row trigger) and TRUNCATE (statement trigger) for
--     everyone, superusers and the owner included, unless the transaction-local setting
--     `finpass.audit_retention` is 'on' — which only the retention procedure sets (V5). That
--     switch is a safety catch, not an authorisation: privileges keep the writer out, and a
--     superuser can always disable a trigger — which the hash chains and signed checkpoints
--     then expose. TRUNCATE of an already empty table removes nothing and is allowed.
--   * Hash chains: every audit row written by the pipeline carries chain_id (its source Kafka
--     topic-partition, e.g. 'finpass.payments:3'), chain_seq (1, 2, 3 … per chain, no gaps) and
--     row_hash = SHA-256 hex of (previous row_hash || canonical JSON of the row). Rows written
--     with FINPASS_AUDIT_CHAIN=false, or before V4, have all three NULL (unprotected).
--     audit_chain_heads holds each chain's tip (seq, hash, created_at of the tip row);
--     audit_retention_anchors the last (seq, hash) of each chain that retention removed.
--
-- Scripts run inside one transaction per version (finpass_pipeline.migrations): no BEGIN/COMMIT.

-- Roles -------------------------------------------------------------------------------------------
-- Roles are cluster-wide: another database on this server (or a concurrent migration of one) may
-- have created them already. U4 revokes what this database grants them and leaves them in place.
DO $$
DECLARE
    r TEXT;
BEGIN
    FOREACH r IN ARRAY ARRAY['finpass_owner', 'finpass_writer'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- a concurrent migration of another database created it first
            END;
        END IF;
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r
                   AND (rolsuper OR rolbypassrls)) THEN
            RAISE EXCEPTION 'role % exists with SUPERUSER or BYPASSRLS; the audit log''s '
                'guarantees need a plain role (ALTER ROLE % NOSUPERUSER NOBYPASSRLS)', r, r;
        END IF;
    END LOOP;
END
$$;

-- finpass_owner creates the monthly audit partitions (V5) in this schema.
GRANT USAGE, CREATE ON SCHEMA public TO finpass_owner;
GRANT USAGE ON SCHEMA public TO finpass_writer;

-- Chain columns --------------------------------------------------------------------------------
ALTER TABLE audit_events
    ADD COLUMN chain_id TEXT,
    ADD COLUMN chain_seq BIGINT,
    ADD COLUMN row_hash CHAR(64),
    ADD CONSTRAINT ck_audit_events_chain CHECK (
        (chain_id IS NULL) = (chain_seq IS NULL) AND (chain_id IS NULL) = (row_hash IS NULL)
        AND chain_seq >= 1);

-- verify walks each chain in seq order; not UNIQUE: V5 partitions the table by created_at, and a
-- unique index there must contain it. Duplicate seqs are what `audit verify` reports.
CREATE INDEX idx_audit_events_chain ON audit_events (chain_id, chain_seq);

CREATE TABLE audit_chain_heads (
    chain_id TEXT PRIMARY KEY,
    chain_seq BIGINT NOT NULL CONSTRAINT ck_audit_chain_heads_seq CHECK (chain_seq >= 0),
    row_hash CHAR(64) NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
COMMENT ON TABLE audit_chain_heads IS
    'Tip of each audit hash chain: last chain_seq, its row_hash, and that row''s created_at';

CREATE TABLE audit_retention_anchors (
    chain_id TEXT NOT NULL,
    chain_seq BIGINT NOT NULL,
    row_hash CHAR(64) NOT NULL,
    partition_name TEXT NOT NULL,
    removed_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (chain_id, chain_seq)
);
COMMENT ON TABLE audit_retention_anchors IS
    'Last (chain_seq, row_hash) of each chain in each audit partition that retention dropped';

-- Append-only ------------------------------------------------------------------------------------
CREATE FUNCTION audit_events_refuse_change() RETURNS trigger
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
COMMENT ON FUNCTION audit_events_refuse_change() IS
    'Refuses UPDATE/DELETE/TRUNCATE on audit_events unless finpass.audit_retention is on';

CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_change();
CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_refuse_change();

-- Ownership and grants ---------------------------------------------------------------------------
-- The sequence behind dead_letter_events.id follows its table's owner.
ALTER TABLE users OWNER TO finpass_owner;
ALTER TABLE credentials OWNER TO finpass_owner;
ALTER TABLE credential_status OWNER TO finpass_owner;
ALTER TABLE payments OWNER TO finpass_owner;
ALTER TABLE audit_events OWNER TO finpass_owner;
ALTER TABLE processed_events OWNER TO finpass_owner;
ALTER TABLE consumer_offsets OWNER TO finpass_owner;
ALTER TABLE dead_letter_events OWNER TO finpass_owner;
ALTER TABLE parked_events OWNER TO finpass_owner;
ALTER TABLE audit_chain_heads OWNER TO finpass_owner;
ALTER TABLE audit_retention_anchors OWNER TO finpass_owner;
ALTER FUNCTION audit_events_refuse_change() OWNER TO finpass_owner;

GRANT SELECT, INSERT, UPDATE, DELETE
    ON users, credentials, credential_status, payments,
       processed_events, consumer_offsets, dead_letter_events, parked_events
    TO finpass_writer;
GRANT USAGE ON SEQUENCE dead_letter_events_id_seq TO finpass_writer;
-- The audit log: append and read, nothing else (no UPDATE, DELETE, TRUNCATE).
GRANT SELECT, INSERT ON audit_events TO finpass_writer;
-- SELECT ... FOR UPDATE needs UPDATE; heads are never deleted.
GRANT SELECT, INSERT, UPDATE ON audit_chain_heads TO finpass_writer;
GRANT SELECT ON audit_retention_anchors TO finpass_writer;
