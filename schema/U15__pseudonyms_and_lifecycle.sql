-- Undo of V15: no lifecycle_job_runs; the analyst surface as V10/V12 left it (DIDs in reports,
-- column grants on the base tables), without the pseudonym columns. The function and view
-- definitions below are V10's (and V12's for user_timeline / correlation_trail), verbatim.
--
-- The IP-burst rollup held digests, which cannot be turned back into addresses: it is emptied
-- (with its coverage), so the next analyst.refresh_rollups() recomputes it from audit_events.

REVOKE ALL ON ALL TABLES IN SCHEMA analyst FROM finpass_analyst;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA analyst FROM finpass_analyst;

DROP VIEW analyst.audit_events;
DROP VIEW analyst.payments;
DROP VIEW analyst.credential_status;
DROP VIEW analyst.credentials;
DROP VIEW analyst.users;
DROP FUNCTION analyst.ip_bursts_between(TIMESTAMPTZ, TIMESTAMPTZ, INTEGER);
DROP FUNCTION analyst.refresh_rollups(BOOLEAN);
DROP FUNCTION analyst.users_kyc_verified(TIMESTAMPTZ, TIMESTAMPTZ, INTEGER);
DROP FUNCTION analyst.users_inactive(TIMESTAMPTZ, TEXT, INTEGER);
DROP FUNCTION analyst.search_users(TEXT, INTEGER);
DROP FUNCTION analyst.user_statistics(INTEGER);
DROP FUNCTION analyst.credentials_expired(INTEGER);
DROP FUNCTION analyst.credentials_expiring(INTEGER, INTEGER);
DROP FUNCTION analyst.credentials_needing_renewal(INTEGER, INTEGER, INTEGER);
DROP FUNCTION analyst.credential_statistics();
DROP FUNCTION analyst.payments_needing_attention(INTEGER, INTEGER, INTEGER);
DROP FUNCTION analyst.payment_analytics(TIMESTAMPTZ, TIMESTAMPTZ, TEXT);
DROP FUNCTION analyst.captured_totals(TIMESTAMPTZ, TIMESTAMPTZ, TEXT);
DROP FUNCTION analyst.high_value_payments(NUMERIC, TIMESTAMPTZ, TIMESTAMPTZ, TEXT, INTEGER);
DROP FUNCTION analyst.suspicious_activity(TIMESTAMPTZ, TIMESTAMPTZ, INTEGER, INTEGER, INTEGER);
DROP FUNCTION analyst.compliance_report(TIMESTAMPTZ, TIMESTAMPTZ);
DROP FUNCTION analyst.user_timeline(TEXT, TIMESTAMPTZ, TIMESTAMPTZ, INTEGER);
DROP FUNCTION analyst.correlation_trail(TEXT);
DROP FUNCTION analyst.mask_details(TEXT);
DROP FUNCTION analyst.mask_personal(TEXT);


DELETE FROM analyst.ip_bursts;
DELETE FROM analyst.rollup_state WHERE name = 'ip_bursts';
ALTER TABLE analyst.ip_bursts RENAME COLUMN ip_hash TO ip_address;
COMMENT ON TABLE analyst.ip_bursts IS
    'Per UTC day: each clock minute with >= 10 audit events from one ip_address (the floor: a '
    'report asking for fewer per minute counts live)';
COMMENT ON COLUMN analyst.rollup_state.name IS NULL;
COMMENT ON COLUMN analyst.rollup_state.covered_until IS NULL;
COMMENT ON COLUMN analyst.rollup_state.refreshed_at IS NULL;
COMMENT ON COLUMN analyst.audit_daily.day IS NULL;
COMMENT ON COLUMN analyst.audit_daily.event_type IS NULL;
COMMENT ON COLUMN analyst.audit_daily.severity IS NULL;
COMMENT ON COLUMN analyst.audit_daily.outcome IS NULL;
COMMENT ON COLUMN analyst.audit_daily.events IS NULL;
COMMENT ON COLUMN analyst.ip_bursts.day IS NULL;
COMMENT ON COLUMN analyst.ip_bursts.ip_address IS NULL;
COMMENT ON COLUMN analyst.ip_bursts.minute IS NULL;
COMMENT ON COLUMN analyst.ip_bursts.events IS NULL;
COMMENT ON COLUMN analyst.ip_bursts.users IS NULL;
COMMENT ON COLUMN analyst.ip_bursts.first_at IS NULL;
COMMENT ON COLUMN analyst.ip_bursts.last_at IS NULL;
COMMENT ON SCHEMA analyst IS
    'Analyst reports (finpass-pipeline report --list); readable by role finpass_analyst';
