-- Migration 15: offline messages left through a node take their ids from a sequence, which
-- `kefu migrate-to-postgres` moves past the copied ones (and the appliance's counter).
CREATE SEQUENCE offline_message_ids;
