-- Dead letters kept for operators (`ingest dlq list|replay`), and request fingerprints that let an
-- Idempotency-Key retry be told apart from a different request reusing the key.

CREATE TABLE dead_letters (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id  text,
    body        bytea       NOT NULL,
    reason      text        NOT NULL,
    request_ids uuid[]      NOT NULL DEFAULT '{}',
    dead_at     timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE request_results ADD COLUMN fingerprint bytea;
