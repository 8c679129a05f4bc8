-- V10: the analyst surface — report functions, their indexes, rollups and a read-only role.
--
-- Numbered 10 (not 4) so that other schema work (e.g. audit-log tamper evidence) can take V4..V9;
-- the runner applies versions in numeric order and allows gaps. Undone by U10__analyst_surface.sql.
--
-- Design (docs/analyst.md has the full story):
--   * Everything lives in schema `analyst`. Reports are set-returning LANGUAGE sql functions that
--     are STABLE, not STRICT, not SECURITY DEFINER and have no SET clause: PostgreSQL inlines
--     them into the calling query, so each call is planned with its actual arguments and the
--     indexes below are used. Tables are schema-qualified (`public.`) because an inlined body is
--     parsed with the caller's search_path.
--   * Bodies are string literals (not BEGIN ATOMIC), so they record no dependency on the tables:
--     a later migration may rebuild audit_events (e.g. partition it) without dropping them.
--   * Time windows are half-open [from, to) on the row's recording time (`created_at`, or the
--     lifecycle column the report names); days are UTC days.
--   * Money stays NUMERIC end to end (sums of DECIMAL(18,2) are NUMERIC; nothing goes via float).
--   * The compliance report and the IP bursts of the suspicious-activity report read rollups
--     (`analyst.audit_daily`, `analyst.ip_bursts`) for the whole UTC days that
--     `analyst.refresh_rollups()` has covered and compute the rest live, so they are exact
--     whatever the window and fast whatever its length. Audit rows are append-only, so a
--     refresh only recomputes the days since the previous one (plus one day of margin).
--   * Functions are PARALLEL SAFE (they only read), so big aggregates may use parallel workers.
--   * Role `finpass_analyst` (NOLOGIN, cluster-wide, created only if missing) may read the
--     analyst views, functions and rollups, audit_events, payments, credential_status and every
--     column of users/credentials except users.email, users.phone and credentials.credential_jwt
--     (column-level grants: a column added later is not readable until granted). It is granted
--     nothing that writes. `analyst.search_users` is the one SECURITY DEFINER function: it may
--     compare email/phone but returns only non-contact columns and which field matched.
--
-- Scripts run inside one transaction per version (finpass_pipeline.migrations): no BEGIN/COMMIT.

CREATE SCHEMA analyst;
COMMENT ON SCHEMA analyst IS
    'Analyst reports (finpass-pipeline report --list); readable by role finpass_analyst';

-- The role ---------------------------------------------------------------------------------------
-- Roles are cluster-wide: another database (or a concurrent migration of one) may have made it.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'finpass_analyst') THEN
        BEGIN
            CREATE ROLE finpass_analyst NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- a concurrent migration of another database created it first
        END;
    END IF;
    -- Read-only must mean read-only: refuse a pre-existing role that bypasses privileges.
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'finpass_analyst'
               AND (rolsuper OR rolbypassrls OR rolcreaterole OR rolcreatedb)) THEN
        RAISE EXCEPTION 'role finpass_analyst exists with SUPERUSER, BYPASSRLS, CREATEROLE or '
            'CREATEDB; it must be a plain read-only group role (ALTER ROLE ... NOSUPERUSER ...)';
    END IF;
END
$$;

-- Indexes the reports need ----------------------------------------------------------------------
-- users
CREATE INDEX idx_users_kyc_verified_at ON users (kyc_verified_at) WHERE kyc_verified;
CREATE INDEX idx_users_last_active ON users ((COALESCE(last_seen, created_at)));
CREATE INDEX idx_users_did_pattern ON users (did text_pattern_ops);
CREATE INDEX idx_users_email_lower ON users (lower(email) text_pattern_ops);
CREATE INDEX idx_users_phone_digits ON users ((regexp_replace(phone, '[^0-9+]', '', 'g')));
-- credentials
CREATE INDEX idx_credentials_valid_expires_at ON credentials (expires_at)
    WHERE status = 'VALID';
