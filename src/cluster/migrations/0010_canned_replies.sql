-- Migration 10: canned replies made on PostgreSQL take their ids from a sequence;
-- `kefu migrate-to-postgres` moves it past the copied ones.
CREATE SEQUENCE canned_reply_ids;
