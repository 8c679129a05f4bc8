-- U17: back to V15's analyst.users (flags from the plaintext columns only).

CREATE OR REPLACE VIEW analyst.users AS
SELECT u.user_id_hash, u.status::text AS status, u.kyc_verified, u.kyc_verified_at,
       u.created_at, u.last_seen, u.updated_at,
       u.email IS NOT NULL AS has_email, u.phone IS NOT NULL AS has_phone
FROM public.users AS u;
