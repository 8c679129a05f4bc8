-- Undo of V1: an empty database again (schema_history itself belongs to the runner).
DROP TABLE credential_status;
DROP TABLE credentials;
DROP TABLE users;
