-- Undo of V12.
-- The listings as V10 made them (they read audit_seq, dropped below).
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
    ORDER BY a.created_at, a.id
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
    ORDER BY a.created_at, a.id
$$;

DROP INDEX IF EXISTS idx_audit_events_audit_seq;
ALTER TABLE audit_events DROP COLUMN IF EXISTS audit_seq;
DROP SEQUENCE IF EXISTS audit_events_audit_seq;
ALTER TABLE processed_events DROP COLUMN IF EXISTS content_digest;
