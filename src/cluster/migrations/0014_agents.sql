-- Migration 14: agents made on PostgreSQL take their ids from a sequence, which
-- `kefu migrate-to-postgres` moves past the copied ones and the appliance's counter; password
-- resets (the appliance's password_resets_v1, not copied: a link lasts 30 minutes) under their
-- token's digest; an agent's sessions found by agent, as a password change or a disabled agent
-- ends them.
CREATE SEQUENCE agent_ids;
CREATE TABLE password_resets (digest bytea PRIMARY KEY, record jsonb NOT NULL);
CREATE INDEX agent_sessions_by_agent ON agent_sessions (((record->>'agent_id')::bigint));
