-- Undo of V3: the pipeline's bookkeeping tables and the audit columns it added.
DROP TABLE parked_events;
DROP TABLE dead_letter_events;
DROP TABLE consumer_offsets;
DROP TABLE processed_events;
DROP INDEX idx_audit_events_resource;
DROP INDEX idx_audit_events_event_id;
ALTER TABLE audit_events
    DROP COLUMN hash_key_id,
    DROP COLUMN occurred_at,
    DROP COLUMN event_id;
