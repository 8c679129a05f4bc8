-- V15: analysts see pseudonyms, not people (CONTRACT.md §5 v1.1), and the bookkeeping of the
-- daemon's scheduled lifecycle jobs. Undone by U15.
--
-- lifecycle_job_runs: one row per scheduled job (audit_retention, prune), written by whichever
--   consumer process ran it, under a session advisory lock (consumers/lifecycle.py): a process
--   runs a job only when it holds the lock AND the last run started at least one interval ago,
--   so a consumer group runs each job once per interval, never two at a time.
--
-- docs/analyst.md ("Privacy") has the full story; in short:
--   * Pseudonym columns in the domain rows, written by the consumer at apply time from the same
--     HMAC it computes for the audit row (FINPASS_AUDIT_HASH_KEY; the key is not in the
--     database, so SQL cannot compute it):
--       users.user_id_hash          = audit_events.user_id_hash of the user
--       credentials.user_id_hash    the holder's pseudonym (users.user_id_hash of user_id)
--       credentials.subject_id_hash the pseudonym of credentials.subject_did (when given)
--       payments.payer_id_hash / payee_id_hash
--     Rows written before V15 keep NULL there until `finpass-pipeline analyst backfill` (which
--     holds the key) fills them; until then analysts see NULL — never the DID.
--   * finpass_analyst loses every grant on the base tables. It reads five views, all owned by
--     finpass_owner and listing their columns explicitly (a column added later to a table is not
--     visible until a view names it): analyst.users, analyst.credentials,
--     analyst.credential_status, analyst.payments and analyst.audit_events. No DID, email,
--     phone, JWT, IP address, user agent, device fingerprint, geolocation, metadata, payment
--     reference or KYC token is in them.
--   * IP addresses and session ids appear as opaque keyed digests (ip_hash, session_hash):
--     sha256(k || sha256(k || value)) under a random 32-byte key made here and stored in
--     analyst_opaque_key, which only the owner can read, so they group and join but cannot be
--     reversed by guessing (an unkeyed hash of an IPv4 address is reversed by trying 2^32). The
--     key is per database: these digests are not comparable across databases.
--   * Free text the views pass through (reasons, descriptions, audit JSON) goes through
--     analyst.mask_personal, which replaces anything shaped like a DID, e-mail address, IPv4
--     address, JWT or international phone number; the unknown event fields an audit row keeps
--     in details.extra are reduced to their names (analyst.mask_details).
--   * Every report reads those views (never public.*), so it sees exactly what the role sees,
--     and identifies people only by user_id_hash / payer_id_hash / payee_id_hash. The report
--     functions stay inlinable LANGUAGE sql invoker functions; views are plain, so they are
--     flattened into the report's query and use the same indexes. ip_bursts_between becomes
--     SECURITY DEFINER (it groups raw IPs through their index and returns only digests).
--   * search_users finds users by pseudonym (exact, or a prefix of >= 8 hex digits), no longer
--     by DID, email or phone: a lookup from a person to their pseudonym is re-identification,
--     which belongs to the privacy role.
--   * Every analyst view, column, table and function carries a COMMENT; docs/analyst.md's data
--     dictionary is generated from them (`finpass-pipeline analyst dictionary`).
--
-- Scripts run inside one transaction per version (finpass_pipeline.migrations): no BEGIN/COMMIT.

-- Scheduled lifecycle jobs ----------------------------------------------------------------------
CREATE TABLE lifecycle_job_runs (
    job TEXT PRIMARY KEY,
    last_started_at TIMESTAMPTZ NOT NULL,
    last_finished_at TIMESTAMPTZ,
    last_outcome VARCHAR(10) CONSTRAINT ck_lifecycle_job_runs_outcome
        CHECK (last_outcome IN ('running', 'success', 'failure')),
    last_error TEXT,
    last_summary TEXT,
    run_by TEXT NOT NULL,
    runs BIGINT NOT NULL DEFAULT 0
);
COMMENT ON TABLE lifecycle_job_runs IS
    'Last run of each scheduled lifecycle job (audit_retention, prune) across the consumer group';
ALTER TABLE lifecycle_job_runs OWNER TO finpass_owner;
GRANT SELECT, INSERT, UPDATE ON lifecycle_job_runs TO finpass_writer;

-- Pseudonym columns ------------------------------------------------------------------------------
ALTER TABLE users ADD COLUMN user_id_hash VARCHAR(64);
ALTER TABLE credentials
    ADD COLUMN user_id_hash VARCHAR(64),
    ADD COLUMN subject_id_hash VARCHAR(64);
ALTER TABLE payments
    ADD COLUMN payer_id_hash VARCHAR(64),
    ADD COLUMN payee_id_hash VARCHAR(64);
COMMENT ON COLUMN users.user_id_hash IS
    'Keyed pseudonym of did (HMAC-SHA-256, = audit_events.user_id_hash); NULL until backfilled';
COMMENT ON COLUMN credentials.user_id_hash IS
    'Keyed pseudonym of the holder''s DID (= users.user_id_hash)';
COMMENT ON COLUMN credentials.subject_id_hash IS 'Keyed pseudonym of subject_did';
COMMENT ON COLUMN payments.payer_id_hash IS 'Keyed pseudonym of payer_did';
COMMENT ON COLUMN payments.payee_id_hash IS 'Keyed pseudonym of payee_did';

-- Joins by pseudonym (users <-> audit, users <-> payments) and users-search.
CREATE INDEX idx_users_user_id_hash ON users (user_id_hash);
CREATE INDEX idx_payments_payer_id_hash ON payments (payer_id_hash);
-- V10's indexes for searching users by DID prefix, email and phone: no report does that now,
-- and each cost an index entry per registration. IF EXISTS: work on personal-data encryption
-- (another migration) may have removed the email and phone ones already.
DROP INDEX idx_users_did_pattern;
DROP INDEX IF EXISTS idx_users_email_lower;
DROP INDEX IF EXISTS idx_users_phone_digits;

-- The key of the opaque digests ------------------------------------------------------------------
CREATE TABLE analyst_opaque_key (
    id INTEGER PRIMARY KEY CONSTRAINT ck_analyst_opaque_key_one CHECK (id = 1),
    key BYTEA NOT NULL CONSTRAINT ck_analyst_opaque_key_len CHECK (length(key) = 32)
);
COMMENT ON TABLE analyst_opaque_key IS
    'Key of analyst ip_hash/session_hash digests; readable by its owner only, never granted';
