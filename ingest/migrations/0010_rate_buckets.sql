-- The shared rate limit (INGEST_RATE_LIMIT): one token bucket per workflow, from which every edge
-- leases small slices (ingest/edge/ratelimit.py), so the limit is the same however many edges run.
-- A row is written by compare-and-set on `generation` (read, decide in the edge, write if no one
-- wrote in between): no lock is held across round trips.
--
-- UNLOGGED: a bucket is a few seconds of state; losing it in a crash (or on a standby that takes
-- over) only refills the buckets, which a restart of the edges did before. It spares the WAL a
-- write per slice. The updates touch no indexed column, so they are HOT and the fill factor leaves
-- them room on the page.
CREATE UNLOGGED TABLE rate_buckets (
    workflow_id bigint           PRIMARY KEY REFERENCES workflows (id) ON DELETE CASCADE,
    -- Tokens left when `updated_at` was written; negative while a batch larger than the burst is
    -- being paid for.
    tokens      double precision NOT NULL,
    updated_at  timestamptz      NOT NULL,
    generation  bigint           NOT NULL
) WITH (fillfactor = 50);
