"""ingest: a Flowdash-compatible task ingestion service (HTTP edge and the shared contracts)."""
