-- The ledger of rejections (SPEC §8): what a task or hook route refused (a 4xx), with its cause,
-- recorded off the request path by the edge (ingest/edge/ledger.py, ingest/rejections.py).
-- A new table: nothing to carry over from existing data.

CREATE TABLE rejections (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT now(),
    -- The method and route pattern, never the token-bearing path.
    route          text        NOT NULL,
    -- A rejection goes with its workflow or source: deleted, no token or URL names it any more.
    workflow_id    bigint      REFERENCES workflows (id) ON DELETE CASCADE,
    source_id      bigint      REFERENCES sources (id) ON DELETE CASCADE,
    status         smallint    NOT NULL,
    error          text        NOT NULL,
    message        text,
    -- Shown by the admin API, secrets redacted.
    headers        jsonb       NOT NULL,
    -- The first 64 KiB of the body (NULL: the body was never read), and how many bytes arrived.
    body           bytea,
    body_size      integer,
    -- Hook deliveries only, never shown: the signature headers the redacted `headers` hide, so a
    -- replay can verify the delivery again once its source is fixed.
    signed_headers jsonb,
    -- The request was answered by a worker (its delivery id already keys a stored result).
    reached_worker boolean     NOT NULL DEFAULT false,
    -- Rejections of the same workflow (or source) the recording edge left out, for the ledger's
    -- budget, since the one it recorded before this one: under a flood the ledger keeps a sample.
    unrecorded_before integer  NOT NULL DEFAULT 0
);
-- Retention purges by age; lists page newest first, by workflow, source or status. Without
-- (status, id), a rare status walked the whole table backwards through the primary key.
CREATE INDEX rejections_at ON rejections (at);
CREATE INDEX rejections_workflow ON rejections (workflow_id, id);
CREATE INDEX rejections_source ON rejections (source_id, id);
CREATE INDEX rejections_status ON rejections (status, id);
