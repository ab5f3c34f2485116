-- Migration 1: the message path. Conversations, messages in day partitions, the deduplication
-- keys, and the functions the group commit and the partition job call.

CREATE SEQUENCE conversation_ids;
-- Message numbers across conversations (redb's lsn). Increasing within a conversation; across
-- concurrent transactions not strictly the commit order.
CREATE SEQUENCE message_lsns;

-- What `MessageStore::conversation` returns; times are Unix milliseconds, days are UTC day
-- numbers (days since 1970-01-01), as in the appliance's records.
CREATE TABLE conversations (
    id bigint PRIMARY KEY DEFAULT nextval('conversation_ids'),
    site text NOT NULL,
    visitor_id bigint NOT NULL,
    status text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'assigned', 'closed')),
    assigned_agent bigint,
    -- The newest message's sequence number; the next message gets last_seq + 1.
    last_seq bigint NOT NULL DEFAULT 0,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    closed_at bigint,
    -- The newest day partition holding a message; later messages never go to an earlier day.
    last_day integer NOT NULL,
    first_response_at bigint,
    rating jsonb,
    team bigint,
    bot_active boolean NOT NULL DEFAULT false
);
-- A visitor has at most one open conversation (the appliance's visitor_open_conversation_v1).
CREATE UNIQUE INDEX conversations_open_per_visitor ON conversations (visitor_id) WHERE status <> 'closed';

-- One partition per UTC day (messages_YYYYMMDD), the role of redb's day shards: retention drops
-- whole partitions. The key includes the day because a partitioned table's keys must.
CREATE TABLE messages (
    conversation_id bigint NOT NULL,
    seq bigint NOT NULL,
    day date NOT NULL,
    lsn bigint NOT NULL,
    trace_id bigint NOT NULL,
    created_at bigint NOT NULL,
    sender_kind smallint NOT NULL,
    sender_id bigint NOT NULL,
    sender_name text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('text', 'image', 'file')),
    internal boolean NOT NULL,
    client_id text,
    text text NOT NULL,
    attachment jsonb,
    bot_source jsonb,
    PRIMARY KEY (conversation_id, seq, day)
) PARTITION BY RANGE (day);

-- Deduplication: (sender kind, sender id, client id) to the original acknowledgement. A table of
-- its own, because a unique key on the partitioned table would have to include the day.
CREATE TABLE client_ids (
    sender_kind smallint NOT NULL,
    sender_id bigint NOT NULL,
    client_id text NOT NULL,
    conversation_id bigint NOT NULL,
    seq bigint NOT NULL,
    day date,
    created_at bigint NOT NULL,
    PRIMARY KEY (sender_kind, sender_id, client_id)
);

-- Creates the partition of one UTC day if it is missing; true when it created it. Nodes that
-- create the same day at once take turns on an advisory lock, so none fails on the catalog.
CREATE FUNCTION kefu_create_message_partition(day_number integer) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    first_day date := date '1970-01-01' + day_number;
    partition_name text := 'messages_' || to_char(date '1970-01-01' + day_number, 'YYYYMMDD');
BEGIN
    IF to_regclass(partition_name) IS NOT NULL THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('kefu message partitions'));
    IF to_regclass(partition_name) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I PARTITION OF messages FOR VALUES FROM (%L) TO (%L)',
                   partition_name, first_day, first_day + 1);
    RETURN true;
END;
$$;

-- Drops the partitions of the days before `day_number` (retention); returns their names.
CREATE FUNCTION kefu_drop_message_partitions_before(day_number integer) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    partition_name text;
BEGIN
    FOR partition_name IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'messages'::regclass AND c.relname ~ '^messages_[0-9]{8}$'
          AND to_date(substr(c.relname, 10), 'YYYYMMDD') < date '1970-01-01' + day_number
        ORDER BY c.relname
    LOOP
        EXECUTE format('DROP TABLE %I', partition_name);
        RETURN NEXT partition_name;
    END LOOP;
END;
$$;

-- Appends a batch of messages in the caller's transaction and returns one outcome per item, in
-- order: {"outcome":"stored"|"duplicate", "conversation_id", "seq", "created_at", "text"} or
-- {"outcome":"not_found"|"closed"|"attachment_elsewhere"}. A refused item writes nothing and
-- does not affect the others; an error aborts the whole batch.
--
-- An item: sender_kind (1 visitor, 2 agent, 3 bot, 4 system), sender_id, sender_name,
-- client_id, text, kind, internal, trace_id, now (Unix ms), day (UTC day number of now),
-- conversation_id (a known conversation) or site and visitor_id (the visitor's inbox), team
-- (the team a conversation it starts waits for), has_attachment, upload_conversation (the
-- conversation the upload belongs to, if any), attachment, bot_source.
CREATE FUNCTION kefu_append_batch(items jsonb) RETURNS jsonb
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

        IF target IS NULL THEN
            SELECT id INTO target FROM conversations WHERE visitor_id = target_visitor AND status <> 'closed';
            IF target IS NULL THEN
                INSERT INTO conversations (site, visitor_id, created_at, updated_at, last_day, team)
                VALUES (target_site, target_visitor, now_ms, now_ms, (item->>'day')::integer,
                        (item->>'team')::bigint)
                ON CONFLICT (visitor_id) WHERE status <> 'closed' DO NOTHING
                RETURNING id INTO target;
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
        RETURNING last_seq, last_day INTO new_seq, new_day;

        PERFORM kefu_create_message_partition(new_day);
        INSERT INTO messages (conversation_id, seq, day, lsn, trace_id, created_at, sender_kind, sender_id,
                              sender_name, kind, internal, client_id, text, attachment, bot_source)
        VALUES (target, new_seq, date '1970-01-01' + new_day, nextval('message_lsns'),
                (item->>'trace_id')::bigint, now_ms, item_kind, item_sender, item->>'sender_name',
                item->>'kind', (item->>'internal')::boolean, item_client, item->>'text',
                nullif(item->'attachment', 'null'::jsonb), nullif(item->'bot_source', 'null'::jsonb));
        UPDATE client_ids c SET conversation_id = target, seq = new_seq, day = date '1970-01-01' + new_day,
                                created_at = now_ms
        WHERE c.sender_kind = item_kind AND c.sender_id = item_sender AND c.client_id = item_client;
        results := results || jsonb_build_array(jsonb_build_object(
            'outcome', 'stored', 'conversation_id', target, 'seq', new_seq, 'created_at', now_ms,
            'text', item->>'text'));
    END LOOP;
    RETURN results;
END;
$$;
