-- Migration 7: the appliance's record tables. Each redb table that holds a domain record or an
-- index that cannot be derived (sites, agents, visitors, settings, ...) has a table of the same
-- name: its key as typed columns, its value as `record` (jsonb: the domain record as the
-- appliance stores it; for a table that maps to a number, such as an email to an agent id or an
-- address to the time it was blocked, that number; for push_keys, the key's bytes in hex).
-- Ids are the appliance's (bigint), SHA-256 digests are bytea, site keys and names are text.
CREATE TABLE sites (key text PRIMARY KEY, record jsonb NOT NULL);
CREATE TABLE agents (id bigint PRIMARY KEY, record jsonb NOT NULL);
CREATE TABLE agent_emails (email text PRIMARY KEY, record jsonb NOT NULL);
CREATE TABLE agent_two_factor (agent_id bigint PRIMARY KEY, record jsonb NOT NULL);
CREATE TABLE agent_sessions (digest bytea PRIMARY KEY, record jsonb NOT NULL);
CREATE TABLE visitors (id bigint PRIMARY KEY, record jsonb NOT NULL);
CREATE TABLE visitor_tokens (digest bytea PRIMARY KEY, record jsonb NOT NULL);
CREATE TABLE visitor_identities (site text, external_id text, record jsonb NOT NULL, PRIMARY KEY (site, external_id));
CREATE TABLE read_positions (
    conversation_id bigint, reader_kind smallint, reader_id bigint, record jsonb NOT NULL,
    PRIMARY KEY (conversation_id, reader_kind, reader_id)
);
CREATE TABLE offline_messages (id bigint PRIMARY KEY, record jsonb NOT NULL);
CREATE TABLE leads (id bigint PRIMARY KEY, record jsonb NOT NULL);
CREATE TABLE lead_conversations (conversation_id bigint PRIMARY KEY, record jsonb NOT NULL);
CREATE TABLE webhooks (id text PRIMARY KEY, record jsonb NOT NULL);
CREATE TABLE canned_replies (id bigint PRIMARY KEY, record jsonb NOT NULL);
CREATE TABLE teams (id bigint PRIMARY KEY, record jsonb NOT NULL);
CREATE TABLE blocked_ips (site text, address text, record jsonb NOT NULL, PRIMARY KEY (site, address));
CREATE TABLE kb_entries (id bigint PRIMARY KEY, record jsonb NOT NULL);
CREATE TABLE bot_settings (site text PRIMARY KEY, record jsonb NOT NULL);
CREATE TABLE bot_feedback (conversation_id bigint, seq bigint, record jsonb NOT NULL, PRIMARY KEY (conversation_id, seq));
CREATE TABLE audit_log (id bigint PRIMARY KEY, record jsonb NOT NULL);
CREATE TABLE blocked_visitors (visitor_id bigint PRIMARY KEY, record jsonb NOT NULL);
CREATE TABLE api_tokens (id bigint PRIMARY KEY, record jsonb NOT NULL);
CREATE TABLE api_token_digests (digest bytea PRIMARY KEY, record jsonb NOT NULL);
CREATE TABLE push_keys (name text PRIMARY KEY, record jsonb NOT NULL);
CREATE TABLE push_subscriptions (agent_id bigint, endpoint_hash bigint, record jsonb NOT NULL, PRIMARY KEY (agent_id, endpoint_hash));
CREATE TABLE email_settings (name text PRIMARY KEY, record jsonb NOT NULL);
CREATE TABLE refused_origins (site text PRIMARY KEY, record jsonb NOT NULL);
-- The appliance's counters (`next_*_id`) and switches (`require_two_factor`) from meta_v1, so
-- ids given on PostgreSQL continue the copied ones.
CREATE TABLE appliance_meta (name text PRIMARY KEY, record jsonb NOT NULL);
-- The copy's progress now has a row for each of these tables too (the names the copy writes are
-- its own; the list of migration 2 named only the history's three).
ALTER TABLE redb_copy_progress DROP CONSTRAINT redb_copy_progress_table_name_check;
-- An upload copied from an appliance whose file was gone keeps its record without bytes, as on
-- the appliance; reads of it find nothing.
ALTER TABLE uploads ALTER COLUMN content_id DROP NOT NULL;
-- New visitors' ids on PostgreSQL; `kefu migrate-to-postgres` moves it past the copied ones.
CREATE SEQUENCE visitor_ids;
-- New teams' ids on PostgreSQL; the copy moves it past the copied ones.
CREATE SEQUENCE team_ids;
