-- Undo of V19: the indexes it dropped, as V3, V10, V12, V15 and V16 made them. On the partitioned
-- audit_events each is created on the parent, hence on every partition (under the names the
-- partitions had).
CREATE INDEX idx_audit_events_event_id ON audit_events(event_id);
CREATE INDEX idx_audit_events_resource ON audit_events(resource_type, resource_id);
CREATE INDEX idx_audit_events_user_created ON audit_events (user_id_hash, created_at);
CREATE INDEX idx_audit_events_audit_seq ON audit_events (audit_seq);
CREATE INDEX idx_payments_payer_id_hash ON payments (payer_id_hash);
CREATE INDEX idx_users_email_index ON users (email_index) WHERE email_index IS NOT NULL;
CREATE INDEX idx_users_phone_index ON users (phone_index) WHERE phone_index IS NOT NULL;
CREATE INDEX idx_person_keys_master_key ON person_keys (master_key_id) WHERE erased_at IS NULL;
