-- Migration 17: the webhook deliveries of new messages and conversations, written by the
-- database in the transaction that inserts them, whichever statement does (a node's group
-- commit, a transfer's note, a conversation started by an agent). Each subscribed webhook of the
-- site gets an outbox row with an empty payload and what it is about; the node that claims the
-- row first renders the payload from it (cluster::outbox_sender). The other events (assigned,
-- closed, rated, offline messages) are written by the node in the transaction that decides them,
-- with their payload, through the same function.
-- `kefu migrate-to-postgres` sets kefu.copying on its session: copied history fires nothing.

CREATE INDEX webhooks_by_site ON webhooks ((record->>'site'));

CREATE FUNCTION kefu_webhook_rows(row_site text, event_type text, payload text, about jsonb) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO outbox (kind, site, content, created_at, next_attempt_at)
    SELECT 'webhook', row_site,
           jsonb_build_object('kind', 'webhook', 'webhook_id', w.id, 'event_type', event_type,
                              'payload', payload, 'about', about),
           kefu_now_ms(), kefu_now_ms()
    FROM webhooks w
    WHERE w.record->>'site' = row_site AND w.record->'events' ? event_type
$$;

CREATE FUNCTION kefu_message_webhooks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('kefu.copying', true) = 'on' THEN
        RETURN NULL;
    END IF;
    PERFORM kefu_webhook_rows(c.site, 'message.created', '',
                              jsonb_build_object('message', jsonb_build_object(
                                  'conversation_id', NEW.conversation_id, 'seq', NEW.seq)))
    FROM conversations c
    WHERE c.id = NEW.conversation_id;
    RETURN NULL;
END;
$$;

CREATE FUNCTION kefu_conversation_webhooks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('kefu.copying', true) = 'on' THEN
        RETURN NULL;
    END IF;
    PERFORM kefu_webhook_rows(NEW.site, 'conversation.created', '', jsonb_build_object('conversation', to_jsonb(NEW)));
    RETURN NULL;
END;
$$;

CREATE TRIGGER messages_webhooks AFTER INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION kefu_message_webhooks();
CREATE TRIGGER conversations_webhooks AFTER INSERT ON conversations
    FOR EACH ROW EXECUTE FUNCTION kefu_conversation_webhooks();
