//! The knowledge base on the cluster's PostgreSQL: the [`KnowledgeBaseStore`] boundary over the
//! `kb_entries` record table (migration 7), deciding as the appliance does (`validated`,
//! `check_room`, `plan_import`, `KbEntry::replace_with`). Adding entries takes an advisory lock
//! of the site for its transaction, so two nodes adding at once cannot pass the site's limit
//! together; new ids come from `kb_entry_ids` and times from the database's clock (migration 13).
//! With NATS, each committed change is announced so every node drops the site's match index
//! (`events::follow_knowledge_base_changes`).

use std::collections::HashMap;

use tokio_postgres::Transaction;

use crate::bot::embeddings::{self, SiteVectors, StoredVector, VectorStore};
use crate::bot::knowledge_base::formats::ImportRow;
use crate::bot::knowledge_base::store::KnowledgeBaseStore;
use crate::bot::knowledge_base::{self, EntryInput, ImportOutcome, KbEntry, KbError};
use crate::cluster::events;
use crate::cluster::postgres::{self, PostgresError, Readers, Writers, database, record_text};
use crate::storage::StorageError;

/// Connections a node's reads take in turn.
const READ_CONNECTIONS: usize = 2;

pub struct PostgresKnowledgeBase {
    readers: Readers,
    writers: Writers,
    /// Where committed changes are announced to every node
    /// (`events::publish_knowledge_base_changed`).
    nats: Option<async_nats::Client>,
}

impl PostgresKnowledgeBase {
    /// Connects and applies the migrations the database lacks.
    pub async fn open(url: &str) -> Result<PostgresKnowledgeBase, PostgresError> {
        postgres::ensure_migrated(url).await?;
        Ok(PostgresKnowledgeBase {
            readers: Readers::new(url, READ_CONNECTIONS),
            writers: Writers::new(url, 1),
            nats: None,
        })
    }

    /// Announces every committed change on NATS, so other nodes drop the site's match index.
    pub fn with_events(self, nats: async_nats::Client) -> PostgresKnowledgeBase {
        PostgresKnowledgeBase { nats: Some(nats), ..self }
    }

    /// Tells every node that `site`'s entries changed (after the commit).
    async fn announce(&self, site: &str) {
        if let Some(nats) = &self.nats {
            events::publish_knowledge_base_changed(nats, site).await;
        }
    }
}

fn key_of(id: u64) -> Result<i64, KbError> {
    i64::try_from(id).map_err(|_| KbError::NotFound)
}

/// Locks the site's knowledge base for the transaction and checks that the site exists (its row
/// is shared-locked, so its deletion waits); returns how many entries it holds.
async fn lock_site(transaction: &Transaction<'_>, site: &str) -> Result<usize, KbError> {
    transaction
        .execute("SELECT pg_advisory_xact_lock(hashtext('kefu knowledge base ' || $1))", &[&site])
        .await
        .map_err(database)?;
    let found =
        transaction.query_opt("SELECT 1 FROM sites WHERE key = $1 FOR KEY SHARE", &[&site]).await.map_err(database)?;
    if found.is_none() {
        return Err(KbError::NoSuchSite);
    }
    let existing: i64 = transaction
        .query_one("SELECT count(*) FROM kb_entries WHERE record->>'site' = $1", &[&site])
        .await
        .map_err(database)?
        .get(0);
    Ok(existing as usize)
}

async fn now_ms(transaction: &Transaction<'_>) -> Result<i64, StorageError> {
    Ok(transaction.query_one("SELECT kefu_now_ms()", &[]).await.map_err(database)?.get(0))
}

/// Entries of `site` made from `inputs`, each with a new id from `kb_entry_ids`.
async fn new_entries(
    transaction: &Transaction<'_>,
    site: &str,
    inputs: Vec<EntryInput>,
    now: i64,
) -> Result<Vec<KbEntry>, StorageError> {
    let n_new = inputs.len() as i64;
    let rows = transaction
        .query("SELECT nextval('kb_entry_ids') FROM generate_series(1, $1::bigint)", &[&n_new])
        .await
        .map_err(database)?;
    let ids = rows.iter().map(|row| row.get::<_, i64>(0) as u64);
    Ok(ids.zip(inputs).map(|(id, input)| KbEntry::new(id, site.to_owned(), input, now)).collect())
}

/// Writes new or changed entries.
async fn put_entries(transaction: &Transaction<'_>, entries: &[KbEntry]) -> Result<(), StorageError> {
    let ids: Vec<i64> = entries.iter().map(|entry| entry.id as i64).collect();
    let records: Vec<String> = entries.iter().map(record_text).collect();
    transaction
        .execute(
            "INSERT INTO kb_entries (id, record)
             SELECT id, record::jsonb FROM unnest($1::bigint[], $2::text[]) AS stored(id, record)
             ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record",
            &[&ids, &records],
        )
        .await
        .map_err(database)?;
    Ok(())
}

impl KnowledgeBaseStore for PostgresKnowledgeBase {
    async fn entry(&self, id: u64) -> Result<Option<KbEntry>, StorageError> {
        let Ok(id) = i64::try_from(id) else { return Ok(None) };
        let client = self.readers.client().await?;
        postgres::record_where(
            &*client,
            "knowledge-base entry",
            "SELECT record::text FROM kb_entries WHERE id = $1",
            &[&id],
        )
        .await
    }

