-- Migration 10: the ids of records made on PostgreSQL that the appliance numbers as the largest
-- plus one: canned replies and audit log entries take them from sequences, which
-- `kefu migrate-to-postgres` moves past the copied ones.
CREATE SEQUENCE canned_reply_ids;
CREATE SEQUENCE audit_ids;
