-- Migration 11: API tokens made on PostgreSQL take their ids from a sequence, which
-- `kefu migrate-to-postgres` moves past the copied ones.
CREATE SEQUENCE api_token_ids;
