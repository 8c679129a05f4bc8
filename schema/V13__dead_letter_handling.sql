-- V13: dead letters an operator handled. Undone by U13__dead_letter_handling.sql.
--
-- dead_letter_events.handled_as  REPLAYED (re-applied through the consumer's validation and
--     apply path, in the transaction that applied it) or DISCARDED (marked by hand); NULL while
--     the letter still waits. Nothing is deleted: the raw bytes and the first reason stay.
-- handled_at, handled_by, handled_note  when, who (`--by`, default the OS user) and why.
-- Each handling is also an audit_events row (resource_type DEAD_LETTER).
ALTER TABLE dead_letter_events
    ADD COLUMN handled_as VARCHAR(20)
        CONSTRAINT ck_dead_letter_events_handled_as CHECK (handled_as IN ('REPLAYED', 'DISCARDED')),
    ADD COLUMN handled_at TIMESTAMPTZ,
    ADD COLUMN handled_by TEXT,
    ADD COLUMN handled_note TEXT;

CREATE INDEX idx_dead_letter_events_waiting ON dead_letter_events(id) WHERE handled_as IS NULL;