COMMENT ON FUNCTION analyst.rollup_window(TEXT, TIMESTAMPTZ, TIMESTAMPTZ) IS NULL;

DROP TABLE analyst_opaque_key;
DROP TABLE lifecycle_job_runs;

CREATE VIEW analyst.users AS
SELECT id, did, status, kyc_verified, kyc_verified_at, created_at, last_seen, updated_at,
       email IS NOT NULL AS has_email, phone IS NOT NULL AS has_phone
FROM public.users;
COMMENT ON VIEW analyst.users IS 'users without email and phone (has_email/has_phone instead)';

CREATE VIEW analyst.credentials AS
SELECT c.id, c.user_id, c.issuer_id, c.credential_type, c.status, c.issued_at, c.expires_at,
       c.revoked_at, c.revocation_reason, c.credential_hash, c.subject_did, c.proof_type,
       c.created_at, c.updated_at, s.reason AS status_reason, s.status_changed_at
FROM public.credentials AS c
LEFT JOIN public.credential_status AS s ON s.credential_id = c.id;
COMMENT ON VIEW analyst.credentials IS 'credentials with their status row, without the JWT';

CREATE FUNCTION analyst.ip_bursts_between(p_from TIMESTAMPTZ, p_to TIMESTAMPTZ, p_min INTEGER)
RETURNS TABLE (ip_address TEXT, minute TIMESTAMPTZ, events BIGINT, users BIGINT,
               first_at TIMESTAMPTZ, last_at TIMESTAMPTZ)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT h.ip_address::text, m.minute, m.events, m.users, m.first_at, m.last_at
    FROM (SELECT i.ip_address
          FROM public.audit_events AS i
          WHERE i.ip_address IS NOT NULL AND i.created_at >= p_from AND i.created_at < p_to
          GROUP BY i.ip_address
          HAVING count(*) >= p_min) AS h
    CROSS JOIN LATERAL (
        SELECT date_bin('1 minute', j.created_at, '2000-01-01 00:00+00') AS minute,
               count(*) AS events, count(DISTINCT j.user_id_hash) AS users,
               min(j.created_at) AS first_at, max(j.created_at) AS last_at
        FROM public.audit_events AS j
        WHERE j.ip_address = h.ip_address AND j.created_at >= p_from AND j.created_at < p_to
        GROUP BY 1
        HAVING count(*) >= p_min) AS m
$$;

CREATE FUNCTION analyst.refresh_rollups(p_full BOOLEAN DEFAULT false)
RETURNS TABLE (rollup TEXT, days_recomputed INTEGER, groups BIGINT, covered_until TIMESTAMPTZ)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_until TIMESTAMPTZ := date_trunc('day', now(), 'UTC');  -- whole UTC days only
    v_from TIMESTAMPTZ;
    v_day TIMESTAMPTZ;
    v_days INTEGER;
    v_groups BIGINT;
    v_bursts BIGINT := 0;
    v_n BIGINT;
