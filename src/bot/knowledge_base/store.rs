//! The knowledge base's storage boundary: [`KnowledgeBaseStore`], the entries' reads and changes
//! in domain terms. [`Store`] implements it here with writer operations; the cluster's
//! PostgreSQL in `cluster::knowledge_base`. Both decide with the domain functions of
//! [`crate::bot::knowledge_base`] and only load and store.

use std::collections::HashMap;
use std::future::Future;

use futures_util::future::BoxFuture;
use redb::ReadableTable;

use crate::bot::knowledge_base::formats::ImportRow;
use crate::bot::knowledge_base::{self, EntryInput, ImportOutcome, KbEntry, KbError};
use crate::storage::commit_log::LoggedTransaction;
use crate::storage::writer::Counter;
use crate::storage::{StorageError, Store, WriteContext, decode_json, encode_json, tables};

pub trait KnowledgeBaseStore: Send + Sync {
    /// One entry.
    fn entry(&self, id: u64) -> impl Future<Output = Result<Option<KbEntry>, StorageError>> + Send;

    /// Every entry of a site, oldest first.
    fn of_site(&self, site: &str) -> impl Future<Output = Result<Vec<KbEntry>, StorageError>> + Send;

    /// Adds entries to a site, all or none; each input is validated.
    fn create_many(
        &self,
        site: String,
        inputs: Vec<EntryInput>,
    ) -> impl Future<Output = Result<Vec<KbEntry>, KbError>> + Send;

    /// Imports rows into a site, all or none ([`knowledge_base::plan_import`]): a row with an
    /// `id` replaces that entry of the site, a row without adds one.
    fn import(&self, site: String, rows: Vec<ImportRow>)
    -> impl Future<Output = Result<ImportOutcome, KbError>> + Send;

    /// Replaces the editable fields of an entry with a validated input's.
    fn update(&self, id: u64, input: EntryInput) -> impl Future<Output = Result<KbEntry, KbError>> + Send;

    /// Deletes an entry (and its vector, where one is stored); returns it.
    fn delete(&self, id: u64) -> impl Future<Output = Result<KbEntry, KbError>> + Send;
}

/// What `KnowledgeBase` reads a site's entries from: any [`KnowledgeBaseStore`], behind a
/// pointer.
pub trait EntrySource: Send + Sync {
    fn site_entries<'a>(&'a self, site: &'a str) -> BoxFuture<'a, Result<Vec<KbEntry>, StorageError>>;
}

impl<T: KnowledgeBaseStore> EntrySource for T {
    fn site_entries<'a>(&'a self, site: &'a str) -> BoxFuture<'a, Result<Vec<KbEntry>, StorageError>> {
        Box::pin(self.of_site(site))
    }
}

impl KnowledgeBaseStore for Store {
    async fn entry(&self, id: u64) -> Result<Option<KbEntry>, StorageError> {
        self.read(move |transaction| knowledge_base::get(transaction, id)).await
    }

    async fn of_site(&self, site: &str) -> Result<Vec<KbEntry>, StorageError> {
        let site = site.to_owned();
        self.read(move |transaction| knowledge_base::list(transaction, &site)).await
    }

    async fn create_many(&self, site: String, inputs: Vec<EntryInput>) -> Result<Vec<KbEntry>, KbError> {
        let inputs = knowledge_base::validated(inputs)?;
        self.write(move |context| {
            if !site_exists(context.transaction, &site)? {
                return Ok(Err(KbError::NoSuchSite));
            }
            if let Err(error) = knowledge_base::check_room(count_of_site(context, &site)?, inputs.len()) {
                return Ok(Err(error));
            }
            let now = context.now;
            let created: Vec<KbEntry> = inputs
                .into_iter()
                .map(|input| KbEntry::new(context.next_id(Counter::KbEntry), site.clone(), input, now))
                .collect();
            put_entries(context, &created)?;
            Ok(Ok(created))
        })
        .await
    }

    async fn import(&self, site: String, rows: Vec<ImportRow>) -> Result<ImportOutcome, KbError> {
        self.write(move |context| {
            if !site_exists(context.transaction, &site)? {
                return Ok(Err(KbError::NoSuchSite));
            }
            let existing = count_of_site(context, &site)?;
            let mut named = HashMap::new();
            {
                let entries = context.transaction.open_table(tables::KB_ENTRIES)?;
                for id in rows.iter().filter_map(|row| row.id) {
                    if let Some(value) = entries.get(id)? {
                        named.insert(id, decode_json::<KbEntry>(value.value())?);
                    }
                }
            }
            let plan = match knowledge_base::plan_import(&site, existing, rows, &named, context.now) {
                Ok(plan) => plan,
                Err(error) => return Ok(Err(error)),
            };
            let outcome = plan.outcome();
            let now = context.now;
            let mut stored: Vec<KbEntry> = plan
                .new_inputs
                .into_iter()
                .map(|input| KbEntry::new(context.next_id(Counter::KbEntry), site.clone(), input, now))
                .collect();
            stored.extend(plan.replaced);
            put_entries(context, &stored)?;
            Ok(Ok(outcome))
        })
        .await
    }

    async fn update(&self, id: u64, input: EntryInput) -> Result<KbEntry, KbError> {
        let input = input.validate()?;
        self.write(move |context| {
            let mut entries = context.transaction.open_table(tables::KB_ENTRIES)?;
            let found = entries.get(id)?.map(|value| decode_json::<KbEntry>(value.value())).transpose()?;
            let Some(mut entry) = found else {
                return Ok(Err(KbError::NotFound));
            };
            entry.replace_with(input, context.now);
            entries.insert(id, encode_json(&entry).as_slice())?;
            Ok(Ok(entry))
        })
        .await
    }

    async fn delete(&self, id: u64) -> Result<KbEntry, KbError> {
        self.write(move |context| {
            let mut entries = context.transaction.open_table(tables::KB_ENTRIES)?;
            let found = entries.get(id)?.map(|value| decode_json::<KbEntry>(value.value())).transpose()?;
            let Some(entry) = found else {
                return Ok(Err(KbError::NotFound));
            };
            entries.remove(id)?;
            context.transaction.open_table(tables::KB_SITE_ENTRIES)?.remove((entry.site.as_str(), id))?;
            context.transaction.open_table(tables::KB_VECTORS)?.remove(id)?;
            Ok(Ok(entry))
        })
        .await
    }
}

fn site_exists(transaction: &LoggedTransaction<'_>, site: &str) -> Result<bool, StorageError> {
    Ok(transaction.open_table(tables::SITES)?.get(site)?.is_some())
}

/// How many entries a site holds.
fn count_of_site(context: &WriteContext<'_>, site: &str) -> Result<usize, StorageError> {
    let index = context.transaction.open_table(tables::KB_SITE_ENTRIES)?;
    Ok(index.range((site, 0)..=(site, u64::MAX))?.count())
}

/// Writes new or changed entries with their place in their site's list.
fn put_entries(context: &WriteContext<'_>, stored: &[KbEntry]) -> Result<(), StorageError> {
    let mut entries = context.transaction.open_table(tables::KB_ENTRIES)?;
    let mut index = context.transaction.open_table(tables::KB_SITE_ENTRIES)?;
    for entry in stored {
        entries.insert(entry.id, encode_json(entry).as_slice())?;
        index.insert((entry.site.as_str(), entry.id), ())?;
    }
    Ok(())
}
