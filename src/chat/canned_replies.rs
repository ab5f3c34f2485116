//! Canned replies: per-site texts an agent inserts with a `/shortcut` in the composer.
//! Agents read them; admins create, change and delete them. The storage boundary is
//! [`CannedReplyStore`]: [`Store`] implements it here, the cluster's PostgreSQL in
//! `cluster::canned_replies`; both check a save with [`validate`] and [`check_save`].

use std::future::Future;

use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};

use crate::storage::{StorageError, Store, decode_json, encode_json, tables};

/// Longest shortcut, in characters.
pub const MAX_SHORTCUT_CHARS: usize = 32;
/// Longest canned text, in characters.
pub const MAX_TEXT_CHARS: usize = 4000;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CannedReply {
    pub id: u64,
    pub site: String,
    /// What follows `/` in the composer, unique per site.
    pub shortcut: String,
    pub text: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CannedReplyError {
    #[error("no such canned reply")]
    NotFound,
    #[error("the shortcut {0:?} is already used on this site")]
    DuplicateShortcut(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Checks and trims a shortcut and text.
pub fn validate(shortcut: &str, text: &str) -> Result<(String, String), CannedReplyError> {
    let shortcut = shortcut.trim().trim_start_matches('/');
    let n_shortcut = shortcut.chars().count();
    if n_shortcut == 0 || n_shortcut > MAX_SHORTCUT_CHARS || shortcut.chars().any(char::is_whitespace) {
        return Err(CannedReplyError::Invalid(format!(
            "shortcut: must be 1 to {MAX_SHORTCUT_CHARS} characters without spaces"
        )));
    }
    let text = text.trim();
    let n_text = text.chars().count();
    if n_text == 0 || n_text > MAX_TEXT_CHARS {
        return Err(CannedReplyError::Invalid(format!("text: must be 1 to {MAX_TEXT_CHARS} characters")));
    }
    Ok((shortcut.to_owned(), text.to_owned()))
}

/// Whether a save of `id` (`None` for a new reply) with `shortcut` on `site` may go ahead, given
/// the reply it replaces (`replaced`, as stored) and the site's other replies (`site_replies`):
/// a replaced reply must be the site's, and a shortcut is used once per site.
pub fn check_save(
    id: Option<u64>,
    site: &str,
    shortcut: &str,
    replaced: Option<&CannedReply>,
    site_replies: &[CannedReply],
) -> Result<(), CannedReplyError> {
    if id.is_some() && replaced.is_none_or(|reply| reply.site != site) {
        return Err(CannedReplyError::NotFound);
    }
    if site_replies.iter().any(|reply| Some(reply.id) != id && reply.shortcut == shortcut) {
        return Err(CannedReplyError::DuplicateShortcut(shortcut.to_owned()));
    }
    Ok(())
}

/// The canned replies' storage boundary.
pub trait CannedReplyStore: Send + Sync {
    /// One canned reply.
    fn canned_reply(&self, id: u64) -> impl Future<Output = Result<Option<CannedReply>, StorageError>> + Send;

    /// The canned replies of a site, by shortcut.
    fn of_site(&self, site: &str) -> impl Future<Output = Result<Vec<CannedReply>, StorageError>> + Send;

    /// Creates (`id` None) or replaces a canned reply. The site must exist (checked by the
    /// caller).
    fn save(
        &self,
        id: Option<u64>,
        site: String,
        shortcut: &str,
        text: &str,
    ) -> impl Future<Output = Result<CannedReply, CannedReplyError>> + Send;

    /// Deletes a canned reply of `site`.
    fn delete(&self, id: u64, site: String) -> impl Future<Output = Result<(), CannedReplyError>> + Send;
}

impl CannedReplyStore for Store {
    async fn canned_reply(&self, id: u64) -> Result<Option<CannedReply>, StorageError> {
        self.read(move |transaction| get(transaction, id)).await
    }

    async fn of_site(&self, site: &str) -> Result<Vec<CannedReply>, StorageError> {
        let site = site.to_owned();
        self.read(move |transaction| of_site(transaction, &site)).await
    }

    async fn save(
        &self,
        id: Option<u64>,
        site: String,
        shortcut: &str,
        text: &str,
    ) -> Result<CannedReply, CannedReplyError> {
        save(self, id, site, shortcut, text).await
    }

    async fn delete(&self, id: u64, site: String) -> Result<(), CannedReplyError> {
        delete(self, id, site).await
    }
}

/// Creates (`id` None) or replaces a canned reply. The site must exist (checked by the caller).
async fn save(
    store: &Store,
    id: Option<u64>,
    site: String,
    shortcut: &str,
    text: &str,
) -> Result<CannedReply, CannedReplyError> {
    let (shortcut, text) = validate(shortcut, text)?;
    store
        .write(move |context| {
            let mut table = context.transaction.open_table(tables::CANNED_REPLIES)?;
            let mut replaced = None;
            let mut site_replies = Vec::new();
            for entry in table.iter()? {
                let (key, value) = entry?;
                let reply: CannedReply = decode_json(value.value())?;
                if Some(key.value()) == id {
                    replaced = Some(reply.clone());
                }
                if reply.site == site {
                    site_replies.push(reply);
                }
            }
            if let Err(error) = check_save(id, &site, &shortcut, replaced.as_ref(), &site_replies) {
                return Ok(Err(error));
            }
            // Only the writer allocates ids, so the next after the largest is free.
            let id = match id {
                Some(id) => id,
                None => table.last()?.map(|(key, _)| key.value() + 1).unwrap_or(1),
            };
            let reply = CannedReply { id, site, shortcut, text };
            table.insert(id, encode_json(&reply).as_slice())?;
            Ok(Ok(reply))
        })
        .await
}

/// Deletes a canned reply of `site`.
async fn delete(store: &Store, id: u64, site: String) -> Result<(), CannedReplyError> {
    store
        .write(move |context| {
            let mut table = context.transaction.open_table(tables::CANNED_REPLIES)?;
            let found: Option<CannedReply> = table.get(id)?.map(|value| decode_json(value.value())).transpose()?;
            if found.is_none_or(|reply| reply.site != site) {
                return Ok(Err(CannedReplyError::NotFound));
            }
            table.remove(id)?;
            Ok(Ok(()))
        })
        .await
}

pub fn get(transaction: &ReadTransaction, id: u64) -> Result<Option<CannedReply>, StorageError> {
    match transaction.open_table(tables::CANNED_REPLIES) {
        Ok(table) => table.get(id)?.map(|value| decode_json(value.value())).transpose(),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// The canned replies of a site, by shortcut.
pub fn of_site(transaction: &ReadTransaction, site: &str) -> Result<Vec<CannedReply>, StorageError> {
    let table = match transaction.open_table(tables::CANNED_REPLIES) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(error) => return Err(error.into()),
    };
    let mut found = Vec::new();
    for entry in table.iter()? {
        let reply: CannedReply = decode_json(entry?.1.value())?;
        if reply.site == site {
            found.push(reply);
        }
    }
    found.sort_by(|a, b| a.shortcut.cmp(&b.shortcut));
    Ok(found)
}
