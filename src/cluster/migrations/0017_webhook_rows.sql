-- Migration 17: the webhook deliveries of new messages and conversations, and the emails of
-- agents' answers to visitors who left their address, written by the database in the
-- transaction that inserts them (an answer's by the append function, below): a message's by the append function (every
-- message a node stores goes through it: the group commit, a transfer's note, an offline
-- message's copy), a conversation's by a trigger, whichever statement inserts it. Each
-- subscribed webhook of the site gets an outbox row with an empty payload and what it is about;
-- the node that claims the row first renders the payload from it (cluster::outbox_sender). The
-- other events (assigned, closed, rated, offline messages) are written by the node in the
-- transaction that decides them, with their payload, through the same function.
-- `kefu migrate-to-postgres` copies messages with COPY, not the append function, and sets
-- kefu.copying on its session for the trigger: copied history fires nothing.

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

CREATE TRIGGER conversations_webhooks AFTER INSERT ON conversations
    FOR EACH ROW EXECUTE FUNCTION kefu_conversation_webhooks();

-- The append function of migration 9, which now also writes the deliveries of its messages.
CREATE OR REPLACE FUNCTION kefu_append_batch(items jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    item jsonb;
    results jsonb := '[]'::jsonb;
    claimed integer;
    previous record;
    found_conversation record;
    item_kind smallint;
    item_sender bigint;
    item_client text;
    target bigint;
    target_site text;
    target_visitor bigint;
    expected bigint;
    refusal text;
    now_ms bigint;
    new_seq bigint;
    new_day integer;
    first_reply boolean;
    new_lsn bigint;
    new_site text;
    new_bot_active boolean;
    created jsonb;
    hooked_sites text[];
    new_visitor bigint;
    visitor_email text;
    reply_delay bigint;
BEGIN
    -- Lock the conversations the batch writes to in id order before anything else, so that the
    -- batches of two nodes wait for each other instead of deadlocking on rows taken in
    -- different orders.
    PERFORM 1 FROM conversations
    WHERE id IN (SELECT (value->>'conversation_id')::bigint FROM jsonb_array_elements(items))
       OR (status <> 'closed'
           AND visitor_id IN (SELECT (value->>'visitor_id')::bigint FROM jsonb_array_elements(items)))
    ORDER BY id
    FOR UPDATE;

    -- The sites with a webhook of new messages, read once per batch: a batch of a site without
    -- one pays nothing more per message.
    SELECT coalesce(array_agg(DISTINCT w.record->>'site'), '{}') INTO hooked_sites
    FROM webhooks w WHERE w.record->'events' ? 'message.created';

    FOR item IN SELECT value FROM jsonb_array_elements(items) LOOP
        item_kind := (item->>'sender_kind')::smallint;
        item_sender := (item->>'sender_id')::bigint;
        item_client := item->>'client_id';
        now_ms := (item->>'now')::bigint;

        -- Claim the deduplication key; a concurrent claim of another node waits here until
        -- that node's batch commits or rolls back.
        INSERT INTO client_ids AS c (sender_kind, sender_id, client_id, conversation_id, seq, created_at)
        VALUES (item_kind, item_sender, item_client, 0, 0, 0)
        ON CONFLICT DO NOTHING;
        GET DIAGNOSTICS claimed = ROW_COUNT;
        IF claimed = 0 THEN
            SELECT c.conversation_id, c.seq, c.created_at, coalesce(m.text, '') AS text INTO previous
            FROM client_ids c
            LEFT JOIN messages m ON m.conversation_id = c.conversation_id AND m.seq = c.seq AND m.day = c.day
            WHERE c.sender_kind = item_kind AND c.sender_id = item_sender AND c.client_id = item_client;
            results := results || jsonb_build_array(jsonb_build_object(
                'outcome', 'duplicate', 'conversation_id', previous.conversation_id, 'seq', previous.seq,
                'created_at', previous.created_at, 'text', previous.text));
            CONTINUE;
        END IF;

        -- Where the message goes (as the appliance's messages::resolve_target).
        refusal := NULL;
        target := (item->>'conversation_id')::bigint;
        target_site := item->>'site';
        target_visitor := (item->>'visitor_id')::bigint;
        expected := target;
        IF target IS NOT NULL THEN
            SELECT status, site, visitor_id INTO found_conversation FROM conversations WHERE id = target FOR UPDATE;
            IF NOT FOUND THEN
                refusal := 'not_found';
            ELSIF found_conversation.status = 'closed' THEN
                IF item_kind <> 1 THEN
                    refusal := 'closed';
                ELSE
                    -- A visitor writing to a closed conversation starts a new one.
                    target := NULL;
                    target_site := found_conversation.site;
                    target_visitor := found_conversation.visitor_id;
                END IF;
            END IF;
        ELSE
            SELECT id INTO expected FROM conversations WHERE visitor_id = target_visitor AND status <> 'closed';
        END IF;
        IF refusal IS NULL AND (item->>'upload_conversation') IS NOT NULL
           AND (expected IS NULL OR (item->>'upload_conversation')::bigint <> expected) THEN
            refusal := 'attachment_elsewhere';
        END IF;
        IF refusal IS NOT NULL THEN
            DELETE FROM client_ids c
            WHERE c.sender_kind = item_kind AND c.sender_id = item_sender AND c.client_id = item_client;
            results := results || jsonb_build_array(jsonb_build_object('outcome', refusal));
            CONTINUE;
        END IF;

        created := NULL;
        IF target IS NULL THEN
            SELECT id INTO target FROM conversations WHERE visitor_id = target_visitor AND status <> 'closed';
            IF target IS NULL THEN
                -- A new conversation: the site's bot answers it when the site has its bot on.
                INSERT INTO conversations (site, visitor_id, created_at, updated_at, last_day, team, bot_active)
                VALUES (target_site, target_visitor, now_ms, now_ms, (item->>'day')::integer,
                        (item->>'team')::bigint,
                        coalesce((SELECT (b.record->>'enabled')::boolean FROM bot_settings b
                                  WHERE b.site = target_site), false))
                ON CONFLICT (visitor_id) WHERE status <> 'closed' DO NOTHING
                RETURNING to_jsonb(conversations.*) INTO created;
                target := (created->>'id')::bigint;
                IF target IS NULL THEN
                    SELECT id INTO target FROM conversations WHERE visitor_id = target_visitor AND status <> 'closed';
                END IF;
            END IF;
        END IF;

        -- The sequence number, under the conversation's row lock until the commit: gap-free and
        -- in commit order within the conversation, whichever node appends.
        first_reply := item_kind = 2 AND NOT (item->>'internal')::boolean;
        UPDATE conversations SET
            last_seq = last_seq + 1,
            updated_at = now_ms,
            last_day = greatest(last_day, (item->>'day')::integer),
            first_response_at = CASE WHEN first_reply AND first_response_at IS NULL THEN now_ms
                                     ELSE first_response_at END
        WHERE id = target
        RETURNING last_seq, last_day, site, bot_active, visitor_id INTO new_seq, new_day, new_site, new_bot_active, new_visitor;

        PERFORM kefu_create_message_partition(new_day);
        INSERT INTO messages (conversation_id, seq, day, lsn, trace_id, created_at, sender_kind, sender_id,
                              sender_name, kind, internal, client_id, text, attachment, bot_source)
        VALUES (target, new_seq, date '1970-01-01' + new_day, nextval('message_lsns'),
                (item->>'trace_id')::bigint, now_ms, item_kind, item_sender, item->>'sender_name',
                item->>'kind', (item->>'internal')::boolean, item_client, item->>'text',
                nullif(item->'attachment', 'null'::jsonb), nullif(item->'bot_source', 'null'::jsonb))
        RETURNING lsn INTO new_lsn;
        IF new_site = ANY(hooked_sites) THEN
            PERFORM kefu_webhook_rows(new_site, 'message.created', '',
                                      jsonb_build_object('message', jsonb_build_object(
                                          'conversation_id', target, 'seq', new_seq, 'day', new_day)));
        END IF;
        -- An agent's answer to a visitor who left their address: an email, due once the visitor
        -- had the time to read it in the chat (the delay the nodes record, `email_settings`'
        -- runtime); the node that claims it renders it, or skips it if the visitor read it.
        IF item_kind = 2 AND NOT (item->>'internal')::boolean THEN
            SELECT v.record->>'email' INTO visitor_email FROM visitors v WHERE v.id = new_visitor;
            IF coalesce(visitor_email, '') <> '' THEN
                IF reply_delay IS NULL THEN
                    SELECT (e.record->>'reply_delay_millis')::bigint INTO reply_delay
                    FROM email_settings e WHERE e.name = 'runtime';
                    reply_delay := coalesce(reply_delay, 0);
                END IF;
                INSERT INTO outbox (kind, site, content, created_at, next_attempt_at)
                VALUES ('email', new_site,
                        jsonb_build_object('kind', 'email', 'email_kind', 'reply', 'to_address', visitor_email,
                                           'to_name', '', 'subject', '', 'text', '', 'html', '',
                                           'about', jsonb_build_object('answer', jsonb_build_object(
                                               'conversation_id', target, 'seq', new_seq, 'day', new_day))),
                        kefu_now_ms(), kefu_now_ms() + reply_delay);
            END IF;
        END IF;
        UPDATE client_ids c SET conversation_id = target, seq = new_seq, day = date '1970-01-01' + new_day,
                                created_at = now_ms
        WHERE c.sender_kind = item_kind AND c.sender_id = item_sender AND c.client_id = item_client;
        results := results || jsonb_build_array(jsonb_build_object(
            'outcome', 'stored', 'conversation_id', target, 'seq', new_seq, 'created_at', now_ms,
            'text', item->>'text', 'site', new_site, 'day', new_day, 'lsn', new_lsn,
            'bot_active', new_bot_active, 'created', created));
    END LOOP;
    RETURN results;
END;
$$;