CREATE INDEX idx_credentials_valid_issued_at ON credentials (issued_at)
    WHERE status = 'VALID';
CREATE INDEX idx_credentials_expired_expires_at ON credentials (expires_at)
    WHERE status = 'EXPIRED';
-- credential statistics scan this narrow index, not the wide (JWT-carrying) heap
CREATE INDEX idx_credentials_status_type_issuer ON credentials (status, credential_type, issuer_id);
-- payments
CREATE INDEX idx_payments_open_created_at ON payments (created_at)
    WHERE status IN ('PENDING', 'AUTHORIZED');
CREATE INDEX idx_payments_failed_at ON payments (failed_at) WHERE status = 'FAILED';
CREATE INDEX idx_payments_created_at_analytics ON payments (created_at)
    INCLUDE (status, currency, amount, total_amount);
CREATE INDEX idx_payments_captured_at ON payments (captured_at)
    INCLUDE (currency, amount, fee_amount, tax_amount, total_amount) WHERE status = 'CAPTURED';
CREATE INDEX idx_payments_amount ON payments (amount);
-- audit_events
CREATE INDEX idx_audit_events_user_created ON audit_events (user_id_hash, created_at);
CREATE INDEX idx_audit_events_login_failed ON audit_events (created_at)
    INCLUDE (user_id_hash, ip_address) WHERE event_type = 'AUTH_LOGIN_FAILED';
CREATE INDEX idx_audit_events_rejected ON audit_events (created_at)
    INCLUDE (user_id_hash) WHERE outcome = 'REJECTED';
CREATE INDEX idx_audit_events_ip_created ON audit_events (ip_address, created_at);

-- The planner cannot know that day × status × currency has only a few thousand combinations;
-- without this it sorts a year of payments instead of hashing them (payment_analytics).
CREATE STATISTICS analyst.st_payments_day_status_currency (ndistinct)
    ON ((created_at AT TIME ZONE 'UTC')::date), status, currency FROM payments;

-- Rollups ---------------------------------------------------------------------------------------
-- Audit rows are append-only (V4), so whole past UTC days can be summarised once. Reports take
-- the whole days a rollup covers from it and count the rest live: exact answers either way.
-- UTC days are 24 hours: `+ interval '24 hours'`, never '1 day' (which follows the session's
-- time zone across DST changes).
CREATE TABLE analyst.rollup_state (
    name TEXT PRIMARY KEY,
    covered_until TIMESTAMPTZ NOT NULL,
    refreshed_at TIMESTAMPTZ NOT NULL
);
COMMENT ON TABLE analyst.rollup_state IS
    'Per rollup: UTC days before covered_until (a UTC midnight) are summarised; later rows are '
    'counted live';

CREATE TABLE analyst.audit_daily (
    day DATE NOT NULL,
    event_type TEXT NOT NULL,
    severity TEXT,
    outcome TEXT,
    events BIGINT NOT NULL
);
CREATE INDEX idx_audit_daily_day ON analyst.audit_daily (day);
COMMENT ON TABLE analyst.audit_daily IS
    'audit_events counted per UTC day of created_at, event_type, severity and outcome';

