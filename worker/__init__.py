"""ingest's workers: consume task batches, validate, upsert into Postgres, reply, ack."""