BEGIN
    -- One refresh at a time; readers keep seeing the previous rollups until this commits.
    PERFORM pg_advisory_xact_lock(hashtext('analyst.refresh_rollups'));
    -- From the older coverage minus one day (margin for transactions that committed late).
    SELECT min(s.covered_until) - interval '24 hours' INTO v_from
    FROM analyst.rollup_state AS s
    WHERE s.name IN ('audit_daily', 'ip_bursts')
    HAVING count(*) = 2;
    IF p_full OR v_from IS NULL THEN
        v_from := COALESCE(date_trunc('day', (SELECT min(a.created_at)
                                              FROM public.audit_events AS a), 'UTC'), v_until);
        DELETE FROM analyst.audit_daily;
        DELETE FROM analyst.ip_bursts;
    ELSE
        DELETE FROM analyst.audit_daily AS d WHERE d.day >= (v_from AT TIME ZONE 'UTC')::date;
        DELETE FROM analyst.ip_bursts AS b WHERE b.day >= (v_from AT TIME ZONE 'UTC')::date;
    END IF;
    v_days := GREATEST(0, (v_until AT TIME ZONE 'UTC')::date - (v_from AT TIME ZONE 'UTC')::date);

    INSERT INTO analyst.audit_daily (day, event_type, severity, outcome, events)
    SELECT (a.created_at AT TIME ZONE 'UTC')::date, a.event_type, a.severity, a.outcome, count(*)
    FROM public.audit_events AS a
    WHERE a.created_at >= v_from AND a.created_at < v_until
    GROUP BY 1, 2, 3, 4;
    GET DIAGNOSTICS v_groups = ROW_COUNT;

    v_day := v_from;
    WHILE v_day < v_until LOOP  -- day by day: few IPs reach the floor within one day
        INSERT INTO analyst.ip_bursts (day, ip_address, minute, events, users, first_at, last_at)
        SELECT (v_day AT TIME ZONE 'UTC')::date, b.ip_address, b.minute, b.events, b.users,
               b.first_at, b.last_at
        FROM analyst.ip_bursts_between(v_day, v_day + interval '24 hours', 10) AS b;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_bursts := v_bursts + v_n;
        v_day := v_day + interval '24 hours';
    END LOOP;

    INSERT INTO analyst.rollup_state AS s (name, covered_until, refreshed_at)
    VALUES ('audit_daily', v_until, clock_timestamp()), ('ip_bursts', v_until, clock_timestamp())
    ON CONFLICT (name) DO UPDATE
        SET covered_until = excluded.covered_until, refreshed_at = excluded.refreshed_at;
    RETURN QUERY VALUES ('audit_daily'::text, v_days, v_groups, v_until),
                        ('ip_bursts'::text, v_days, v_bursts, v_until);
END
$$;

CREATE FUNCTION analyst.users_kyc_verified(
    p_from TIMESTAMPTZ, p_to TIMESTAMPTZ DEFAULT now(), p_limit INTEGER DEFAULT 1000)
RETURNS TABLE (user_id UUID, did TEXT, status TEXT, kyc_verified_at TIMESTAMPTZ,
               created_at TIMESTAMPTZ, last_seen TIMESTAMPTZ)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT u.id, u.did, u.status::text, u.kyc_verified_at, u.created_at, u.last_seen
    FROM public.users AS u
    WHERE u.kyc_verified AND u.kyc_verified_at >= p_from AND u.kyc_verified_at < p_to
    ORDER BY u.kyc_verified_at, u.id
    LIMIT p_limit
$$;

CREATE FUNCTION analyst.users_inactive(
    p_since TIMESTAMPTZ, p_status TEXT DEFAULT NULL, p_limit INTEGER DEFAULT 1000)
RETURNS TABLE (user_id UUID, did TEXT, status TEXT, last_active TIMESTAMPTZ,
               last_seen TIMESTAMPTZ, created_at TIMESTAMPTZ, kyc_verified BOOLEAN)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT u.id, u.did, u.status::text, COALESCE(u.last_seen, u.created_at), u.last_seen,
           u.created_at, u.kyc_verified
    FROM public.users AS u
    WHERE COALESCE(u.last_seen, u.created_at) < p_since
      AND (p_status IS NULL OR u.status = p_status)
    ORDER BY COALESCE(u.last_seen, u.created_at), u.id
    LIMIT p_limit
$$;

