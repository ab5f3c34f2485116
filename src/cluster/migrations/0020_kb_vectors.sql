-- Migration 20: the knowledge base's entry vectors for the bot's semantic tier, as the
-- appliance's `kb_vectors_v1` holds them (the fingerprint of the entry's text and model, then
-- the vector; `bot::embeddings::encode`). An entry's deletion removes its vector.
CREATE TABLE kb_vectors (
    entry_id bigint PRIMARY KEY REFERENCES kb_entries (id) ON DELETE CASCADE,
    vector bytea NOT NULL
);
