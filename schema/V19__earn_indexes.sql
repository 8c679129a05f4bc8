-- V19: every index beyond the seed's serves a report or a statement of the pipeline, or it goes.
-- Undone by U19__earn_indexes.sql, which recreates exactly these.
--
-- Each index below costs an entry per row written and is read by nothing: no analyst report's
-- plan uses it (`finpass-pipeline report-bench` lists the indexes each report uses, and the
-- indexes no report uses), and no statement of the consumer, sealer, verify, prune, retention
-- or operator commands needs it. docs/indexes.md has every index, who uses it, the plans and the
-- measured ingest cost. The seed's own indexes (V1/V2) and every index behind a primary key,
-- UNIQUE or ON CONFLICT stay.
--
-- On audit_events (partitioned, V5) dropping the parent's index drops every partition's too.

-- V3. Duplicate event ids are found by processed_events' primary key; the one look-up by event
-- id, `audit prove --event-id`, now goes by the primary key (a pipeline row's id is its event's
-- id).
DROP INDEX idx_audit_events_event_id;
-- V3. Nothing looks audit rows up by resource (the correlation trail joins the other way).
DROP INDEX idx_audit_events_resource;
-- V10. The user timeline and erasure use the seed's idx_audit_events_user_id_hash: a user's
-- rows are few, and the listing orders by audit_seq, not created_at.
DROP INDEX idx_audit_events_user_created;
-- V12. Every listing in audit_seq order filters first (a user, a correlation id, an event) and
-- sorts the few rows it found.
DROP INDEX idx_audit_events_audit_seq;
-- V15. No report or statement filters payments by payer pseudonym (analyst joins go from a
-- payment to its user, through idx_users_user_id_hash). `analyst backfill` walks payments_pkey.
DROP INDEX idx_payments_payer_id_hash;
-- V16. Nothing looks a user up by the blind index of an email or phone (the columns stay).
DROP INDEX idx_users_email_index;
DROP INDEX idx_users_phone_index;
-- V16. `privacy rotate-key` asks for master_key_id <> the current key, which a B-tree cannot
-- narrow: its batches read the whole table either way (only its final count used the index).
DROP INDEX idx_person_keys_master_key;
