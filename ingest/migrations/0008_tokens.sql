-- Tokens of workflows (SPEC §8): a workflow may have several, each revocable on its own.
--
-- A token is still kept only as its SHA-256. Its first 8 characters (`prefix`) are kept in clear
-- too, to name it when revoking (a token has 256 random bits; its other 35 characters keep 210 of
-- them secret). Tokens issued before this migration had no prefix kept: theirs is NULL, and they
-- are revoked by giving the whole token, matched by its hash.

CREATE TABLE workflow_tokens (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workflow_id bigint      NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    token_hash  bytea       NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    prefix      text        CHECK (length(prefix) = 8),
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- Also the index of a workflow's tokens (listing them, the cascade of a workflow's delete).
    CONSTRAINT workflow_tokens_prefix UNIQUE (workflow_id, prefix)
);

INSERT INTO workflow_tokens (workflow_id, token_hash, created_at)
SELECT id, token_hash, created_at FROM workflows ORDER BY id;

-- Kept for one release, no longer written: edges of the previous version still read it while a
-- rolling deploy replaces them (dropping it would turn their look-ups into errors). New workflows
-- have none there, so an old edge answers their tokens 404 until it is replaced.
ALTER TABLE workflows ALTER COLUMN token_hash DROP NOT NULL;
