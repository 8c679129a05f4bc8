-- Undo of V13 (the handling marks are lost; the letters stay).
DROP INDEX IF EXISTS idx_dead_letter_events_waiting;
ALTER TABLE dead_letter_events
    DROP COLUMN IF EXISTS handled_note,
    DROP COLUMN IF EXISTS handled_by,
    DROP COLUMN IF EXISTS handled_at,
    DROP COLUMN IF EXISTS handled_as;