-- gen_random_uuid() draws from pg_strong_random: 2 x 122 random bits.
INSERT INTO analyst_opaque_key (id, key)
VALUES (1, uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()));
ALTER TABLE analyst_opaque_key OWNER TO finpass_owner;
REVOKE ALL ON analyst_opaque_key FROM PUBLIC;

-- Free-text masking -------------------------------------------------------------------------------
CREATE FUNCTION analyst.mask_personal(p_text TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT regexp_replace(regexp_replace(regexp_replace(regexp_replace(regexp_replace(
        p_text,
        'did:[a-z0-9]+:[A-Za-z0-9._%:-]*[A-Za-z0-9._%-]', '[did]', 'g'),
        '[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+', '[email]', 'g'),
        'eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*', '[jwt]', 'g'),
        '\m\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\M', '[ip]', 'g'),
        '\+\d[\d ()./-]{5,}\d', '[phone]', 'g')
$$;
COMMENT ON FUNCTION analyst.mask_personal(TEXT) IS
    'Free text with anything shaped like a DID, e-mail, JWT, IPv4 address or +international '
    'phone number replaced by [did], [email], [jwt], [ip], [phone]; the views pass reasons, '
    'descriptions and audit JSON through it';

-- audit_events.details carries the event's unknown data fields verbatim under "extra": whatever
-- an upstream service sends. Analysts get their names only. Text that is not JSON is masked.
CREATE FUNCTION analyst.mask_details(p_details TEXT) RETURNS TEXT
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    v JSONB;
BEGIN
    IF p_details IS NULL THEN
        RETURN NULL;
    END IF;
    BEGIN
        v := p_details::jsonb;
    EXCEPTION WHEN invalid_text_representation THEN
        RETURN analyst.mask_personal(p_details);
    END;
    IF jsonb_typeof(v) = 'object' AND jsonb_typeof(v -> 'extra') = 'object' THEN
        v := (v - 'extra') || jsonb_build_object('extra_fields', (
            SELECT jsonb_agg(k ORDER BY k) FROM jsonb_object_keys(v -> 'extra') AS k));
    END IF;
    RETURN analyst.mask_personal(v::text);
END
$$;
COMMENT ON FUNCTION analyst.mask_details(TEXT) IS
    'Audit details JSON for analysts: the event''s unknown fields ("extra") reduced to their '
    'names (extra_fields), the rest through analyst.mask_personal';

-- Views ------------------------------------------------------------------------------------------
DROP VIEW analyst.users;
DROP VIEW analyst.credentials;

CREATE VIEW analyst.users AS
SELECT u.user_id_hash, u.status::text AS status, u.kyc_verified, u.kyc_verified_at,
       u.created_at, u.last_seen, u.updated_at,
       u.email IS NOT NULL AS has_email, u.phone IS NOT NULL AS has_phone
FROM public.users AS u;

-- No join (V10's view joined credential_status): after PostgreSQL removes an unused LEFT JOIN
-- the join column is still fetched, which rules out the index-only scan credential_statistics
-- relies on. The status row is its own view.
CREATE VIEW analyst.credentials AS
SELECT c.id, c.user_id_hash, c.subject_id_hash, c.issuer_id, c.credential_type,
       c.status::text AS status, c.issued_at, c.expires_at, c.revoked_at,
       analyst.mask_personal(c.revocation_reason) AS revocation_reason, c.credential_hash,
       c.proof_type, c.created_at, c.updated_at
FROM public.credentials AS c;

CREATE VIEW analyst.credential_status AS
SELECT s.credential_id, s.status::text AS status, analyst.mask_personal(s.reason) AS reason,
       s.status_changed_at, s.created_at, s.updated_at
FROM public.credential_status AS s;

CREATE VIEW analyst.payments AS
SELECT p.id, p.payer_id_hash, p.payee_id_hash, p.amount, p.currency::text AS currency,
       p.status::text AS status, p.payment_type::text AS payment_type, p.payment_method,
       p.fee_amount, p.tax_amount, p.total_amount, p.created_at, p.authorized_at,
       p.captured_at, p.failed_at, p.refunded_at, p.completed_at, p.updated_at,
       analyst.mask_personal(p.failure_reason) AS failure_reason,
       analyst.mask_personal(p.refund_reason) AS refund_reason
FROM public.payments AS p;

-- The digests use scalar subqueries for the key: computed only when a query names the column.
CREATE VIEW analyst.audit_events AS
SELECT a.id, a.audit_seq, a.event_id, a.event_type::text AS event_type, a.user_id_hash,
       CASE WHEN a.session_id IS NOT NULL THEN encode(sha256(
           (SELECT k.key FROM public.analyst_opaque_key AS k) || sha256(
           (SELECT k.key FROM public.analyst_opaque_key AS k)
           || convert_to('session:' || a.session_id, 'UTF8'))), 'hex') END AS session_hash,
       CASE WHEN a.ip_address IS NOT NULL THEN encode(sha256(
           (SELECT k.key FROM public.analyst_opaque_key AS k) || sha256(
           (SELECT k.key FROM public.analyst_opaque_key AS k)
           || convert_to('ip:' || a.ip_address, 'UTF8'))), 'hex') END AS ip_hash,
       a.tenant_id::text AS tenant_id, a.resource_type::text AS resource_type,
       CASE a.resource_type
           WHEN 'USER' THEN a.user_id_hash::text
           WHEN 'SESSION' THEN CASE WHEN a.resource_id IS NOT NULL THEN encode(sha256(
               (SELECT k.key FROM public.analyst_opaque_key AS k) || sha256(
               (SELECT k.key FROM public.analyst_opaque_key AS k)
               || convert_to('session:' || a.resource_id, 'UTF8'))), 'hex') END
           ELSE analyst.mask_personal(a.resource_id) END AS resource_id,
       a.action::text AS action, a.outcome::text AS outcome, a.severity::text AS severity,
       analyst.mask_personal(a.description) AS description,
       analyst.mask_details(a.details) AS details,
       analyst.mask_personal(a.previous_values) AS previous_values,
       analyst.mask_personal(a.new_values) AS new_values,
       a.performed_by::text AS performed_by, a.performed_by_role::text AS performed_by_role,
       a.source_system::text AS source_system, a.correlation_id::text AS correlation_id,
       a.request_id::text AS request_id, a.duration_ms, a.error_code::text AS error_code,
       analyst.mask_personal(a.error_message) AS error_message,
       a.client_version::text AS client_version, a.api_version::text AS api_version,
       a.compliance_flags::text AS compliance_flags, a.retention_days, a.created_at,
       a.occurred_at, a.hash_key_id::text AS hash_key_id, a.chain_id, a.chain_seq, a.row_hash
FROM public.audit_events AS a;

-- Rollup of IP bursts: digests instead of addresses ---------------------------------------------
ALTER TABLE analyst.ip_bursts RENAME COLUMN ip_address TO ip_hash;
UPDATE analyst.ip_bursts AS b
SET ip_hash = encode(sha256(k.key || sha256(k.key || convert_to('ip:' || b.ip_hash, 'UTF8'))),
                     'hex')
FROM public.analyst_opaque_key AS k;

-- Reports ----------------------------------------------------------------------------------------
-- Return types change (DID columns become pseudonyms): drop and recreate. The bodies are string
-- literals that read analyst.* views only.
DROP FUNCTION analyst.users_kyc_verified(TIMESTAMPTZ, TIMESTAMPTZ, INTEGER);
DROP FUNCTION analyst.users_inactive(TIMESTAMPTZ, TEXT, INTEGER);
DROP FUNCTION analyst.search_users(TEXT, INTEGER);
DROP FUNCTION analyst.credentials_expired(INTEGER);
DROP FUNCTION analyst.credentials_expiring(INTEGER, INTEGER);
DROP FUNCTION analyst.credentials_needing_renewal(INTEGER, INTEGER, INTEGER);
DROP FUNCTION analyst.payments_needing_attention(INTEGER, INTEGER, INTEGER);
DROP FUNCTION analyst.high_value_payments(NUMERIC, TIMESTAMPTZ, TIMESTAMPTZ, TEXT, INTEGER);
DROP FUNCTION analyst.suspicious_activity(TIMESTAMPTZ, TIMESTAMPTZ, INTEGER, INTEGER, INTEGER);
DROP FUNCTION analyst.user_timeline(TEXT, TIMESTAMPTZ, TIMESTAMPTZ, INTEGER);
DROP FUNCTION analyst.correlation_trail(TEXT);
DROP FUNCTION analyst.ip_bursts_between(TIMESTAMPTZ, TIMESTAMPTZ, INTEGER);

-- Raw IPs are grouped through idx_audit_events_ip_created as before; only the digest leaves.
CREATE FUNCTION analyst.ip_bursts_between(p_from TIMESTAMPTZ, p_to TIMESTAMPTZ, p_min INTEGER)
RETURNS TABLE (ip_hash TEXT, minute TIMESTAMPTZ, events BIGINT, users BIGINT,
               first_at TIMESTAMPTZ, last_at TIMESTAMPTZ)
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT encode(sha256(k.key || sha256(k.key || convert_to('ip:' || h.ip_address, 'UTF8'))),
                  'hex'),
           m.minute, m.events, m.users, m.first_at, m.last_at
    FROM public.analyst_opaque_key AS k
    CROSS JOIN (SELECT i.ip_address::text AS ip_address
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

CREATE OR REPLACE FUNCTION analyst.refresh_rollups(p_full BOOLEAN DEFAULT false)
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
        INSERT INTO analyst.ip_bursts (day, ip_hash, minute, events, users, first_at, last_at)
        SELECT (v_day AT TIME ZONE 'UTC')::date, b.ip_hash, b.minute, b.events, b.users,
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
RETURNS TABLE (user_id_hash TEXT, status TEXT, kyc_verified_at TIMESTAMPTZ,
               created_at TIMESTAMPTZ, last_seen TIMESTAMPTZ)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT u.user_id_hash::text, u.status, u.kyc_verified_at, u.created_at, u.last_seen
    FROM analyst.users AS u
    WHERE u.kyc_verified AND u.kyc_verified_at >= p_from AND u.kyc_verified_at < p_to
    ORDER BY u.kyc_verified_at, u.user_id_hash
    LIMIT p_limit
$$;

CREATE FUNCTION analyst.users_inactive(
    p_since TIMESTAMPTZ, p_status TEXT DEFAULT NULL, p_limit INTEGER DEFAULT 1000)
RETURNS TABLE (user_id_hash TEXT, status TEXT, last_active TIMESTAMPTZ,
               last_seen TIMESTAMPTZ, created_at TIMESTAMPTZ, kyc_verified BOOLEAN)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT u.user_id_hash::text, u.status, COALESCE(u.last_seen, u.created_at), u.last_seen,
           u.created_at, u.kyc_verified
    FROM analyst.users AS u
    WHERE COALESCE(u.last_seen, u.created_at) < p_since
      AND (p_status IS NULL OR u.status = p_status)
    ORDER BY COALESCE(u.last_seen, u.created_at), u.user_id_hash
    LIMIT p_limit
$$;

-- By pseudonym: the whole 64 hex digits (exact) or a prefix of at least 8, both through
-- idx_users_user_id_hash: a prefix q is the range [q, q || 'g') ('g' sorts after every hex
-- digit in C and the usual locales), and LIKE keeps the answer exact. Anything else
-- finds nothing.
CREATE FUNCTION analyst.search_users(p_query TEXT, p_limit INTEGER DEFAULT 50)
RETURNS TABLE (user_id_hash TEXT, status TEXT, kyc_verified BOOLEAN, created_at TIMESTAMPTZ,
               last_seen TIMESTAMPTZ, exact BOOLEAN)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT u.user_id_hash::text, u.status, u.kyc_verified, u.created_at, u.last_seen,
           u.user_id_hash = lower(btrim(p_query))
    FROM analyst.users AS u
    WHERE lower(btrim(p_query)) ~ '^[0-9a-f]{8,64}$'
      AND u.user_id_hash >= lower(btrim(p_query))
      AND u.user_id_hash < lower(btrim(p_query)) || 'g'
      AND u.user_id_hash LIKE lower(btrim(p_query)) || '%'
    ORDER BY 6 DESC, u.user_id_hash
    LIMIT p_limit
$$;

CREATE OR REPLACE FUNCTION analyst.user_statistics(p_active_days INTEGER DEFAULT 30)
RETURNS TABLE (status TEXT, users BIGINT, kyc_verified BIGINT, kyc_rate NUMERIC,
               active_recently BIGINT, registered_recently BIGINT)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN grouping(u.status) = 1 THEN 'ALL' ELSE u.status END,
           count(*),
           count(*) FILTER (WHERE u.kyc_verified),
           round(count(*) FILTER (WHERE u.kyc_verified)::numeric / count(*), 4),
           count(*) FILTER (WHERE u.last_seen >= now() - make_interval(days => p_active_days)),
           count(*) FILTER (WHERE u.created_at >= now() - make_interval(days => p_active_days))
    FROM analyst.users AS u
    GROUP BY ROLLUP (u.status)
    ORDER BY grouping(u.status), u.status
$$;

CREATE FUNCTION analyst.credentials_expired(p_limit INTEGER DEFAULT 1000)
RETURNS TABLE (credential_id UUID, user_id_hash TEXT, issuer_id TEXT, credential_type TEXT,
               status TEXT, issued_at TIMESTAMPTZ, expires_at TIMESTAMPTZ)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT x.id, x.user_id_hash, x.issuer_id, x.credential_type, x.status, x.issued_at,
           x.expires_at
    FROM (
        (SELECT c.id, c.user_id_hash::text AS user_id_hash, c.issuer_id, c.credential_type,
                c.status, c.issued_at, c.expires_at
         FROM analyst.credentials AS c
         WHERE c.expires_at < now()
         ORDER BY c.expires_at DESC
         LIMIT p_limit)
        UNION ALL
        (SELECT c.id, c.user_id_hash::text, c.issuer_id, c.credential_type, c.status,
                c.issued_at, c.expires_at
         FROM analyst.credentials AS c
         WHERE c.status = 'EXPIRED' AND c.expires_at >= now()
         ORDER BY c.expires_at DESC
         LIMIT p_limit)
        UNION ALL
        (SELECT c.id, c.user_id_hash::text, c.issuer_id, c.credential_type, c.status,
                c.issued_at, c.expires_at
         FROM analyst.credentials AS c
         WHERE c.status = 'EXPIRED' AND c.expires_at IS NULL
         LIMIT p_limit)
    ) AS x
    ORDER BY x.expires_at DESC NULLS LAST, x.id
    LIMIT p_limit
$$;

CREATE FUNCTION analyst.credentials_expiring(p_days INTEGER DEFAULT 30,
                                             p_limit INTEGER DEFAULT 1000)
RETURNS TABLE (credential_id UUID, user_id_hash TEXT, issuer_id TEXT, credential_type TEXT,
               issued_at TIMESTAMPTZ, expires_at TIMESTAMPTZ)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT c.id, c.user_id_hash::text, c.issuer_id, c.credential_type, c.issued_at,
           c.expires_at
    FROM analyst.credentials AS c
    WHERE c.status = 'VALID' AND c.expires_at >= now()
      AND c.expires_at < now() + make_interval(days => p_days)
    ORDER BY c.expires_at, c.id
    LIMIT p_limit
$$;

CREATE FUNCTION analyst.credentials_needing_renewal(
    p_days INTEGER DEFAULT 30, p_max_age_days INTEGER DEFAULT 365, p_limit INTEGER DEFAULT 1000)
RETURNS TABLE (credential_id UUID, user_id_hash TEXT, issuer_id TEXT, credential_type TEXT,
               issued_at TIMESTAMPTZ, expires_at TIMESTAMPTZ, renew_by TIMESTAMPTZ,
               reason TEXT)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT c.id, c.user_id_hash::text, c.issuer_id, c.credential_type, c.issued_at,
           c.expires_at,
           LEAST(c.expires_at, c.issued_at + make_interval(days => p_max_age_days)),
           CASE
               WHEN c.expires_at < now() + make_interval(days => p_days)
                    AND c.issued_at < now() - make_interval(days => p_max_age_days)
                   THEN 'EXPIRING_AND_OLD'
               WHEN c.expires_at < now() + make_interval(days => p_days) THEN 'EXPIRING'
               ELSE 'OLD'
           END
    FROM analyst.credentials AS c
    WHERE c.id IN (
        (SELECT e.id FROM analyst.credentials AS e
         WHERE e.status = 'VALID' AND e.expires_at < now() + make_interval(days => p_days)
         ORDER BY e.expires_at
         LIMIT p_limit)
        UNION
        (SELECT o.id FROM analyst.credentials AS o
         WHERE o.status = 'VALID'
           AND o.issued_at < now() - make_interval(days => p_max_age_days)
         ORDER BY o.issued_at
         LIMIT p_limit))
    ORDER BY 7, c.id
    LIMIT p_limit
$$;

CREATE OR REPLACE FUNCTION analyst.credential_statistics()
RETURNS TABLE (dimension TEXT, value TEXT, credentials BIGINT, valid BIGINT, suspended BIGINT,
               revoked BIGINT, expired BIGINT)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN grouping(c.status) = 0 THEN 'status'
                WHEN grouping(c.credential_type) = 0 THEN 'type'
                ELSE 'issuer' END,
           CASE WHEN grouping(c.status) = 0 THEN c.status
                WHEN grouping(c.credential_type) = 0 THEN c.credential_type
                ELSE c.issuer_id END,
           count(*),
           count(*) FILTER (WHERE c.status = 'VALID'),
           count(*) FILTER (WHERE c.status = 'SUSPENDED'),
           count(*) FILTER (WHERE c.status = 'REVOKED'),
           count(*) FILTER (WHERE c.status = 'EXPIRED')
    FROM analyst.credentials AS c
    GROUP BY GROUPING SETS ((c.status), (c.credential_type), (c.issuer_id))
    ORDER BY 1, 3 DESC, 2
$$;

CREATE FUNCTION analyst.payments_needing_attention(
    p_stuck_hours INTEGER DEFAULT 24, p_failed_hours INTEGER DEFAULT 24,
    p_limit INTEGER DEFAULT 1000)
RETURNS TABLE (payment_id UUID, reason TEXT, status TEXT, amount NUMERIC, currency TEXT,
               created_at TIMESTAMPTZ, authorized_at TIMESTAMPTZ, failed_at TIMESTAMPTZ,
               failure_reason TEXT, payer_id_hash TEXT)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT x.id, x.reason, x.status, x.amount, x.currency, x.created_at, x.authorized_at,
           x.failed_at, x.failure_reason, x.payer_id_hash
    FROM (
        (SELECT p.id, 'STUCK_' || p.status AS reason, p.status, p.amount, p.currency,
                p.created_at, p.authorized_at, p.failed_at, p.failure_reason,
                p.payer_id_hash::text AS payer_id_hash,
                extract(epoch FROM p.created_at) AS sort_key
         FROM analyst.payments AS p
         WHERE p.status IN ('PENDING', 'AUTHORIZED')
           AND p.created_at < now() - make_interval(hours => p_stuck_hours)
         ORDER BY p.created_at
         LIMIT p_limit)
        UNION ALL
        (SELECT p.id, 'FAILED_RECENTLY', p.status, p.amount, p.currency, p.created_at,
                p.authorized_at, p.failed_at, p.failure_reason, p.payer_id_hash::text,
                -extract(epoch FROM p.failed_at)
         FROM analyst.payments AS p
         WHERE p.status = 'FAILED' AND p.failed_at >= now() - make_interval(hours => p_failed_hours)
         ORDER BY p.failed_at DESC
         LIMIT p_limit)
    ) AS x
    ORDER BY x.reason DESC, x.sort_key, x.id
    LIMIT p_limit
$$;

CREATE OR REPLACE FUNCTION analyst.payment_analytics(
    p_from TIMESTAMPTZ, p_to TIMESTAMPTZ DEFAULT now(), p_currency TEXT DEFAULT NULL)
RETURNS TABLE (day DATE, status TEXT, currency TEXT, payments BIGINT, amount NUMERIC,
               total_amount NUMERIC)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT (p.created_at AT TIME ZONE 'UTC')::date, p.status, p.currency, count(*),
           sum(p.amount), sum(p.total_amount)
    FROM analyst.payments AS p
    WHERE p.created_at >= p_from AND p.created_at < p_to
      AND (p_currency IS NULL OR p.currency = p_currency)
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
$$;

CREATE OR REPLACE FUNCTION analyst.captured_totals(
    p_from TIMESTAMPTZ, p_to TIMESTAMPTZ DEFAULT now(), p_currency TEXT DEFAULT NULL)
RETURNS TABLE (currency TEXT, payments BIGINT, amount NUMERIC, fees NUMERIC, taxes NUMERIC,
               total_amount NUMERIC)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT p.currency, count(*), sum(p.amount), COALESCE(sum(p.fee_amount), 0),
           COALESCE(sum(p.tax_amount), 0), sum(p.total_amount)
    FROM analyst.payments AS p
    WHERE p.status = 'CAPTURED' AND p.captured_at >= p_from AND p.captured_at < p_to
      AND (p_currency IS NULL OR p.currency = p_currency)
    GROUP BY 1
    ORDER BY 1
$$;

CREATE FUNCTION analyst.high_value_payments(
    p_threshold NUMERIC, p_from TIMESTAMPTZ, p_to TIMESTAMPTZ DEFAULT now(),
    p_currency TEXT DEFAULT NULL, p_limit INTEGER DEFAULT 1000)
RETURNS TABLE (payment_id UUID, amount NUMERIC, currency TEXT, status TEXT,
               payment_type TEXT, created_at TIMESTAMPTZ, payer_id_hash TEXT,
               payee_id_hash TEXT)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT p.id, p.amount, p.currency, p.status, p.payment_type, p.created_at,
           p.payer_id_hash::text, p.payee_id_hash::text
    FROM analyst.payments AS p
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
        SELECT r.ip_hash, r.events, r.users, r.first_at, r.last_at
        FROM analyst.ip_bursts AS r
        WHERE r.day >= (SELECT (b.lo AT TIME ZONE 'UTC')::date FROM b)
          AND r.day < (SELECT (b.hi AT TIME ZONE 'UTC')::date FROM b)
          AND r.events >= p_burst_per_minute
        UNION ALL
        SELECT x.ip_hash, x.events, x.users, x.first_at, x.last_at
        FROM b CROSS JOIN LATERAL analyst.ip_bursts_between(
            p_from, LEAST(p_to, b.lo), p_burst_per_minute) AS x
        UNION ALL
        SELECT x.ip_hash, x.events, x.users, x.first_at, x.last_at
        FROM b CROSS JOIN LATERAL analyst.ip_bursts_between(
            GREATEST(p_from, b.hi), p_to, p_burst_per_minute) AS x
    )
    SELECT x.kind, x.subject, x.events, x.distinct_counterparts, x.first_at, x.last_at
    FROM (
        SELECT 'LOGIN_FAILURES' AS kind, f.user_id_hash::text AS subject, count(*) AS events,
               count(DISTINCT f.ip_hash) AS distinct_counterparts,
               min(f.created_at) AS first_at, max(f.created_at) AS last_at
        FROM analyst.audit_events AS f
        WHERE f.event_type = 'AUTH_LOGIN_FAILED' AND f.user_id_hash IS NOT NULL
          AND f.created_at >= p_from AND f.created_at < p_to
        GROUP BY f.user_id_hash
        HAVING count(*) >= p_min_failures
        UNION ALL
        SELECT 'REJECTED', r.user_id_hash::text, count(*), count(DISTINCT r.event_type),
               min(r.created_at), max(r.created_at)
        FROM analyst.audit_events AS r
        WHERE r.outcome = 'REJECTED' AND r.created_at >= p_from AND r.created_at < p_to
        GROUP BY r.user_id_hash
        UNION ALL
        SELECT 'IP_BURST', u.ip_hash, sum(u.events)::bigint, max(u.users), min(u.first_at),
               max(u.last_at)
        FROM bursts AS u
        GROUP BY u.ip_hash
    ) AS x
    ORDER BY x.kind, x.events DESC, x.subject
    LIMIT p_limit
$$;

CREATE OR REPLACE FUNCTION analyst.compliance_report(
    p_from TIMESTAMPTZ, p_to TIMESTAMPTZ DEFAULT now())
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
        SELECT a.event_type, a.severity, a.outcome, 1
        FROM analyst.audit_events AS a
        WHERE a.created_at >= p_from
          AND a.created_at < LEAST(p_to, (SELECT lo FROM bounds))
        UNION ALL
        SELECT a.event_type, a.severity, a.outcome, 1
        FROM analyst.audit_events AS a
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
               correlation_id TEXT, session_hash TEXT, ip_hash TEXT, description TEXT)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT a.created_at, a.occurred_at, a.event_type, a.action, a.outcome, a.severity,
           a.resource_type, a.resource_id, a.correlation_id, a.session_hash, a.ip_hash,
           a.description
    FROM analyst.audit_events AS a
    WHERE a.user_id_hash = p_user_hash AND a.created_at >= p_from AND a.created_at < p_to
    ORDER BY a.audit_seq
    LIMIT p_limit
$$;

-- USER rows join the user by pseudonym (the audit row's subject is that user).
CREATE FUNCTION analyst.correlation_trail(p_correlation_id TEXT)
RETURNS TABLE (created_at TIMESTAMPTZ, occurred_at TIMESTAMPTZ, event_type TEXT, action TEXT,
               outcome TEXT, severity TEXT, user_id_hash TEXT, resource_type TEXT,
               resource_id TEXT, resource_found BOOLEAN, resource_status TEXT, amount NUMERIC,
               currency TEXT, credential_type TEXT, issuer_id TEXT)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT a.created_at, a.occurred_at, a.event_type, a.action, a.outcome, a.severity,
           a.user_id_hash::text, a.resource_type, a.resource_id,
           COALESCE(p.id::text, c.id::text, u.user_id_hash) IS NOT NULL,
           COALESCE(p.status, c.status, u.status),
           p.amount, p.currency, c.credential_type, c.issuer_id
    FROM analyst.audit_events AS a
    CROSS JOIN LATERAL (
        SELECT CASE WHEN a.resource_type IN ('PAYMENT', 'CREDENTIAL')
                     AND a.resource_id ~* '^[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}$'
                    THEN a.resource_id::uuid END AS rid
    ) AS r
    LEFT JOIN analyst.payments AS p ON a.resource_type = 'PAYMENT' AND p.id = r.rid
    LEFT JOIN analyst.credentials AS c ON a.resource_type = 'CREDENTIAL' AND c.id = r.rid
    LEFT JOIN analyst.users AS u ON a.resource_type = 'USER' AND u.user_id_hash = a.user_id_hash
    WHERE a.correlation_id = p_correlation_id
    ORDER BY a.audit_seq
$$;

-- Comments: the data dictionary (docs/analyst.md) is generated from these ----------------------
COMMENT ON SCHEMA analyst IS
    'Analyst reports and pseudonymous views (finpass-pipeline report --list); readable by role '
    'finpass_analyst, which can read nothing else';

COMMENT ON VIEW analyst.users IS
    'One row per user, identified only by the keyed pseudonym of the DID; no DID, email or phone';
COMMENT ON COLUMN analyst.users.user_id_hash IS
    'Keyed pseudonym of the DID (HMAC-SHA-256, 64 hex) = audit_events.user_id_hash; NULL for a '
    'row written before V15 and not yet backfilled';
COMMENT ON COLUMN analyst.users.status IS 'ACTIVE, SUSPENDED or TERMINATED';
COMMENT ON COLUMN analyst.users.kyc_verified IS 'Whether KYC was verified';
COMMENT ON COLUMN analyst.users.kyc_verified_at IS 'When KYC was verified (UTC)';
COMMENT ON COLUMN analyst.users.created_at IS 'Registration time (the event''s occurred_at)';
COMMENT ON COLUMN analyst.users.last_seen IS 'Latest user.seen / login; never moves backwards';
COMMENT ON COLUMN analyst.users.updated_at IS 'Time of the latest change to the row';
COMMENT ON COLUMN analyst.users.has_email IS 'Whether an e-mail address is on file (not which)';
COMMENT ON COLUMN analyst.users.has_phone IS 'Whether a phone number is on file (not which)';

COMMENT ON VIEW analyst.credentials IS
    'Credentials; the holder and subject only as pseudonyms, no JWT (status row: '
    'analyst.credential_status)';
COMMENT ON COLUMN analyst.credentials.id IS 'Credential id (credential_id of the events)';
COMMENT ON COLUMN analyst.credentials.user_id_hash IS
    'Pseudonym of the holder (= analyst.users.user_id_hash)';
COMMENT ON COLUMN analyst.credentials.subject_id_hash IS
    'Pseudonym of the credential''s subject_did, when the credential names one';
COMMENT ON COLUMN analyst.credentials.issuer_id IS 'Issuer identifier (an organisation''s DID)';
COMMENT ON COLUMN analyst.credentials.credential_type IS 'Credential type, e.g. KYC, AGE';
COMMENT ON COLUMN analyst.credentials.status IS 'VALID, SUSPENDED, REVOKED or EXPIRED';
COMMENT ON COLUMN analyst.credentials.issued_at IS 'Issue time';
COMMENT ON COLUMN analyst.credentials.expires_at IS 'Expiry time; NULL: none given';
COMMENT ON COLUMN analyst.credentials.revoked_at IS 'Revocation time';
COMMENT ON COLUMN analyst.credentials.revocation_reason IS
    'Revocation reason, personal data masked (analyst.mask_personal)';
COMMENT ON COLUMN analyst.credentials.credential_hash IS 'SHA-256 hex of the credential JWT';
COMMENT ON COLUMN analyst.credentials.proof_type IS 'Proof type, e.g. JsonWebSignature2020';
COMMENT ON COLUMN analyst.credentials.created_at IS 'Time the row was written (issue event)';
COMMENT ON COLUMN analyst.credentials.updated_at IS 'Time of the latest change to the row';
COMMENT ON VIEW analyst.credential_status IS
    'The status row of each credential (one per credential): latest change and its reason';
COMMENT ON COLUMN analyst.credential_status.credential_id IS '= analyst.credentials.id';
COMMENT ON COLUMN analyst.credential_status.status IS 'VALID, SUSPENDED, REVOKED or EXPIRED';
COMMENT ON COLUMN analyst.credential_status.reason IS
    'Reason of the latest status change, personal data masked';
COMMENT ON COLUMN analyst.credential_status.status_changed_at IS
    'Time of the latest status change';
COMMENT ON COLUMN analyst.credential_status.created_at IS 'Time the row was written';
COMMENT ON COLUMN analyst.credential_status.updated_at IS 'Time of the latest change to the row';

COMMENT ON VIEW analyst.payments IS
    'Payments with payer and payee as pseudonyms; no DIDs, references, descriptions or tokens';
COMMENT ON COLUMN analyst.payments.id IS 'Payment id (payment_id of the events)';
COMMENT ON COLUMN analyst.payments.payer_id_hash IS
    'Pseudonym of the payer''s DID (joins analyst.users.user_id_hash)';
COMMENT ON COLUMN analyst.payments.payee_id_hash IS
    'Pseudonym of the payee''s DID (joins analyst.users.user_id_hash when the payee is a user)';
COMMENT ON COLUMN analyst.payments.amount IS 'Amount in currency (NUMERIC(18,2))';
COMMENT ON COLUMN analyst.payments.currency IS 'ISO 4217 code';
COMMENT ON COLUMN analyst.payments.status IS
    'PENDING, AUTHORIZED, CAPTURED, FAILED, REFUNDED or CANCELLED';
COMMENT ON COLUMN analyst.payments.payment_type IS 'ONE_TIME, RECURRING or SUBSCRIPTION';
COMMENT ON COLUMN analyst.payments.payment_method IS 'Payment method as sent, e.g. CARD';
COMMENT ON COLUMN analyst.payments.fee_amount IS 'Fee; NULL: none';
COMMENT ON COLUMN analyst.payments.tax_amount IS 'Tax; NULL: none';
COMMENT ON COLUMN analyst.payments.total_amount IS 'amount + fee + tax';
COMMENT ON COLUMN analyst.payments.created_at IS 'Initiation time';
COMMENT ON COLUMN analyst.payments.authorized_at IS 'Authorisation time';
COMMENT ON COLUMN analyst.payments.captured_at IS 'Capture time';
COMMENT ON COLUMN analyst.payments.failed_at IS 'Failure time';
COMMENT ON COLUMN analyst.payments.refunded_at IS 'Refund time';
COMMENT ON COLUMN analyst.payments.completed_at IS 'Completion time (= captured_at)';
COMMENT ON COLUMN analyst.payments.updated_at IS 'Time of the latest change to the row';
COMMENT ON COLUMN analyst.payments.failure_reason IS 'Failure reason, personal data masked';
COMMENT ON COLUMN analyst.payments.refund_reason IS 'Refund reason, personal data masked';

COMMENT ON VIEW analyst.audit_events IS
    'The audit log without IP address, user agent, device fingerprint, geolocation or stack '
    'trace; sessions and IPs as opaque digests, free text masked';
COMMENT ON COLUMN analyst.audit_events.id IS 'Row id (the source event_id for pipeline rows)';
COMMENT ON COLUMN analyst.audit_events.audit_seq IS 'Commit order across the whole log';
COMMENT ON COLUMN analyst.audit_events.event_id IS 'The event that caused the row';
COMMENT ON COLUMN analyst.audit_events.event_type IS 'e.g. PAYMENT_CAPTURED';
COMMENT ON COLUMN analyst.audit_events.user_id_hash IS
    'Keyed pseudonym of the subject''s DID (= analyst.users.user_id_hash)';
COMMENT ON COLUMN analyst.audit_events.session_hash IS
    'Opaque keyed digest of the session id (groups rows of one session; not reversible)';
COMMENT ON COLUMN analyst.audit_events.ip_hash IS
    'Opaque keyed digest of the IP address (groups rows of one address; not reversible)';
COMMENT ON COLUMN analyst.audit_events.tenant_id IS 'Tenant, when the event names one';
COMMENT ON COLUMN analyst.audit_events.resource_type IS
    'USER, SESSION, CREDENTIAL, PAYMENT, DEAD_LETTER';
COMMENT ON COLUMN analyst.audit_events.resource_id IS
    'The row touched: payment/credential id; for USER the user''s pseudonym; for SESSION the '
    'session digest';
COMMENT ON COLUMN analyst.audit_events.action IS 'CREATE, UPDATE, LOGIN, ...';
COMMENT ON COLUMN analyst.audit_events.outcome IS 'SUCCESS, FAILURE or REJECTED';
COMMENT ON COLUMN analyst.audit_events.severity IS 'INFO, WARNING, ERROR or CRITICAL';
COMMENT ON COLUMN analyst.audit_events.description IS 'What happened, personal data masked';
COMMENT ON COLUMN analyst.audit_events.details IS
    'JSON details: unknown event fields by name only (extra_fields), personal data masked';
COMMENT ON COLUMN analyst.audit_events.previous_values IS 'JSON before, personal data masked';
COMMENT ON COLUMN analyst.audit_events.new_values IS 'JSON after, personal data masked';
COMMENT ON COLUMN analyst.audit_events.performed_by IS 'Pseudonym of the actor''s DID';
COMMENT ON COLUMN analyst.audit_events.performed_by_role IS 'The actor''s role, e.g. USER';
COMMENT ON COLUMN analyst.audit_events.source_system IS 'The upstream service';
COMMENT ON COLUMN analyst.audit_events.correlation_id IS 'Correlation id of the request';
COMMENT ON COLUMN analyst.audit_events.request_id IS 'Request id, when given';
COMMENT ON COLUMN analyst.audit_events.duration_ms IS 'Duration, when given';
COMMENT ON COLUMN analyst.audit_events.error_code IS 'e.g. INVALID_TRANSITION, LOGIN_FAILED';
COMMENT ON COLUMN analyst.audit_events.error_message IS 'Error text, personal data masked';
COMMENT ON COLUMN analyst.audit_events.client_version IS 'Client version, when given';
COMMENT ON COLUMN analyst.audit_events.api_version IS 'API version, when given';
COMMENT ON COLUMN analyst.audit_events.compliance_flags IS 'Compliance flags, when given';
COMMENT ON COLUMN analyst.audit_events.retention_days IS 'Days the row is kept';
COMMENT ON COLUMN analyst.audit_events.created_at IS 'Recording time (UTC)';
COMMENT ON COLUMN analyst.audit_events.occurred_at IS 'Domain time of the event';
COMMENT ON COLUMN analyst.audit_events.hash_key_id IS 'Id of the key that made the pseudonyms';
COMMENT ON COLUMN analyst.audit_events.chain_id IS 'Hash chain (source topic-partition)';
COMMENT ON COLUMN analyst.audit_events.chain_seq IS 'Position in the chain';
COMMENT ON COLUMN analyst.audit_events.row_hash IS 'Hash of the row and its predecessor';

COMMENT ON COLUMN analyst.rollup_state.name IS 'audit_daily or ip_bursts';
COMMENT ON COLUMN analyst.rollup_state.covered_until IS
    'UTC midnight: whole days before it are in the rollup';
COMMENT ON COLUMN analyst.rollup_state.refreshed_at IS 'Time of the latest refresh';
COMMENT ON COLUMN analyst.audit_daily.day IS 'UTC day of created_at';
COMMENT ON COLUMN analyst.audit_daily.event_type IS 'Audit event_type';
COMMENT ON COLUMN analyst.audit_daily.severity IS 'Audit severity';
COMMENT ON COLUMN analyst.audit_daily.outcome IS 'Audit outcome';
COMMENT ON COLUMN analyst.audit_daily.events IS 'Rows';
COMMENT ON TABLE analyst.ip_bursts IS
    'Per UTC day: each clock minute with >= 10 audit events from one IP (as ip_hash; the floor: '
    'a report asking for fewer per minute counts live)';
COMMENT ON COLUMN analyst.ip_bursts.day IS 'UTC day';
COMMENT ON COLUMN analyst.ip_bursts.ip_hash IS
    'Opaque keyed digest of the IP address (= analyst.audit_events.ip_hash)';
COMMENT ON COLUMN analyst.ip_bursts.minute IS 'Start of the clock minute';
COMMENT ON COLUMN analyst.ip_bursts.events IS 'Audit rows from that address in the minute';
COMMENT ON COLUMN analyst.ip_bursts.users IS 'Distinct user pseudonyms among them';
COMMENT ON COLUMN analyst.ip_bursts.first_at IS 'First row of the minute';
COMMENT ON COLUMN analyst.ip_bursts.last_at IS 'Last row of the minute';

COMMENT ON FUNCTION analyst.rollup_window(TEXT, TIMESTAMPTZ, TIMESTAMPTZ) IS
    'Helper: [lo, hi), the whole UTC days of [from, to) that a rollup covers';
COMMENT ON FUNCTION analyst.ip_bursts_between(TIMESTAMPTZ, TIMESTAMPTZ, INTEGER) IS
    'Helper: clock minutes in [from, to) with >= min events from one IP; returns (ip_hash, '
    'minute, events, users, first_at, last_at). SECURITY DEFINER: groups raw addresses, returns '
    'digests only';
COMMENT ON FUNCTION analyst.refresh_rollups(BOOLEAN) IS
    'Bring the analyst rollups up to the last whole UTC day (incremental; p_full => recompute '
    'all). Run hourly or daily (finpass-pipeline report --refresh-rollups); not for analysts.';
COMMENT ON FUNCTION analyst.users_kyc_verified(TIMESTAMPTZ, TIMESTAMPTZ, INTEGER) IS
    'Report users-kyc-verified: users whose KYC was verified in [from, to), oldest first; '
    'returns (user_id_hash, status, kyc_verified_at, created_at, last_seen)';
COMMENT ON FUNCTION analyst.users_inactive(TIMESTAMPTZ, TEXT, INTEGER) IS
    'Report users-inactive: users with no activity (last_seen, else registration) since '
    'p_since; returns (user_id_hash, status, last_active, last_seen, created_at, kyc_verified)';
COMMENT ON FUNCTION analyst.search_users(TEXT, INTEGER) IS
    'Report users-search: users by pseudonym (64 hex digits exact, or a prefix of >= 8); '
    'returns (user_id_hash, status, kyc_verified, created_at, last_seen, exact)';
COMMENT ON FUNCTION analyst.user_statistics(INTEGER) IS
    'Report users-stats: per status and in total (ALL): users, KYC-verified, KYC rate, active '
    'and registered within p_active_days';
COMMENT ON FUNCTION analyst.credentials_expired(INTEGER) IS
    'Report credentials-expired: past expires_at or marked EXPIRED, latest first; returns '
    '(credential_id, user_id_hash, issuer_id, credential_type, status, issued_at, expires_at)';
COMMENT ON FUNCTION analyst.credentials_expiring(INTEGER, INTEGER) IS
    'Report credentials-expiring: VALID, expiring within p_days, soonest first; returns '
    '(credential_id, user_id_hash, issuer_id, credential_type, issued_at, expires_at)';
COMMENT ON FUNCTION analyst.credentials_needing_renewal(INTEGER, INTEGER, INTEGER) IS
    'Report credentials-renewal: VALID, expiring within p_days or older than p_max_age_days, '
    'by renew_by; returns (credential_id, user_id_hash, issuer_id, credential_type, issued_at, '
    'expires_at, renew_by, reason)';
COMMENT ON FUNCTION analyst.credential_statistics() IS
    'Report credentials-stats: counts by status, by type and by issuer, with the status split';
COMMENT ON FUNCTION analyst.payments_needing_attention(INTEGER, INTEGER, INTEGER) IS
    'Report payments-attention: stuck PENDING/AUTHORIZED and recently FAILED payments; returns '
    '(payment_id, reason, status, amount, currency, created_at, authorized_at, failed_at, '
    'failure_reason, payer_id_hash)';
COMMENT ON FUNCTION analyst.payment_analytics(TIMESTAMPTZ, TIMESTAMPTZ, TEXT) IS
    'Report payments-analytics: per UTC day, status and currency: count, amount, total_amount';
COMMENT ON FUNCTION analyst.captured_totals(TIMESTAMPTZ, TIMESTAMPTZ, TEXT) IS
    'Report payments-captured: CAPTURED by captured_at, per currency: count, amount, fees, '
    'taxes, total';
COMMENT ON FUNCTION analyst.high_value_payments(NUMERIC, TIMESTAMPTZ, TIMESTAMPTZ, TEXT, INTEGER)
    IS 'Report payments-high-value: amount >= p_threshold, largest first; returns (payment_id, '
    'amount, currency, status, payment_type, created_at, payer_id_hash, payee_id_hash)';
COMMENT ON FUNCTION analyst.suspicious_activity(TIMESTAMPTZ, TIMESTAMPTZ, INTEGER, INTEGER,
                                                INTEGER) IS
    'Report audit-suspicious: LOGIN_FAILURES and REJECTED per user_id_hash, IP_BURST per '
    'ip_hash; returns (kind, subject, events, distinct_counterparts, first_at, last_at)';
COMMENT ON FUNCTION analyst.compliance_report(TIMESTAMPTZ, TIMESTAMPTZ) IS
    'Report audit-compliance: audit rows by event_type, severity and outcome (exact)';
COMMENT ON FUNCTION analyst.user_timeline(TEXT, TIMESTAMPTZ, TIMESTAMPTZ, INTEGER) IS
    'Report audit-user-timeline: one user_id_hash''s audit rows in commit order; returns '
    '(created_at, occurred_at, event_type, action, outcome, severity, resource_type, '
    'resource_id, correlation_id, session_hash, ip_hash, description)';
COMMENT ON FUNCTION analyst.correlation_trail(TEXT) IS
    'Report audit-correlation-trail: the audit rows of one correlation_id in commit order, with '
    'the payment, credential or user each touched (found, status, amount, currency, '
    'credential_type, issuer_id)';

-- Ownership (as V10): finpass_owner owns what the views read, so the views run as it ----------
DO $$
DECLARE
    r RECORD;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'finpass_owner') THEN
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

-- Privileges -------------------------------------------------------------------------------------
-- Nothing on the base tables (REVOKE ALL at table level removes the column grants too).
REVOKE ALL ON users, credentials, credential_status, payments, audit_events FROM finpass_analyst;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA analyst FROM PUBLIC;
GRANT SELECT ON ALL TABLES IN SCHEMA analyst TO finpass_analyst;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA analyst TO finpass_analyst;
REVOKE EXECUTE ON FUNCTION analyst.refresh_rollups(BOOLEAN) FROM finpass_analyst;
