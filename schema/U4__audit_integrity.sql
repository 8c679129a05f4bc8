-- Undo of V4: chain columns, heads, anchors, the append-only triggers, ownership and grants.
--
-- The roles finpass_owner and finpass_writer are kept: roles are cluster-wide and other
-- databases on this server may use them. Every privilege they hold in this database is revoked
-- here and the tables go back to the role that owns `schema_history` (the identity that runs
-- migrations, which owned them before V4). To remove the roles once no database uses them:
--   DROP ROLE finpass_writer; DROP ROLE finpass_owner;
-- (PostgreSQL refuses while any database still grants them something or they own objects.)
-- DATA LOSS: the chain columns, heads and retention anchors are gone after this script; the
-- audit rows themselves stay.
--
-- Scripts run inside one transaction per version (finpass_pipeline.migrations): no BEGIN/COMMIT.

REVOKE ALL ON users, credentials, credential_status, payments, audit_events,
              processed_events, consumer_offsets, dead_letter_events, parked_events,
              audit_chain_heads, audit_retention_anchors
    FROM finpass_writer;
REVOKE ALL ON SEQUENCE dead_letter_events_id_seq FROM finpass_writer;

DO $$
DECLARE
    v_owner NAME := (SELECT tableowner FROM pg_catalog.pg_tables
                     WHERE schemaname = 'public' AND tablename = 'schema_history');
    t TEXT;
BEGIN
    v_owner := coalesce(v_owner, current_user);
    FOREACH t IN ARRAY ARRAY['users', 'credentials', 'credential_status', 'payments',
                             'audit_events', 'processed_events', 'consumer_offsets',
                             'dead_letter_events', 'parked_events'] LOOP
        EXECUTE format('ALTER TABLE %I OWNER TO %I', t, v_owner);
    END LOOP;
END
$$;

DROP TRIGGER audit_events_no_truncate ON audit_events;
DROP TRIGGER audit_events_append_only ON audit_events;
DROP FUNCTION audit_events_refuse_change();

DROP TABLE audit_retention_anchors;
DROP TABLE audit_chain_heads;
DROP INDEX idx_audit_events_chain;
ALTER TABLE audit_events
    DROP CONSTRAINT ck_audit_events_chain,
    DROP COLUMN row_hash,
    DROP COLUMN chain_seq,
    DROP COLUMN chain_id;

REVOKE ALL ON SCHEMA public FROM finpass_writer;
REVOKE ALL ON SCHEMA public FROM finpass_owner;