CREATE FUNCTION analyst.search_users(p_query TEXT, p_limit INTEGER DEFAULT 50)
RETURNS TABLE (user_id UUID, did TEXT, status TEXT, kyc_verified BOOLEAN,
               created_at TIMESTAMPTZ, last_seen TIMESTAMPTZ, matched_on TEXT, exact BOOLEAN)
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT u.id, u.did, u.status::text, u.kyc_verified, u.created_at, u.last_seen,
           h.matched_on, h.exact
    FROM (
        (SELECT d.id, 'did'::text AS matched_on, d.did = btrim(p_query) AS exact,
                d.did AS sort_key
         FROM public.users AS d
         WHERE length(btrim(p_query)) >= 3
           AND d.did OPERATOR(pg_catalog.~>=~) btrim(p_query)
           AND d.did OPERATOR(pg_catalog.~<~) (btrim(p_query) || chr(1114111))
         ORDER BY d.did
         LIMIT p_limit)
        UNION ALL
        (SELECT e.id, 'email', true, lower(e.email)
         FROM public.users AS e
         WHERE lower(e.email) = lower(btrim(p_query))
         LIMIT p_limit)
        UNION ALL
        (SELECT p.id, 'phone', true, regexp_replace(p.phone, '[^0-9+]', '', 'g')
         FROM public.users AS p
         WHERE length(regexp_replace(p_query, '[^0-9]', '', 'g')) >= 5
           AND regexp_replace(p.phone, '[^0-9+]', '', 'g')
               = regexp_replace(p_query, '[^0-9+]', '', 'g')
         LIMIT p_limit)
    ) AS h
    JOIN public.users AS u ON u.id = h.id
    ORDER BY h.exact DESC, h.matched_on, h.sort_key, u.id
    LIMIT p_limit
$$;

CREATE FUNCTION analyst.user_statistics(p_active_days INTEGER DEFAULT 30)
RETURNS TABLE (status TEXT, users BIGINT, kyc_verified BIGINT, kyc_rate NUMERIC,
               active_recently BIGINT, registered_recently BIGINT)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN grouping(u.status) = 1 THEN 'ALL' ELSE u.status::text END,
           count(*),
           count(*) FILTER (WHERE u.kyc_verified),
           round(count(*) FILTER (WHERE u.kyc_verified)::numeric / count(*), 4),
           count(*) FILTER (WHERE u.last_seen >= now() - make_interval(days => p_active_days)),
           count(*) FILTER (WHERE u.created_at >= now() - make_interval(days => p_active_days))
    FROM public.users AS u
    GROUP BY ROLLUP (u.status)
    ORDER BY grouping(u.status), u.status
$$;

CREATE FUNCTION analyst.credentials_expired(p_limit INTEGER DEFAULT 1000)
RETURNS TABLE (credential_id UUID, user_id UUID, issuer_id TEXT, credential_type TEXT,
               status TEXT, issued_at TIMESTAMPTZ, expires_at TIMESTAMPTZ)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT x.id, x.user_id, x.issuer_id, x.credential_type, x.status, x.issued_at, x.expires_at
    FROM (
        (SELECT c.id, c.user_id, c.issuer_id, c.credential_type, c.status::text AS status,
                c.issued_at, c.expires_at
         FROM public.credentials AS c
         WHERE c.expires_at < now()
         ORDER BY c.expires_at DESC
         LIMIT p_limit)
        UNION ALL
        (SELECT c.id, c.user_id, c.issuer_id, c.credential_type, c.status::text, c.issued_at,
                c.expires_at
         FROM public.credentials AS c
         WHERE c.status = 'EXPIRED' AND c.expires_at >= now()
         ORDER BY c.expires_at DESC
         LIMIT p_limit)
        UNION ALL
        (SELECT c.id, c.user_id, c.issuer_id, c.credential_type, c.status::text, c.issued_at,
                c.expires_at
         FROM public.credentials AS c
         WHERE c.status = 'EXPIRED' AND c.expires_at IS NULL
         LIMIT p_limit)
    ) AS x
    ORDER BY x.expires_at DESC NULLS LAST, x.id
    LIMIT p_limit
