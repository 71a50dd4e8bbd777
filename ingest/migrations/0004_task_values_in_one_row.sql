-- One row per task: a task's values move from `task_values` (one row per field) into a jsonb
-- column of `tasks`, keyed by field id (see ingest/fields.py for each type's stored form).
-- Numbers stay JSON numbers, which jsonb keeps as `numeric`: digits and scale exact. Dates and
-- date-times become the canonical text Flowdash shows (date-times in UTC, microseconds only when
-- there are any), so a list filter is one jsonb containment (`@>`) the GIN index answers.
--
-- Existing values are moved in batches of tasks, so no statement builds the whole table's jsonb
-- at once; all of it happens in the migration's one transaction: either every value has moved
-- and `task_values` is gone, or nothing changed.

SET LOCAL TimeZone = 'UTC';

ALTER TABLE tasks ADD COLUMN fields jsonb NOT NULL DEFAULT '{}'::jsonb;

-- asyncpg writes Python's first and last day as -infinity and infinity, and reads them back so.
CREATE FUNCTION pg_temp.date_text(day date) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN day = 'infinity' THEN '9999-12-31'
        WHEN day = '-infinity' THEN '0001-01-01'
        -- As a timestamp without time zone: a date alone would go through the session's zone,
        -- and a day that zone skipped (Pacific/Apia, 2011-12-30) would print as the next one.
        ELSE to_char(day::timestamp, 'YYYY-MM-DD')
    END
$$;

CREATE FUNCTION pg_temp.moment_text(moment timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        -- The driver's first and last moments (stored before ingest refused them).
        WHEN moment = 'infinity' THEN '9999-12-31T23:59:59.999999Z'
        WHEN moment = '-infinity' THEN '0001-01-01T00:00:00Z'
        WHEN date_part('microseconds', moment AT TIME ZONE 'UTC')::bigint % 1000000 = 0
            THEN to_char(moment AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
        ELSE to_char(moment AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
    END
$$;

DO $$
DECLARE
    done_through bigint := 0;
    batch_end bigint;
BEGIN
    LOOP
        SELECT max(id) INTO batch_end
        FROM (SELECT id FROM tasks WHERE id > done_through ORDER BY id LIMIT 10000) AS batch;
        EXIT WHEN batch_end IS NULL;
        UPDATE tasks SET fields = moved.fields
        FROM (
            SELECT task_id, jsonb_object_agg(field_id::text, CASE
                WHEN number_value IS NOT NULL THEN to_jsonb(number_value)
                WHEN text_value IS NOT NULL THEN to_jsonb(text_value)
                WHEN date_value IS NOT NULL THEN to_jsonb(pg_temp.date_text(date_value))
                WHEN datetime_value IS NOT NULL THEN to_jsonb(pg_temp.moment_text(datetime_value))
                WHEN boolean_value IS NOT NULL THEN to_jsonb(boolean_value)
                ELSE to_jsonb(list_value)
            END) AS fields
            FROM task_values
            WHERE task_id > done_through AND task_id <= batch_end
            GROUP BY task_id
        ) AS moved
        WHERE tasks.id = moved.task_id;
        done_through := batch_end;
    END LOOP;
END
$$;

DROP TABLE task_values;

-- List filters: `fields @> '{"3": 42}'` (jsonb_path_ops: smaller and faster than the default
-- operator class for containment, which is the only operator the filters use).
CREATE INDEX tasks_fields ON tasks USING gin (fields jsonb_path_ops);
