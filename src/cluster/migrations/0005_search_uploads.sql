-- Migration 5: full-text search over the messages, and uploads' files readable from any node.
--
-- Search: each message carries `search_vector`, a tsvector of the tokens kefu's own tokenizer
-- makes (src/search/tokenizer.rs): lowercased words for scripts with spaces, and overlapping
-- bigrams of CJK runs (a lone CJK character as itself), at consecutive positions. A GIN index on
-- it finds a word with one posting list and a Chinese query as a phrase of its bigrams, so a
-- two-character query is one term, as in the appliance's tantivy index. The column is generated,
-- so every writer (the group commit, `kefu migrate-to-postgres`, a manual INSERT) fills it.
-- Words need a database locale that classifies letters (any UTF-8 locale; not "C").

-- Text rewritten so the default text-search parser yields kefu's tokens: everything but letters,
-- digits and CJK becomes a space, CJK runs are set apart from words, and each character inside a
-- CJK run is written twice with a space between (ABCD becomes AB BC CD, its bigrams; a run of
-- one or two characters stays as it is). The CJK ranges are the tokenizer's `is_cjk`.
CREATE FUNCTION kefu_search_text(body text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT regexp_replace(regexp_replace(regexp_replace(body,
               '[^[:alnum:]\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002fa1f]+', ' ', 'g'),
               '([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002fa1f]+)', ' \1 ', 'g'),
               '(?<=[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002fa1f])([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002fa1f])(?=[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002fa1f])', '\1 \1', 'g')
$$;

-- A search query as a tsquery, with the appliance's meaning: the whitespace-separated terms
-- must all match (AND), and each term's tokens must appear in a row (a phrase), so `退款` is one
-- bigram and `我要退款` the phrase 我要 <-> 要退 <-> 退款. Null when the query has no tokens.
CREATE FUNCTION kefu_search_query(query text) RETURNS tsquery
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    result tsquery;
    term text;
    phrase tsquery;
BEGIN
    FOREACH term IN ARRAY regexp_split_to_array(btrim(query), '\s+') LOOP
        CONTINUE WHEN kefu_search_text(term) = '';
        phrase := phraseto_tsquery('simple', kefu_search_text(term));
        IF numnode(phrase) > 0 THEN
            result := CASE WHEN result IS NULL THEN phrase ELSE result && phrase END;
        END IF;
    END LOOP;
    RETURN result;
END
$$;

ALTER TABLE messages ADD COLUMN search_vector tsvector
    GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, kefu_search_text(text))) STORED;
-- On the partitioned table: every day partition, present and future, gets its own. New entries
-- wait in the index's pending list, which every search reads in full until it is merged (by
-- autovacuum, or by the insert that fills it): a small list keeps appends cheap and searches
-- fast (docs/cluster.md, "Search").
CREATE INDEX messages_search ON messages USING gin (search_vector) WITH (gin_pending_list_limit = 512);
-- Newest first: search pages are ordered by lsn.
CREATE INDEX messages_lsn ON messages (lsn);

-- Uploads: the files visitors and agents attach (the appliance's DATA_DIR/uploads and its
-- uploads table), readable by every node. The bytes are stored once per content (SHA-256) as
-- rows of bytea chunks, so a node writes and reads a 20 MB file a chunk at a time; an upload is
-- a named reference to a content, and the last reference's removal removes the content.
CREATE SEQUENCE upload_content_ids;

CREATE TABLE upload_contents (
    id bigint PRIMARY KEY,
    sha256 bytea NOT NULL UNIQUE CHECK (length(sha256) = 32),
    size bigint NOT NULL CHECK (size > 0),
    n_chunks integer NOT NULL CHECK (n_chunks > 0)
);

-- Chunk n holds bytes [n * chunk size, (n + 1) * chunk size) of its content. The chunks are
-- written before their content's row (its hash is known only at the end), so the reference is
-- checked at the commit.
CREATE TABLE upload_chunks (
    content_id bigint NOT NULL REFERENCES upload_contents (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    n integer NOT NULL CHECK (n >= 0),
    bytes bytea NOT NULL,
    PRIMARY KEY (content_id, n)
);
-- Out of line and uncompressed: most uploads are images and archives, already compressed.
ALTER TABLE upload_chunks ALTER COLUMN bytes SET STORAGE EXTERNAL;

-- The appliance's `Upload` record, with its content.
CREATE TABLE uploads (
    id text PRIMARY KEY,
    conversation_id bigint,
    uploader_kind smallint NOT NULL,
    uploader_id bigint NOT NULL,
    name text NOT NULL,
    size bigint NOT NULL,
    content_type text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('image', 'file')),
    created_at bigint NOT NULL,
    site text NOT NULL,
    attached boolean NOT NULL,
    content_id bigint NOT NULL REFERENCES upload_contents (id)
);
CREATE INDEX uploads_by_content ON uploads (content_id);
