-- Migration 4: work that must be done once although every node can do it. The outbox of webhook
-- deliveries and emails, claimed with FOR UPDATE SKIP LOCKED; the runs of periodic jobs, taken
-- under an advisory lock; and the routing lease of each site.

-- The database's clock in Unix milliseconds (the transaction's start). Claims, due times and
-- leases are compared with this one clock, never with the nodes' own, so nodes whose clocks
-- disagree still agree on who holds what.
CREATE FUNCTION kefu_now_ms() RETURNS bigint
LANGUAGE sql STABLE AS $$ SELECT (extract(epoch FROM now()) * 1000)::bigint $$;

CREATE SEQUENCE outbox_ids;

-- Webhook deliveries and emails in one table: their life (due, claimed, retried with backoff,
-- delivered or failed) is the same, and only their content differs, which the node sending them
-- reads and the claiming never does.
CREATE TABLE outbox (
    id bigint PRIMARY KEY DEFAULT nextval('outbox_ids'),
    kind text NOT NULL CHECK (kind IN ('webhook', 'email')),
    -- The site the row is about, if any.
    site text,
    -- What is sent: a webhook's id, event type, signed payload and trace; an email's kind,
    -- recipient, subject and parts (cluster::outbox::OutboxContent).
    content jsonb NOT NULL,
    -- A password reset's body holds a secret, blanked once the row is finished.
    erase_when_done boolean NOT NULL DEFAULT false,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed', 'skipped')),
    -- Attempts that ended (delivered or failed); an attempt cut off by a dying node is not counted.
    attempts integer NOT NULL DEFAULT 0,
    created_at bigint NOT NULL,
    -- When the next attempt is due; while a node holds the row, the end of its claim. Null once
    -- the row is finished.
    next_attempt_at bigint,
    -- The node that claimed the row last; null when nobody holds it.
    claimed_by text,
    -- The receiver's HTTP status of the last attempt (webhooks).
    last_status integer,
    last_error text,
    finished_at bigint,
    CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL))
);
-- The rows waiting, in due order: what a claim reads.
CREATE INDEX outbox_due ON outbox (kind, next_attempt_at) WHERE status = 'pending';

-- The last run of each periodic job, written in the run's own transaction: a node that takes
-- the job's lock after another node's run committed sees it and does not run the job again.
CREATE TABLE periodic_job_runs (
    name text PRIMARY KEY,
    -- The newest slot that ran (a day number for a daily job).
    last_slot bigint NOT NULL,
    node text NOT NULL,
    ran_at bigint NOT NULL
);

-- Who decides the routing of each site, until when (database clock, Unix milliseconds).
CREATE TABLE routing_leases (
    site text PRIMARY KEY,
    holder text NOT NULL,
    expires_at bigint NOT NULL,
    -- When the holder took it (renewals keep it).
    taken_at bigint NOT NULL
);

-- The queue a routing node reads: a site's queued conversations, oldest first.
CREATE INDEX conversations_queued ON conversations (site, created_at, id) WHERE status = 'queued';
