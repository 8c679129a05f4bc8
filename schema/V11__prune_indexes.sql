-- V11: an index for `finpass-pipeline prune`. Undone by U11__prune_indexes.sql.
--
-- `finpass-pipeline prune` walks processed_events by processed_at. Claims are inserted in time
-- order, so a BRIN index (a few pages, next to nothing per insert) finds each time slice without
-- a btree on the claim's hot path.
CREATE INDEX processed_events_processed_at_brin ON processed_events
    USING brin (processed_at) WITH (autosummarize = on);
