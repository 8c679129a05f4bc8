-- V12: what CONTRACT.md §5 (v1.1) needs stored. Undone by U12__never_stop.sql.
--
-- processed_events.content_digest  SHA-256 of the event's canonical form, so that a re-sent
--     event_id is told apart: identical content is a silent duplicate, different content a dead
--     letter ("event_id reused with different content"). Rows claimed before V12 have none and
--     count as identical.
-- audit_events.audit_seq  the commit order of audit rows, one sequence for the whole log. Every
--     listing (reports, `audit user`, trails) orders by it; before V12 rows of one batch shared
--     created_at and were listed by their random id. Existing rows are numbered by
--     (created_at, chain_id, chain_seq, id), the best order they still carry.
ALTER TABLE processed_events ADD COLUMN content_digest BYTEA;

CREATE SEQUENCE audit_events_audit_seq AS BIGINT;
ALTER TABLE audit_events ADD COLUMN audit_seq BIGINT;

-- The append-only trigger refuses UPDATE, rightly; this one-off numbering is the migration's.
ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only;
UPDATE audit_events AS a SET audit_seq = o.n
FROM (SELECT id, created_at,
             row_number() OVER (ORDER BY created_at, chain_id, chain_seq, id) AS n
      FROM audit_events) AS o
WHERE a.id = o.id AND a.created_at = o.created_at;
ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only;
SELECT setval('audit_events_audit_seq', COALESCE(max(audit_seq), 0) + 1, false) FROM audit_events;

ALTER TABLE audit_events ALTER COLUMN audit_seq SET DEFAULT nextval('audit_events_audit_seq');
COMMENT ON COLUMN audit_events.audit_seq IS
    'Commit order of audit rows across the whole log (CONTRACT.md §5 "Audit order")';
CREATE INDEX idx_audit_events_audit_seq ON audit_events (audit_seq);
GRANT USAGE ON SEQUENCE audit_events_audit_seq TO finpass_writer;

-- Audit listings in commit order (V10 ordered rows of one batch by their random id).
CREATE OR REPLACE FUNCTION analyst.user_timeline(
    p_user_hash TEXT, p_from TIMESTAMPTZ DEFAULT '-infinity', p_to TIMESTAMPTZ DEFAULT 'infinity',
    p_limit INTEGER DEFAULT 1000)
RETURNS TABLE (created_at TIMESTAMPTZ, occurred_at TIMESTAMPTZ, event_type TEXT, action TEXT,
               outcome TEXT, severity TEXT, resource_type TEXT, resource_id TEXT,
               correlation_id TEXT, session_id TEXT, ip_address TEXT, description TEXT)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT a.created_at, a.occurred_at, a.event_type::text, a.action::text, a.outcome::text,
           a.severity::text, a.resource_type::text, a.resource_id::text, a.correlation_id::text,
           a.session_id::text, a.ip_address::text, a.description::text
    FROM public.audit_events AS a
    WHERE a.user_id_hash = p_user_hash AND a.created_at >= p_from AND a.created_at < p_to
    ORDER BY a.audit_seq
    LIMIT p_limit
$$;

CREATE OR REPLACE FUNCTION analyst.correlation_trail(p_correlation_id TEXT)
RETURNS TABLE (created_at TIMESTAMPTZ, occurred_at TIMESTAMPTZ, event_type TEXT, action TEXT,
               outcome TEXT, severity TEXT, user_id_hash TEXT, resource_type TEXT,
               resource_id TEXT, resource_found BOOLEAN, resource_status TEXT, amount NUMERIC,
               currency TEXT, credential_type TEXT, issuer_id TEXT, did TEXT)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT a.created_at, a.occurred_at, a.event_type::text, a.action::text, a.outcome::text,
           a.severity::text, a.user_id_hash::text, a.resource_type::text, a.resource_id::text,
           COALESCE(p.id, c.id, u.id) IS NOT NULL,
           COALESCE(p.status, c.status, u.status)::text,
           p.amount, p.currency::text, c.credential_type, c.issuer_id, u.did
    FROM public.audit_events AS a
    CROSS JOIN LATERAL (
        SELECT CASE WHEN a.resource_id ~* '^[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}$'
                    THEN a.resource_id::uuid END AS rid
    ) AS r
    LEFT JOIN public.payments AS p ON a.resource_type = 'PAYMENT' AND p.id = r.rid
    LEFT JOIN public.credentials AS c ON a.resource_type = 'CREDENTIAL' AND c.id = r.rid
    LEFT JOIN public.users AS u ON a.resource_type = 'USER' AND u.id = r.rid
    WHERE a.correlation_id = p_correlation_id
    ORDER BY a.audit_seq
$$;