$$;

CREATE FUNCTION analyst.credentials_expiring(p_days INTEGER DEFAULT 30,
                                             p_limit INTEGER DEFAULT 1000)
RETURNS TABLE (credential_id UUID, user_id UUID, issuer_id TEXT, credential_type TEXT,
               issued_at TIMESTAMPTZ, expires_at TIMESTAMPTZ)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT c.id, c.user_id, c.issuer_id, c.credential_type, c.issued_at, c.expires_at
    FROM public.credentials AS c
    WHERE c.status = 'VALID' AND c.expires_at >= now()
      AND c.expires_at < now() + make_interval(days => p_days)
    ORDER BY c.expires_at, c.id
    LIMIT p_limit
$$;

CREATE FUNCTION analyst.credentials_needing_renewal(
    p_days INTEGER DEFAULT 30, p_max_age_days INTEGER DEFAULT 365, p_limit INTEGER DEFAULT 1000)
RETURNS TABLE (credential_id UUID, user_id UUID, issuer_id TEXT, credential_type TEXT,
               issued_at TIMESTAMPTZ, expires_at TIMESTAMPTZ, renew_by TIMESTAMPTZ,
               reason TEXT)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT c.id, c.user_id, c.issuer_id, c.credential_type, c.issued_at, c.expires_at,
           LEAST(c.expires_at, c.issued_at + make_interval(days => p_max_age_days)),
           CASE
               WHEN c.expires_at < now() + make_interval(days => p_days)
                    AND c.issued_at < now() - make_interval(days => p_max_age_days)
                   THEN 'EXPIRING_AND_OLD'
               WHEN c.expires_at < now() + make_interval(days => p_days) THEN 'EXPIRING'
               ELSE 'OLD'
           END
    FROM public.credentials AS c
    WHERE c.id IN (
        (SELECT e.id FROM public.credentials AS e
         WHERE e.status = 'VALID' AND e.expires_at < now() + make_interval(days => p_days)
         ORDER BY e.expires_at
         LIMIT p_limit)
        UNION
        (SELECT o.id FROM public.credentials AS o
         WHERE o.status = 'VALID'
           AND o.issued_at < now() - make_interval(days => p_max_age_days)
         ORDER BY o.issued_at
         LIMIT p_limit))
    ORDER BY 7, c.id
    LIMIT p_limit
$$;

CREATE FUNCTION analyst.credential_statistics()
RETURNS TABLE (dimension TEXT, value TEXT, credentials BIGINT, valid BIGINT, suspended BIGINT,
               revoked BIGINT, expired BIGINT)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN grouping(c.status) = 0 THEN 'status'
                WHEN grouping(c.credential_type) = 0 THEN 'type'
                ELSE 'issuer' END,
           CASE WHEN grouping(c.status) = 0 THEN c.status::text
                WHEN grouping(c.credential_type) = 0 THEN c.credential_type
                ELSE c.issuer_id END,
           count(*),
           count(*) FILTER (WHERE c.status = 'VALID'),
           count(*) FILTER (WHERE c.status = 'SUSPENDED'),
           count(*) FILTER (WHERE c.status = 'REVOKED'),
           count(*) FILTER (WHERE c.status = 'EXPIRED')
    FROM public.credentials AS c
    GROUP BY GROUPING SETS ((c.status), (c.credential_type), (c.issuer_id))
    ORDER BY 1, 3 DESC, 2
$$;

CREATE FUNCTION analyst.payments_needing_attention(
    p_stuck_hours INTEGER DEFAULT 24, p_failed_hours INTEGER DEFAULT 24,
    p_limit INTEGER DEFAULT 1000)
