-- What a worker is applying out of a redelivered message, marked before it runs by the worker
-- process (its `owner`): a mark found again by another process says the first one died applying
-- it (see worker/culprits.py). Keys are 'request:<request id>' for a request applied alone and
-- 'message:<message id>' for a message.

CREATE TABLE attempts (
    key        text        PRIMARY KEY,
    owner      uuid        NOT NULL,
    attempts   smallint    NOT NULL DEFAULT 1,
    started_at timestamptz NOT NULL DEFAULT now()
);
