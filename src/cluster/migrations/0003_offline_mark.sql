-- Migration 3: the mark of a message left through the offline form (the id of its offline
-- message), as the appliance's stored messages carry it since their second record version.
-- `kefu migrate-to-postgres` copies it; appends through `kefu_append_batch` leave it null, as
-- the offline form is not served by cluster nodes yet.
ALTER TABLE messages ADD COLUMN offline_message_id bigint;