RETURNS TABLE (payment_id UUID, reason TEXT, status TEXT, amount NUMERIC, currency TEXT,
               created_at TIMESTAMPTZ, authorized_at TIMESTAMPTZ, failed_at TIMESTAMPTZ,
               failure_reason TEXT, payer_did TEXT)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT x.id, x.reason, x.status, x.amount, x.currency, x.created_at, x.authorized_at,
           x.failed_at, x.failure_reason, x.payer_did
    FROM (
        (SELECT p.id, 'STUCK_' || p.status AS reason, p.status::text AS status, p.amount,
                p.currency::text AS currency, p.created_at, p.authorized_at, p.failed_at,
                p.failure_reason::text AS failure_reason, p.payer_did,
                extract(epoch FROM p.created_at) AS sort_key
         FROM public.payments AS p
         WHERE p.status IN ('PENDING', 'AUTHORIZED')
           AND p.created_at < now() - make_interval(hours => p_stuck_hours)
         ORDER BY p.created_at
         LIMIT p_limit)
        UNION ALL
        (SELECT p.id, 'FAILED_RECENTLY', p.status::text, p.amount, p.currency::text,
                p.created_at, p.authorized_at, p.failed_at, p.failure_reason::text, p.payer_did,
                -extract(epoch FROM p.failed_at)
         FROM public.payments AS p
         WHERE p.status = 'FAILED' AND p.failed_at >= now() - make_interval(hours => p_failed_hours)
         ORDER BY p.failed_at DESC
         LIMIT p_limit)
    ) AS x
    ORDER BY x.reason DESC, x.sort_key, x.id
    LIMIT p_limit
$$;

CREATE FUNCTION analyst.payment_analytics(
    p_from TIMESTAMPTZ, p_to TIMESTAMPTZ DEFAULT now(), p_currency TEXT DEFAULT NULL)
RETURNS TABLE (day DATE, status TEXT, currency TEXT, payments BIGINT, amount NUMERIC,
               total_amount NUMERIC)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT (p.created_at AT TIME ZONE 'UTC')::date, p.status::text, p.currency::text, count(*),
           sum(p.amount), sum(p.total_amount)
    FROM public.payments AS p
    WHERE p.created_at >= p_from AND p.created_at < p_to
      AND (p_currency IS NULL OR p.currency = p_currency)
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
$$;

CREATE FUNCTION analyst.captured_totals(
    p_from TIMESTAMPTZ, p_to TIMESTAMPTZ DEFAULT now(), p_currency TEXT DEFAULT NULL)
RETURNS TABLE (currency TEXT, payments BIGINT, amount NUMERIC, fees NUMERIC, taxes NUMERIC,
               total_amount NUMERIC)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT p.currency::text, count(*), sum(p.amount), COALESCE(sum(p.fee_amount), 0),
           COALESCE(sum(p.tax_amount), 0), sum(p.total_amount)
    FROM public.payments AS p
    WHERE p.status = 'CAPTURED' AND p.captured_at >= p_from AND p.captured_at < p_to
      AND (p_currency IS NULL OR p.currency = p_currency)
    GROUP BY 1
    ORDER BY 1
$$;

CREATE FUNCTION analyst.high_value_payments(
    p_threshold NUMERIC, p_from TIMESTAMPTZ, p_to TIMESTAMPTZ DEFAULT now(),
    p_currency TEXT DEFAULT NULL, p_limit INTEGER DEFAULT 1000)
RETURNS TABLE (payment_id UUID, amount NUMERIC, currency TEXT, status TEXT,
               payment_type TEXT, created_at TIMESTAMPTZ, payer_did TEXT, payee_did TEXT)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT p.id, p.amount, p.currency::text, p.status::text, p.payment_type::text,
           p.created_at, p.payer_did, p.payee_did
    FROM public.payments AS p
    WHERE p.amount >= p_threshold AND p.created_at >= p_from AND p.created_at < p_to
      AND (p_currency IS NULL OR p.currency = p_currency)
    ORDER BY p.amount DESC, p.id
    LIMIT p_limit
$$;

CREATE FUNCTION analyst.suspicious_activity(
    p_from TIMESTAMPTZ, p_to TIMESTAMPTZ DEFAULT now(), p_min_failures INTEGER DEFAULT 5,
    p_burst_per_minute INTEGER DEFAULT 30, p_limit INTEGER DEFAULT 1000)
