-- Migration 13: knowledge-base entries made on PostgreSQL take their ids from a sequence, which
-- `kefu migrate-to-postgres` moves past the copied ones and the appliance's counter; a site's
-- entries are read, counted and listed oldest first through an index of their site.
CREATE SEQUENCE kb_entry_ids;
CREATE INDEX kb_entries_site ON kb_entries ((record->>'site'), id);
