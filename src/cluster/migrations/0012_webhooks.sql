-- Migration 12: a webhook's deliveries in the outbox, newest first, as the admin pages and the
-- API list them.
CREATE INDEX outbox_webhook_deliveries ON outbox ((content->>'webhook_id'), id) WHERE kind = 'webhook';
