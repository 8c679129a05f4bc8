-- V5: audit_events partitioned by month of created_at (UTC), and retention by whole partitions.
--
-- Undone exactly by U5__audit_partitions.sql (which copies the rows back into one table).
--   * audit_events becomes a RANGE-partitioned table; partitions are named
--     audit_events_yYYYYmMM and cover [first instant of the month UTC, first of the next).
--     The primary key becomes (id, created_at): a unique index on a partitioned table must
--     contain the partition key. Every index the table had keeps its name (on the parent).
--   * Every existing row is copied over (the table is locked meanwhile: plan a maintenance
--     window for a large log). Partitions are created from the oldest row's month to three
--     months ahead.
--   * audit_ensure_partitions(months_ahead, from, until) creates missing partitions; the consumer
--     calls it at startup and before writing into a month it has not seen covered.
--   * audit_retention_drop(partition) is the retention procedure: it drops the OLDEST partition
--     only when every row in it is past its own retention (created_at + retention_days days <
--     now(); NULL retention_days keeps the row, and so the partition, forever), after recording
--     each chain's last removed (seq, hash) in audit_retention_anchors. It is SECURITY DEFINER
--     (runs as finpass_owner, which owns the partitions) and sets finpass.audit_retention for
--     its own transaction only. Not granted to finpass_writer.
--
-- Scripts run inside one transaction per version (finpass_pipeline.migrations): no BEGIN/COMMIT.

LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE;
ALTER TABLE audit_events RENAME TO audit_events_unpartitioned;

-- Same columns in the same order, defaults, NOT NULLs and CHECK constraints.
CREATE TABLE audit_events (LIKE audit_events_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (created_at);
ALTER TABLE audit_events OWNER TO finpass_owner;

-- Partitions ---------------------------------------------------------------------------------------
CREATE FUNCTION audit_ensure_partitions(
    p_months_ahead INTEGER, p_from TIMESTAMPTZ DEFAULT NULL, p_until TIMESTAMPTZ DEFAULT NULL)
RETURNS TIMESTAMPTZ
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = public, pg_temp
SET "TimeZone" = 'UTC'  -- month boundaries and partition names in UTC, whatever the session says
AS $$
DECLARE
    v_month TIMESTAMPTZ := date_trunc('month', LEAST(coalesce(p_from, now()), now()));
    v_end TIMESTAMPTZ := GREATEST(
        date_trunc('month', now()) + make_interval(months => p_months_ahead + 1),
        date_trunc('month', coalesce(p_until, now())) + interval '1 month');
    v_name TEXT;
BEGIN
    IF p_months_ahead IS NULL OR p_months_ahead < 0 OR p_months_ahead > 120 THEN
        RAISE EXCEPTION 'months_ahead must be between 0 and 120, not %', p_months_ahead
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Two consumers starting at once must not both create the same partition.
    PERFORM pg_advisory_xact_lock(hashtext('finpass.audit_ensure_partitions'));
    WHILE v_month < v_end LOOP
        v_name := 'audit_events_' || to_char(v_month, '"y"YYYY"m"MM');
        IF to_regclass(v_name) IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF audit_events FOR VALUES FROM (%L) TO (%L)',
                           v_name, v_month, v_month + interval '1 month');
            -- TRUNCATE of a partition does not fire the parent's statement trigger.
            EXECUTE format('CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON %I '
                           'FOR EACH STATEMENT EXECUTE FUNCTION audit_events_refuse_change()',
                           v_name);
        END IF;
        v_month := v_month + interval '1 month';
    END LOOP;
    RETURN v_end;
END
$$;
ALTER FUNCTION audit_ensure_partitions(INTEGER, TIMESTAMPTZ, TIMESTAMPTZ) OWNER TO finpass_owner;
REVOKE ALL ON FUNCTION audit_ensure_partitions(INTEGER, TIMESTAMPTZ, TIMESTAMPTZ) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_ensure_partitions(INTEGER, TIMESTAMPTZ, TIMESTAMPTZ)
    TO finpass_writer;
COMMENT ON FUNCTION audit_ensure_partitions(INTEGER, TIMESTAMPTZ, TIMESTAMPTZ) IS
    'Create the monthly audit_events partitions from month(min(from, now)) to now + months_ahead '
    '(and through month(until)); returns the end of the covered range';

-- Every month the existing rows need, and three ahead.
SELECT audit_ensure_partitions(3, (SELECT min(created_at) FROM audit_events_unpartitioned),
                               (SELECT max(created_at) FROM audit_events_unpartitioned));

INSERT INTO audit_events SELECT * FROM audit_events_unpartitioned;
DROP TABLE audit_events_unpartitioned;

