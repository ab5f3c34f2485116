//! The audit log on the cluster's PostgreSQL: the [`AuditLog`] boundary over the `audit_log`
//! record table (migration 7). An entry's id comes from `audit_ids` and its time from the
//! database's clock (`kefu_now_ms()`), taken together, so ids follow time across nodes whose
//! clocks disagree, as the search's early stop at `from` relies on. A search pages with the
//! appliance's [`AuditPage`], reading the newest entries a batch at a time.

use crate::cluster::postgres::{self, PostgresError, Readers, database, record_of, record_text};
use crate::history::audit::{AuditEntry, AuditFilter, AuditLog, AuditPage, NewAuditEntry};
use crate::storage::StorageError;

/// Entries a search reads per query.
const SEARCH_BATCH: i64 = 500;

pub struct PostgresAuditLog {
    connections: Readers,
}

impl PostgresAuditLog {
    /// Connects and applies the migrations the database lacks.
    pub async fn open(url: &str) -> Result<PostgresAuditLog, PostgresError> {
        postgres::ensure_migrated(url).await?;
        Ok(PostgresAuditLog { connections: Readers::new(url, 2) })
    }
}

impl AuditLog for PostgresAuditLog {
    async fn append(&self, entry: NewAuditEntry) -> Result<(), StorageError> {
        let client = self.connections.client().await?;
        let row = client.query_one("SELECT nextval('audit_ids'), kefu_now_ms()", &[]).await.map_err(database)?;
        let (id, at): (i64, i64) = (row.get(0), row.get(1));
        let entry = entry.at(id as u64, at);
        client
            .execute("INSERT INTO audit_log (id, record) VALUES ($1, $2::text::jsonb)", &[&id, &record_text(&entry)])
            .await
            .map_err(database)?;
        Ok(())
    }

    async fn search(&self, filter: AuditFilter) -> Result<Vec<AuditEntry>, StorageError> {
        let client = self.connections.client().await?;
        let mut page = AuditPage::default();
        let mut below = filter.before.and_then(|before| i64::try_from(before).ok()).unwrap_or(i64::MAX);
        loop {
            let rows = client
                .query(
                    "SELECT id, record::text FROM audit_log WHERE id < $1 ORDER BY id DESC LIMIT $2",
                    &[&below, &SEARCH_BATCH],
                )
                .await
                .map_err(database)?;
            let n_rows = rows.len();
            for row in rows {
                below = row.get(0);
                if !page.offer(record_of("audit entry", row.get(1))?, &filter) {
                    return Ok(page.found);
                }
            }
            if n_rows < SEARCH_BATCH as usize {
                return Ok(page.found);
            }
        }
    }
}
