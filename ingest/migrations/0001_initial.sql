-- Workflows, tasks with typed values, per-request results.

CREATE TABLE workflows (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    public_id   text        NOT NULL UNIQUE,
    -- SHA-256 of the token; the token itself is never stored.
    token_hash  bytea       NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    name        text        NOT NULL,
    version     integer     NOT NULL DEFAULT 1,
    definition  jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tasks (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workflow_id bigint      NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    public_id   text        NOT NULL UNIQUE,
    -- The Unique ID value in canonical text form (the task's public id when the workflow has none).
    unique_key  text        NOT NULL,
    stage       text        NOT NULL,
    assigned_to text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tasks_workflow_unique_key UNIQUE (workflow_id, unique_key)
);
CREATE INDEX tasks_workflow_stage ON tasks (workflow_id, stage);

-- One row per (task, field) that has a value, in a column of the field's own type.
CREATE TABLE task_values (
    task_id        bigint   NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    field_id       integer  NOT NULL,
    number_value   numeric,
    text_value     text,
    date_value     date,
    datetime_value timestamptz,
    boolean_value  boolean,
    list_value     text[],
    PRIMARY KEY (task_id, field_id),
    CONSTRAINT task_values_one_value CHECK (num_nonnulls(
        number_value, text_value, date_value, datetime_value, boolean_value, list_value) = 1)
);

-- The final answer to each task request, written in the same transaction as its effect.
CREATE TABLE request_results (
    request_id   uuid        PRIMARY KEY,
    workflow_id  bigint      NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    http_status  smallint    NOT NULL,
    outcome      text        NOT NULL,
    task_id      bigint      REFERENCES tasks (id) ON DELETE SET NULL,
    -- The response body exactly as answered (json keeps key order; jsonb would not).
    body         json        NOT NULL,
    received_at  timestamptz NOT NULL,
    completed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX request_results_completed_at ON request_results (completed_at);

-- Instance-wide secrets shared by every edge process (signs status URLs).
CREATE TABLE instance_secrets (
    name  text  PRIMARY KEY,
    value bytea NOT NULL
);
INSERT INTO instance_secrets (name, value)
VALUES ('request_id_key', decode(md5(gen_random_uuid()::text) || md5(gen_random_uuid()::text), 'hex'));
