-- Migration 18: the conversations whose agents were emailed that the visitor waits (a missed
-- chat), or told of its offline message, so the nodes' sweep emails about each once. A closed
-- conversation's row is removed by the next sweep.
CREATE TABLE missed_chat_reports (
    conversation_id bigint PRIMARY KEY,
    reported_at bigint NOT NULL
);
