-- Undo of V5: audit_events back to one unpartitioned table with every remaining row.
--
-- Rows that retention already dropped stay dropped (their anchors remain in
-- audit_retention_anchors until U4). The table is locked while the rows are copied.
--
-- Scripts run inside one transaction per version (finpass_pipeline.migrations): no BEGIN/COMMIT.

LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE;
DROP FUNCTION audit_retention_drop(TEXT, BOOLEAN);
DROP FUNCTION audit_partitions();

ALTER TABLE audit_events RENAME TO audit_events_partitioned;
CREATE TABLE audit_events (LIKE audit_events_partitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE audit_events OWNER TO finpass_owner;
INSERT INTO audit_events SELECT * FROM audit_events_partitioned;
-- Dropping a partitioned table drops its partitions; DROP fires no row or TRUNCATE trigger.
DROP TABLE audit_events_partitioned;
DROP FUNCTION audit_ensure_partitions(INTEGER, TIMESTAMPTZ, TIMESTAMPTZ);

ALTER TABLE audit_events ADD CONSTRAINT audit_events_pkey PRIMARY KEY (id);
CREATE INDEX idx_audit_events_event_type ON audit_events(event_type);
CREATE INDEX idx_audit_events_created_at ON audit_events(created_at);
CREATE INDEX idx_audit_events_user_id_hash ON audit_events(user_id_hash);
CREATE INDEX idx_audit_events_severity ON audit_events(severity);
CREATE INDEX idx_audit_events_correlation_id ON audit_events(correlation_id);
CREATE INDEX idx_audit_events_event_id ON audit_events(event_id);
CREATE INDEX idx_audit_events_resource ON audit_events(resource_type, resource_id);
CREATE INDEX idx_audit_events_chain ON audit_events (chain_id, chain_seq);

CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_change();
CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_refuse_change();

GRANT SELECT, INSERT ON audit_events TO finpass_writer;
