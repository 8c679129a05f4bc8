-- V3: what the consumer daemon needs on top of the seed's schema.
--
--   processed_events   the idempotency key: one row per event_id the pipeline has taken (applied,
--                      or parked until its subject arrives). Claimed with INSERT .. ON CONFLICT in
--                      the same transaction as the effect, so a redelivery changes nothing.
--   consumer_offsets   the next Kafka offset per group/topic/partition, written in the same
--                      transaction as the rows: a restart seeks to exactly where the database is.
--   dead_letter_events invalid input, with the reason and the raw bytes (CONTRACT §3).
--   parked_events      valid events whose subject (user, credential, payment) does not exist yet;
--                      applied, in their original order, in the transaction that creates it.
--   audit_events       gains event_id (the source event), occurred_at (domain time) and
--                      hash_key_id (which pseudonym key made user_id_hash / performed_by).

ALTER TABLE audit_events
    ADD COLUMN event_id UUID,
    ADD COLUMN occurred_at TIMESTAMPTZ,
    ADD COLUMN hash_key_id VARCHAR(32);

CREATE INDEX idx_audit_events_event_id ON audit_events(event_id);
CREATE INDEX idx_audit_events_resource ON audit_events(resource_type, resource_id);

CREATE TABLE processed_events (
    event_id UUID PRIMARY KEY,
    event_type VARCHAR(50) NOT NULL,
    topic TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset BIGINT NOT NULL,
    state VARCHAR(10) NOT NULL CONSTRAINT ck_processed_events_state
        CHECK (state IN ('APPLIED', 'PARKED')),
    processed_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE consumer_offsets (
    consumer_group TEXT NOT NULL,
    topic TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    next_offset BIGINT NOT NULL,
    consecutive_dead_letters INTEGER NOT NULL DEFAULT 0,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (consumer_group, topic, kafka_partition)
);

CREATE TABLE dead_letter_events (
    id BIGSERIAL PRIMARY KEY,
    consumer_group TEXT NOT NULL,
    topic TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset BIGINT NOT NULL,
    message_key BYTEA,
    raw_value BYTEA,
    reason TEXT NOT NULL,
    event_id UUID,
    event_type VARCHAR(50),
    dead_lettered_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT uq_dead_letter_events_source UNIQUE (consumer_group, topic, kafka_partition, kafka_offset)
);
CREATE INDEX idx_dead_letter_events_at ON dead_letter_events(dead_lettered_at);

CREATE TABLE parked_events (
    event_id UUID PRIMARY KEY,
    event_type VARCHAR(50) NOT NULL,
    subject_type VARCHAR(20) NOT NULL,
    subject_key TEXT NOT NULL,
    payload BYTEA NOT NULL,
    topic TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset BIGINT NOT NULL,
    occurred_at TIMESTAMPTZ NOT NULL,
    parked_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX idx_parked_events_subject ON parked_events(subject_type, subject_key);
