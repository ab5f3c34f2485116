-- Migration 8: what a node needs to change conversations on PostgreSQL (ConversationStore).
-- A visitor's conversations, oldest first, and the open ones, by id.
CREATE INDEX conversations_visitor ON conversations (visitor_id, id);
CREATE INDEX conversations_open ON conversations (id) WHERE status <> 'closed';
-- New leads' ids on PostgreSQL (a conversation closed unanswered); `kefu migrate-to-postgres`
-- moves it past the copied ones.
CREATE SEQUENCE lead_ids;