ALTER TABLE audit_events ADD CONSTRAINT audit_events_pkey PRIMARY KEY (id, created_at);
-- The seed's indexes (V2), V3's and V4's, under their names.
CREATE INDEX idx_audit_events_event_type ON audit_events(event_type);
CREATE INDEX idx_audit_events_created_at ON audit_events(created_at);
CREATE INDEX idx_audit_events_user_id_hash ON audit_events(user_id_hash);
CREATE INDEX idx_audit_events_severity ON audit_events(severity);
CREATE INDEX idx_audit_events_correlation_id ON audit_events(correlation_id);
CREATE INDEX idx_audit_events_event_id ON audit_events(event_id);
CREATE INDEX idx_audit_events_resource ON audit_events(resource_type, resource_id);
CREATE INDEX idx_audit_events_chain ON audit_events (chain_id, chain_seq);

-- Row triggers on a partitioned table are cloned to every partition, present and future.
CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_change();
CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_refuse_change();

GRANT SELECT, INSERT ON audit_events TO finpass_writer;

-- Retention ----------------------------------------------------------------------------------------
CREATE FUNCTION audit_partitions()
RETURNS TABLE (partition_name TEXT, range_from TIMESTAMPTZ, range_to TIMESTAMPTZ)
LANGUAGE sql STABLE
SET "TimeZone" = 'UTC'
AS $$
    SELECT c.relname::text, b.m[1]::timestamptz, b.m[2]::timestamptz
    FROM pg_catalog.pg_inherits AS i
    JOIN pg_catalog.pg_class AS c ON c.oid = i.inhrelid
    CROSS JOIN LATERAL (SELECT regexp_match(pg_catalog.pg_get_expr(c.relpartbound, c.oid),
                                            'FROM \(''([^'']+)''\) TO \(''([^'']+)''\)') AS m) AS b
    WHERE i.inhparent = 'public.audit_events'::regclass
    ORDER BY 2
$$;
ALTER FUNCTION audit_partitions() OWNER TO finpass_owner;
COMMENT ON FUNCTION audit_partitions() IS 'The partitions of audit_events, oldest first';

CREATE FUNCTION audit_retention_drop(p_partition TEXT, p_dry_run BOOLEAN DEFAULT false)
RETURNS TABLE (chain_id TEXT, chain_seq BIGINT, row_hash CHAR(64))
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = public, pg_temp
SET "TimeZone" = 'UTC'
AS $$
DECLARE
    v_oldest TEXT;
    v_to TIMESTAMPTZ;
    v_kept BIGINT;
BEGIN
    SELECT p.range_to INTO v_to FROM audit_partitions() AS p WHERE p.partition_name = p_partition;
    IF NOT FOUND THEN
        RAISE EXCEPTION '% is not a partition of audit_events', p_partition
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT p.partition_name INTO v_oldest FROM audit_partitions() AS p LIMIT 1;
    -- A dry run may look ahead (the caller stops at the first partition that must stay).
    IF NOT p_dry_run AND v_oldest IS DISTINCT FROM p_partition THEN
        RAISE EXCEPTION 'audit retention drops the oldest partition first: % is not it (%)',
            p_partition, v_oldest USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF v_to > now() THEN
        RAISE EXCEPTION 'partition % still receives rows (it ends %)', p_partition, v_to
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- Every row past its own retention; NULL retention_days means keep forever.
    EXECUTE format('SELECT count(*) FROM %I WHERE retention_days IS NULL '
                   'OR created_at + make_interval(days => retention_days) >= now()', p_partition)
        INTO v_kept;
    IF v_kept > 0 THEN
        RAISE EXCEPTION 'partition % holds % row(s) still within their retention',
            p_partition, v_kept USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- The last row of each chain in the partition: verify continues from it.
    RETURN QUERY EXECUTE format(
        'SELECT DISTINCT ON (a.chain_id) a.chain_id, a.chain_seq, a.row_hash FROM %I AS a '
        'WHERE a.chain_id IS NOT NULL ORDER BY a.chain_id, a.chain_seq DESC', p_partition);
    IF p_dry_run THEN
        RETURN;
    END IF;
    EXECUTE format(
        'INSERT INTO audit_retention_anchors (chain_id, chain_seq, row_hash, partition_name) '
        'SELECT DISTINCT ON (a.chain_id) a.chain_id, a.chain_seq, a.row_hash, %L FROM %I AS a '
        'WHERE a.chain_id IS NOT NULL ORDER BY a.chain_id, a.chain_seq DESC '
        'ON CONFLICT DO NOTHING', p_partition, p_partition);
    PERFORM set_config('finpass.audit_retention', 'on', true);  -- this transaction only
    EXECUTE format('DROP TABLE %I', p_partition);
    PERFORM set_config('finpass.audit_retention', 'off', true);
END
$$;
ALTER FUNCTION audit_retention_drop(TEXT, BOOLEAN) OWNER TO finpass_owner;
REVOKE ALL ON FUNCTION audit_retention_drop(TEXT, BOOLEAN) FROM PUBLIC;
COMMENT ON FUNCTION audit_retention_drop(TEXT, BOOLEAN) IS
    'Drop the oldest audit_events partition when every row in it is past its retention_days, '
    'recording each chain''s last removed (seq, hash) in audit_retention_anchors';