    async fn of_site(&self, site: &str) -> Result<Vec<KbEntry>, StorageError> {
        let client = self.readers.client().await?;
        let statement = "SELECT record::text FROM kb_entries WHERE record->>'site' = $1 ORDER BY id";
        postgres::records_where(&*client, "knowledge-base entry", statement, &[&site]).await
    }

    async fn create_many(&self, site: String, inputs: Vec<EntryInput>) -> Result<Vec<KbEntry>, KbError> {
        let inputs = knowledge_base::validated(inputs)?;
        let created = self
            .writers
            .run(async |transaction| -> Result<_, KbError> {
                let existing = lock_site(transaction, &site).await?;
                knowledge_base::check_room(existing, inputs.len())?;
                let now = now_ms(transaction).await?;
                let created = new_entries(transaction, &site, inputs, now).await?;
                put_entries(transaction, &created).await?;
                Ok(created)
            })
            .await?;
        self.announce(&site).await;
        Ok(created)
    }

    async fn import(&self, site: String, rows: Vec<ImportRow>) -> Result<ImportOutcome, KbError> {
        let outcome = self
            .writers
            .run(async |transaction| -> Result<_, KbError> {
                let existing = lock_site(transaction, &site).await?;
                let named_ids: Vec<i64> =
                    rows.iter().filter_map(|row| row.id).filter_map(|id| i64::try_from(id).ok()).collect();
                let named: Vec<KbEntry> = postgres::records_where(
                    transaction,
                    "knowledge-base entry",
                    "SELECT record::text FROM kb_entries WHERE id = ANY($1) FOR UPDATE",
                    &[&named_ids],
                )
                .await?;
                let named: HashMap<u64, KbEntry> = named.into_iter().map(|entry| (entry.id, entry)).collect();
                let now = now_ms(transaction).await?;
                let plan = knowledge_base::plan_import(&site, existing, rows, &named, now)?;
                let outcome = plan.outcome();
                let mut stored = new_entries(transaction, &site, plan.new_inputs, now).await?;
                stored.extend(plan.replaced);
                put_entries(transaction, &stored).await?;
                Ok(outcome)
            })
            .await?;
        self.announce(&site).await;
        Ok(outcome)
    }

    async fn update(&self, id: u64, input: EntryInput) -> Result<KbEntry, KbError> {
        let input = input.validate()?;
        let key = key_of(id)?;
        let entry = self
            .writers
            .run(async |transaction| -> Result<_, KbError> {
                let statement = "SELECT record::text FROM kb_entries WHERE id = $1 FOR UPDATE";
                let found: Option<KbEntry> =
                    postgres::record_where(transaction, "knowledge-base entry", statement, &[&key]).await?;
                let mut entry = found.ok_or(KbError::NotFound)?;
                entry.replace_with(input, now_ms(transaction).await?);
                put_entries(transaction, std::slice::from_ref(&entry)).await?;
                Ok(entry)
            })
            .await?;
        self.announce(&entry.site).await;
        Ok(entry)
    }

    async fn delete(&self, id: u64) -> Result<KbEntry, KbError> {
        let key = key_of(id)?;
        let client = self.readers.client().await.map_err(StorageError::from)?;
        let statement = "DELETE FROM kb_entries WHERE id = $1 RETURNING record::text";
        let deleted: Option<KbEntry> =
            postgres::record_where(&*client, "knowledge-base entry", statement, &[&key]).await?;
        let entry = deleted.ok_or(KbError::NotFound)?;
        self.announce(&entry.site).await;
        Ok(entry)
    }
}

impl VectorStore for PostgresKnowledgeBase {
    async fn load_vectors(&self, entries: Vec<KbEntry>) -> Result<SiteVectors, StorageError> {
        let ids: Vec<i64> = entries.iter().filter_map(|entry| i64::try_from(entry.id).ok()).collect();
        let client = self.readers.client().await?;
        let rows = client
            .query("SELECT entry_id, vector FROM kb_vectors WHERE entry_id = ANY($1)", &[&ids])
            .await
            .map_err(postgres::database)?;
        let mut vectors = SiteVectors::default();
        for row in &rows {
            let id: i64 = row.get(0);
            vectors.by_entry.insert(id as u64, embeddings::decode(row.get(1))?);
        }
        Ok(vectors)
    }

    async fn store_vectors(&self, vectors: Vec<StoredVector>) -> Result<(), StorageError> {
        self.writers
            .run(async |transaction| -> Result<(), StorageError> {
                for (id, fingerprint, vector) in &vectors {
                    let Ok(id) = i64::try_from(*id) else { continue };
                    // An entry deleted meanwhile gets no vector.
                    transaction
                        .execute(
                            "INSERT INTO kb_vectors (entry_id, vector) SELECT $1, $2 WHERE EXISTS
                                 (SELECT 1 FROM kb_entries WHERE id = $1 FOR KEY SHARE)
                             ON CONFLICT (entry_id) DO UPDATE SET vector = excluded.vector",
                            &[&id, &embeddings::encode(*fingerprint, vector)],
                        )
                        .await
                        .map_err(postgres::database)?;
                }
                Ok(())
            })
            .await
    }
}