RETURNS TABLE (kind TEXT, subject TEXT, events BIGINT, distinct_counterparts BIGINT,
               first_at TIMESTAMPTZ, last_at TIMESTAMPTZ)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    WITH b AS (
        SELECT w.lo, CASE WHEN p_burst_per_minute >= 10 THEN w.hi ELSE w.lo END AS hi
        FROM analyst.rollup_window('ip_bursts', p_from, p_to) AS w
    ), bursts AS (
        SELECT r.ip_address, r.events, r.users, r.first_at, r.last_at
        FROM analyst.ip_bursts AS r
        WHERE r.day >= (SELECT (b.lo AT TIME ZONE 'UTC')::date FROM b)
          AND r.day < (SELECT (b.hi AT TIME ZONE 'UTC')::date FROM b)
          AND r.events >= p_burst_per_minute
        UNION ALL
        SELECT x.ip_address, x.events, x.users, x.first_at, x.last_at
        FROM b CROSS JOIN LATERAL analyst.ip_bursts_between(
            p_from, LEAST(p_to, b.lo), p_burst_per_minute) AS x
        UNION ALL
        SELECT x.ip_address, x.events, x.users, x.first_at, x.last_at
        FROM b CROSS JOIN LATERAL analyst.ip_bursts_between(
            GREATEST(p_from, b.hi), p_to, p_burst_per_minute) AS x
    )
    SELECT x.kind, x.subject, x.events, x.distinct_counterparts, x.first_at, x.last_at
    FROM (
        SELECT 'LOGIN_FAILURES' AS kind, f.user_id_hash::text AS subject, count(*) AS events,
               count(DISTINCT f.ip_address) AS distinct_counterparts,
               min(f.created_at) AS first_at, max(f.created_at) AS last_at
        FROM public.audit_events AS f
        WHERE f.event_type = 'AUTH_LOGIN_FAILED' AND f.user_id_hash IS NOT NULL
          AND f.created_at >= p_from AND f.created_at < p_to
        GROUP BY f.user_id_hash
        HAVING count(*) >= p_min_failures
        UNION ALL
        SELECT 'REJECTED', r.user_id_hash::text, count(*), count(DISTINCT r.event_type),
               min(r.created_at), max(r.created_at)
        FROM public.audit_events AS r
        WHERE r.outcome = 'REJECTED' AND r.created_at >= p_from AND r.created_at < p_to
        GROUP BY r.user_id_hash
        UNION ALL
        SELECT 'IP_BURST', u.ip_address, sum(u.events)::bigint, max(u.users), min(u.first_at),
               max(u.last_at)
        FROM bursts AS u
        GROUP BY u.ip_address
    ) AS x
    ORDER BY x.kind, x.events DESC, x.subject
    LIMIT p_limit
$$;

CREATE FUNCTION analyst.compliance_report(p_from TIMESTAMPTZ, p_to TIMESTAMPTZ DEFAULT now())
RETURNS TABLE (event_type TEXT, severity TEXT, outcome TEXT, events BIGINT)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    WITH bounds AS (
        SELECT w.lo, w.hi FROM analyst.rollup_window('audit_daily', p_from, p_to) AS w
    )
    SELECT y.event_type, y.severity, y.outcome, sum(y.events)::bigint
    FROM (
        SELECT d.event_type, d.severity, d.outcome, d.events
        FROM analyst.audit_daily AS d
        WHERE d.day >= (SELECT (lo AT TIME ZONE 'UTC')::date FROM bounds)
          AND d.day < (SELECT (hi AT TIME ZONE 'UTC')::date FROM bounds)
        UNION ALL
        SELECT a.event_type::text, a.severity::text, a.outcome::text, 1
        FROM public.audit_events AS a
        WHERE a.created_at >= p_from
          AND a.created_at < LEAST(p_to, (SELECT lo FROM bounds))
        UNION ALL
        SELECT a.event_type::text, a.severity::text, a.outcome::text, 1
        FROM public.audit_events AS a
        WHERE a.created_at >= GREATEST(p_from, (SELECT hi FROM bounds))
          AND a.created_at < p_to
    ) AS y
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
$$;