CREATE TABLE analyst.ip_bursts (
    day DATE NOT NULL,
    ip_address TEXT NOT NULL,
    minute TIMESTAMPTZ NOT NULL,
    events BIGINT NOT NULL,
    users BIGINT NOT NULL,
    first_at TIMESTAMPTZ NOT NULL,
    last_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX idx_ip_bursts_day ON analyst.ip_bursts (day);
COMMENT ON TABLE analyst.ip_bursts IS
    'Per UTC day: each clock minute with >= 10 audit events from one ip_address (the floor: a '
    'report asking for fewer per minute counts live)';

-- [lo, hi): the whole UTC days of [p_from, p_to) that rollup p_rollup covers (lo = hi: none).
CREATE FUNCTION analyst.rollup_window(p_rollup TEXT, p_from TIMESTAMPTZ, p_to TIMESTAMPTZ)
RETURNS TABLE (lo TIMESTAMPTZ, hi TIMESTAMPTZ)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT l.lo,
           GREATEST(l.lo, LEAST(date_trunc('day', p_to, 'UTC'),
                                COALESCE((SELECT s.covered_until FROM analyst.rollup_state AS s
                                          WHERE s.name = p_rollup), '-infinity')))
    FROM (SELECT CASE WHEN date_trunc('day', p_from, 'UTC') = p_from THEN p_from
                      ELSE date_trunc('day', p_from, 'UTC') + interval '24 hours' END AS lo
         ) AS l
$$;

-- Minutes in [p_from, p_to) with >= p_min events from one IP. Two steps: only an IP with
-- p_min events in the whole range can have p_min in one minute (one hash aggregate over the
-- range), and only those IPs are then binned by minute, through (ip_address, created_at).
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
COMMENT ON FUNCTION analyst.refresh_rollups(BOOLEAN) IS
    'Bring the analyst rollups up to the last whole UTC day (incremental; p_full => recompute '
    'all). Run hourly or daily (finpass-pipeline report --refresh-rollups); not for analysts.';

-- Views without contact data or credential material -------------------------------------------
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

-- Users ----------------------------------------------------------------------------------------
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

-- "Inactive" = no activity since p_since; a user never seen counts from registration.
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

-- DID: exact or prefix. Email (case-insensitive) and phone (digits and '+' only): exact match
-- only — a prefix search would let a caller who may not read these columns enumerate them.
-- SECURITY DEFINER (runs as the owner) with a fixed search_path; not inlined, so the range
-- conditions are written to use the text_pattern_ops / expression indexes with parameters.
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

-- Credentials ----------------------------------------------------------------------------------
-- Expired = past expires_at (whatever the status) or marked EXPIRED early / without a date.
-- Three index-ordered branches (the partial EXPIRED index serves the last two), most recently
-- expired first.
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

-- Needs renewal = VALID and (expiring within p_days, already past expiry included, or issued
-- more than p_max_age_days ago). renew_by = the earlier of the two deadlines. The candidates are
-- each criterion's first p_limit rows in index order: together they contain the first p_limit
-- rows by renew_by.
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

-- Payments -------------------------------------------------------------------------------------
-- Stuck = PENDING/AUTHORIZED and created more than p_stuck_hours ago (oldest first); failed =
-- FAILED within the last p_failed_hours (newest first).
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

-- Captured = status CAPTURED (a refunded payment no longer counts), by captured_at.
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

-- The threshold applies to `amount` in the payment's own currency (no FX conversion).
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

-- Audit ----------------------------------------------------------------------------------------
-- In [p_from, p_to): users with >= p_min_failures AUTH_LOGIN_FAILED; users with REJECTED
-- outcomes; IP addresses with >= p_burst_per_minute events within one clock minute (`events` sums
-- the minutes that qualify). Bursts come from analyst.ip_bursts for the whole UTC days it covers
-- (when the threshold is at least its floor of 10) and are computed live for the rest.
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

-- Counts by event_type, severity and outcome in [p_from, p_to): whole UTC days that the rollup
-- covers come from analyst.audit_daily, the (at most two) partial days at the edges and
-- everything after the rollup's coverage are counted live. Same answer either way.
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
    ORDER BY a.created_at, a.id
    LIMIT p_limit
$$;

-- Every audit row of one correlation_id, in order, with the domain row it names: PAYMENT and
-- CREDENTIAL resource_ids are the row ids, USER resource_ids are users.id; SESSION rows name a
-- session and join nothing. A resource_id that is not a UUID joins nothing (never an error).
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
    ORDER BY a.created_at, a.id
$$;

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
