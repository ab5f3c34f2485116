-- Migration 2: the progress of `kefu migrate-to-postgres`, which copies an appliance's redb
-- history into this schema. One row per copied table: where its copy stands (the last key
-- copied, updated in the same transaction as the rows it covers, so an interrupted copy goes on
-- from there and never copies a row twice), and what the source held when the copy began (its
-- row count and checksum), so a resumed copy knows the source is still the one it began with.
CREATE TABLE redb_copy_progress (
    table_name text PRIMARY KEY CHECK (table_name IN ('conversations', 'messages', 'client_ids')),
    -- The data directory's epoch (meta_v1.epoch), which names one appliance's history.
    source_epoch bigint NOT NULL,
    source_rows bigint NOT NULL,
    source_checksum text NOT NULL,
    -- The key of the last row copied (JSON), null before the first batch.
    last_key jsonb,
    rows_copied bigint NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