CREATE FUNCTION analyst.user_timeline(
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

CREATE FUNCTION analyst.correlation_trail(p_correlation_id TEXT)
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

COMMENT ON FUNCTION analyst.refresh_rollups(BOOLEAN) IS
    'Bring the analyst rollups up to the last whole UTC day (incremental; p_full => recompute '
    'all). Run hourly or daily (finpass-pipeline report --refresh-rollups); not for analysts.';

-- Ownership ------------------------------------------------------------------------------------
-- Where V4's finpass_owner exists (it owns the pipeline's tables), it owns the analyst objects
-- too, so the SECURITY DEFINER search and the views run as that role, not as whoever migrated
-- (often a superuser). Without it, the migrating role keeps them.
DO $$
DECLARE
    r RECORD;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'finpass_owner') THEN
        ALTER SCHEMA analyst OWNER TO finpass_owner;
        FOR r IN SELECT c.relname FROM pg_catalog.pg_class AS c
                 WHERE c.relnamespace = 'analyst'::regnamespace AND c.relkind IN ('r', 'v') LOOP
            EXECUTE format('ALTER TABLE analyst.%I OWNER TO finpass_owner', r.relname);
        END LOOP;
        FOR r IN SELECT p.oid::regprocedure AS f FROM pg_catalog.pg_proc AS p
                 WHERE p.pronamespace = 'analyst'::regnamespace LOOP
            EXECUTE format('ALTER FUNCTION %s OWNER TO finpass_owner', r.f);
        END LOOP;
    END IF;
END
$$;

-- Privileges -----------------------------------------------------------------------------------
-- New functions are executable by PUBLIC by default; only the analyst role (and the owner) may
-- run these, and nobody but the owner may run refresh_rollups.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA analyst FROM PUBLIC;
GRANT USAGE ON SCHEMA analyst TO finpass_analyst;
GRANT SELECT ON ALL TABLES IN SCHEMA analyst TO finpass_analyst;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA analyst TO finpass_analyst;
REVOKE EXECUTE ON FUNCTION analyst.refresh_rollups(BOOLEAN) FROM finpass_analyst;

-- Invoker functions read the base tables with the analyst's own privileges: column lists.
GRANT SELECT (id, did, created_at, last_seen, kyc_verified, kyc_verified_at, status, metadata,
              updated_at)
    ON users TO finpass_analyst;
GRANT SELECT (id, user_id, issuer_id, credential_type, issued_at, expires_at, status,
              revoked_at, revocation_handle, revocation_reason, revoked_by, credential_hash,
              nonce, subject_did, verification_method, proof_type, proof_created_at,
              proof_purpose, metadata, created_at, updated_at)
    ON credentials TO finpass_analyst;
GRANT SELECT ON credential_status, payments, audit_events TO finpass_analyst;

DROP INDEX idx_payments_payer_id_hash;
DROP INDEX idx_users_user_id_hash;
CREATE INDEX idx_users_did_pattern ON users (did text_pattern_ops);
-- Only where the plain-text columns still exist (see V15).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = 'public.users'::regclass
               AND attname = 'email' AND NOT attisdropped) THEN
        CREATE INDEX idx_users_email_lower ON users (lower(email) text_pattern_ops);
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = 'public.users'::regclass
               AND attname = 'phone' AND NOT attisdropped) THEN
        CREATE INDEX idx_users_phone_digits ON users ((regexp_replace(phone, '[^0-9+]', '', 'g')));
    END IF;
END
$$;
ALTER TABLE payments DROP COLUMN payee_id_hash, DROP COLUMN payer_id_hash;
ALTER TABLE credentials DROP COLUMN subject_id_hash, DROP COLUMN user_id_hash;
ALTER TABLE users DROP COLUMN user_id_hash;
