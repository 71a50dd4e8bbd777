-- What a worker is applying out of a redelivered message, marked before it runs: a mark that
-- outlives its worker says the worker died applying it (see worker/culprits.py). Keys are
-- 'request:<request id>' for a request applied alone and 'message:<message id>' for a message.

CREATE TABLE attempts (
    key        text        PRIMARY KEY,
    attempts   smallint    NOT NULL DEFAULT 1,
    started_at timestamptz NOT NULL DEFAULT now()
);
