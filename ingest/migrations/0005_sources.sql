-- Sources (SPEC §6): webhook senders bound to a workflow, each with its verification, filter and
-- map. A delivery becomes a task request like any other, so sources need no table beyond this one.

CREATE TABLE sources (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Unguessable (256 random bits): the source's URL is the only credential of scheme `none`.
    public_id   text        NOT NULL UNIQUE,
    workflow_id bigint      NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    -- The definition as created (json keeps the order of its map, as its author wrote it). Its
    -- signing secrets are kept as given: verifying an HMAC needs the key itself, so unlike a
    -- workflow token they cannot be stored as a hash.
    definition  json        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sources_workflow ON sources (workflow_id);
