//! Canned replies on the cluster's PostgreSQL: the [`CannedReplyStore`] boundary over the
//! `canned_replies` record table (migration 7), checked as on the appliance (`validate`,
//! `check_save`). A save takes an advisory lock of its site for its transaction, so two nodes
//! saving one shortcut at once store it once; new ids come from `canned_reply_ids` (migration 10).

use crate::chat::canned_replies::{self, CannedReply, CannedReplyError, CannedReplyStore};
use crate::cluster::postgres::{self, PostgresError, Readers, Writers, database};
use crate::storage::StorageError;

pub struct PostgresCannedReplies {
    readers: Readers,
    writers: Writers,
}

impl PostgresCannedReplies {
    /// Connects and applies the migrations the database lacks.
    pub async fn open(url: &str) -> Result<PostgresCannedReplies, PostgresError> {
        postgres::ensure_migrated(url).await?;
        Ok(PostgresCannedReplies { readers: Readers::new(url, 2), writers: Writers::new(url, 1) })
    }
}

/// The statement reading a site's replies.
const OF_SITE: &str = "SELECT record::text FROM canned_replies WHERE record->>'site' = $1";

impl CannedReplyStore for PostgresCannedReplies {
    async fn canned_reply(&self, id: u64) -> Result<Option<CannedReply>, StorageError> {
        let Ok(id) = i64::try_from(id) else { return Ok(None) };
        let client = self.readers.client().await?;
        postgres::record_where(
            &*client,
            "canned reply",
            "SELECT record::text FROM canned_replies WHERE id = $1",
            &[&id],
        )
        .await
    }

    async fn of_site(&self, site: &str) -> Result<Vec<CannedReply>, StorageError> {
        let client = self.readers.client().await?;
        let mut replies: Vec<CannedReply> =
            postgres::records_where(&*client, "canned reply", OF_SITE, &[&site]).await?;
        replies.sort_by(|a, b| a.shortcut.cmp(&b.shortcut));
        Ok(replies)
    }

    async fn save(
        &self,
        id: Option<u64>,
        site: String,
        shortcut: &str,
        text: &str,
    ) -> Result<CannedReply, CannedReplyError> {
        let (shortcut, text) = canned_replies::validate(shortcut, text)?;
        let key = match id {
            Some(id) => Some(i64::try_from(id).map_err(|_| CannedReplyError::NotFound)?),
            None => None,
        };
        self.writers
            .run(async |transaction| -> Result<_, CannedReplyError> {
                transaction
                    .execute("SELECT pg_advisory_xact_lock(hashtext('kefu canned replies ' || $1))", &[&site])
                    .await
                    .map_err(database)?;
                let replaced: Option<CannedReply> = match key {
                    Some(key) => {
                        let statement = "SELECT record::text FROM canned_replies WHERE id = $1 FOR UPDATE";
                        postgres::record_where(transaction, "canned reply", statement, &[&key]).await?
                    }
                    None => None,
                };
                let site_replies: Vec<CannedReply> =
                    postgres::records_where(transaction, "canned reply", OF_SITE, &[&site]).await?;
                canned_replies::check_save(id, &site, &shortcut, replaced.as_ref(), &site_replies)?;
                let key = match key {
                    Some(key) => key,
                    None => {
                        transaction.query_one("SELECT nextval('canned_reply_ids')", &[]).await.map_err(database)?.get(0)
                    }
                };
                let reply = CannedReply { id: key as u64, site, shortcut, text };
                postgres::put_record(transaction, "canned_replies", "id", &key, &reply).await?;
                Ok(reply)
            })
            .await
    }

    async fn delete(&self, id: u64, site: String) -> Result<(), CannedReplyError> {
        let key = i64::try_from(id).map_err(|_| CannedReplyError::NotFound)?;
        let client = self.readers.client().await.map_err(StorageError::from)?;
        let deleted = client
            .execute("DELETE FROM canned_replies WHERE id = $1 AND record->>'site' = $2", &[&key, &site])
            .await
            .map_err(database)?;
        match deleted {
            0 => Err(CannedReplyError::NotFound),
            _ => Ok(()),
        }
    }
}
