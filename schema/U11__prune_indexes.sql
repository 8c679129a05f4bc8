-- Undo of V11.
DROP INDEX IF EXISTS processed_events_processed_at_brin;
