-- V17: analyst.users.has_email / has_phone see the sealed contact columns of V16.
--
-- V15 (analyst surface) and V16 (personal data sealed per person) were written side by side:
-- V15's view asks `users.email IS NOT NULL`, but since V16 the consumer writes only the sealed
-- `email_enc` / `phone_enc` (the plaintext columns stay for rows from before V16 until
-- `privacy seal-legacy`). The flags now read either. Same columns, same types, same comments.

CREATE OR REPLACE VIEW analyst.users AS
SELECT u.user_id_hash, u.status::text AS status, u.kyc_verified, u.kyc_verified_at,
       u.created_at, u.last_seen, u.updated_at,
       (u.email_enc IS NOT NULL OR u.email IS NOT NULL) AS has_email,
       (u.phone_enc IS NOT NULL OR u.phone IS NOT NULL) AS has_phone
FROM public.users AS u;
