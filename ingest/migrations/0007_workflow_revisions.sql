-- Workflow revisions (SPEC §8): a workflow's definition changes in place, version after version
-- (ingest/revisions.py), and a workflow can be deleted with everything it holds.

-- When the workflow was deleted (NULL: it was not). A delete first sets it, removes the tokens and
-- sources and announces the change, in one short transaction, after which every read by id,
-- public id or token passes the workflow by; its tasks then go in short batches, and its row last
-- (ingest/store.py). A delete cut short leaves the workflow marked: `retention.purge` finishes it.
ALTER TABLE workflows ADD COLUMN deleted_at timestamptz;

-- The largest field id any version of the workflow has used, so a new field never gets the id of
-- a removed one: a removed field's values stay in `tasks.fields` under its id, and must never
-- show up as a later field's values. Revisions keep it; the ids of the current definition count
-- too (`greatest` of both), so a workflow never revised needs nothing here.
ALTER TABLE workflows ADD COLUMN last_field_id integer NOT NULL DEFAULT 0
    CHECK (last_field_id >= 0);

-- Deleting tasks (a workflow's, or one by the task API) sets `request_results.task_id` of their
-- results to null: without this index Postgres scans every result once per deleted task, so
-- deleting a workflow of 10,000 tasks beside a million results read 10^10 rows.
CREATE INDEX request_results_task ON request_results (task_id) WHERE task_id IS NOT NULL;
