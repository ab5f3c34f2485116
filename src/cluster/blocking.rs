//! Blocks on the cluster's PostgreSQL: the [`BlockStore`] boundary over the `visitors`,
//! `blocked_visitors` and `blocked_ips` record tables (migration 7), so a visitor or address
//! blocked through one node is refused by every other. A visitor's block locks the visitor's
//! row and writes the flag, the time and the address in one transaction; times are the
//! database's clock (`kefu_now_ms()`). Lists are ordered with the appliance's `newest_first`.
//!
//! Closing the blocked visitor's live connections on every node is not done here: the caller
//! closes those on its own node (`blocking::disconnect`).

use crate::cluster::postgres::{self, PostgresError, Readers, Writers, database, record_of, record_text};
use crate::people::blocking::{self, BlockError, BlockStore};
use crate::people::visitors::Visitor;
use crate::storage::StorageError;

pub struct PostgresBlocks {
    readers: Readers,
    writers: Writers,
}

impl PostgresBlocks {
    /// Connects and applies the migrations the database lacks.
    pub async fn open(url: &str) -> Result<PostgresBlocks, PostgresError> {
        postgres::ensure_migrated(url).await?;
        Ok(PostgresBlocks { readers: Readers::new(url, 2), writers: Writers::new(url, 1) })
    }
}

/// Blocks `ip` on `site` now (again: the time moves to now).
const BLOCK_ADDRESS: &str = "INSERT INTO blocked_ips (site, address, record) VALUES ($1, $2, to_jsonb(kefu_now_ms()))
                             ON CONFLICT (site, address) DO UPDATE SET record = EXCLUDED.record";

impl BlockStore for PostgresBlocks {
    async fn set_visitor_blocked(
        &self,
        visitor_id: u64,
        blocked: bool,
        ip: Option<String>,
    ) -> Result<Visitor, BlockError> {
        let id = i64::try_from(visitor_id).map_err(|_| BlockError::NotFound)?;
        self.writers
            .run(async |transaction| -> Result<_, BlockError> {
                let row = transaction
                    .query_opt("SELECT record::text FROM visitors WHERE id = $1 FOR UPDATE", &[&id])
                    .await
                    .map_err(database)?;
                let mut visitor: Visitor =
                    record_of("visitor", row.ok_or(BlockError::NotFound)?.get(0)).map_err(BlockError::from)?;
                visitor.blocked = blocked;
                transaction
                    .execute(
                        "UPDATE visitors SET record = $2::text::jsonb WHERE id = $1",
                        &[&id, &record_text(&visitor)],
                    )
                    .await
                    .map_err(database)?;
                let statement = match blocked {
                    true => {
                        "INSERT INTO blocked_visitors (visitor_id, record) VALUES ($1, to_jsonb(kefu_now_ms()))
                         ON CONFLICT (visitor_id) DO UPDATE SET record = EXCLUDED.record"
                    }
                    false => "DELETE FROM blocked_visitors WHERE visitor_id = $1",
                };
                transaction.execute(statement, &[&id]).await.map_err(database)?;
                if let (true, Some(ip)) = (blocked, &ip) {
                    transaction.execute(BLOCK_ADDRESS, &[&visitor.site, ip]).await.map_err(database)?;
                }
                Ok(visitor)
            })
            .await
    }

    async fn block_address(&self, site: String, ip: String) -> Result<(), StorageError> {
        let client = self.readers.client().await?;
        client.execute(BLOCK_ADDRESS, &[&site, &ip]).await.map_err(database)?;
        Ok(())
    }

    async fn unblock_address(&self, site: String, ip: String) -> Result<(), BlockError> {
        let client = self.readers.client().await.map_err(StorageError::from)?;
        let removed = client
            .execute("DELETE FROM blocked_ips WHERE site = $1 AND address = $2", &[&site, &ip])
            .await
            .map_err(database)?;
        match removed {
            0 => Err(BlockError::NotFound),
            _ => Ok(()),
        }
    }

    async fn blocked_visitors(&self) -> Result<Vec<(Visitor, i64)>, StorageError> {
        let client = self.readers.client().await?;
        let rows = client
            .query(
                "SELECT v.record::text, (b.record #>> '{}')::bigint FROM blocked_visitors b
                 JOIN visitors v ON v.id = b.visitor_id",
                &[],
            )
            .await
            .map_err(database)?;
        let found = rows
            .iter()
            .map(|row| Ok((record_of("visitor", row.get(0))?, row.get(1))))
            .collect::<Result<Vec<_>, StorageError>>()?;
        Ok(blocking::newest_first(found, |(_, blocked_at)| *blocked_at))
    }

    async fn blocked_addresses(&self) -> Result<Vec<(String, String, i64)>, StorageError> {
        let client = self.readers.client().await?;
        let rows = client
            .query("SELECT site, address, (record #>> '{}')::bigint FROM blocked_ips", &[])
            .await
            .map_err(database)?;
        let found = rows.iter().map(|row| (row.get(0), row.get(1), row.get(2))).collect();
        Ok(blocking::newest_first(found, |(_, _, blocked_at)| *blocked_at))
    }

    async fn is_ip_blocked(&self, site: &str, ip: &str) -> Result<bool, StorageError> {
        let client = self.readers.client().await?;
        let row = client
            .query_opt("SELECT 1 FROM blocked_ips WHERE site = $1 AND address = $2", &[&site, &ip])
            .await
            .map_err(database)?;
        Ok(row.is_some())
    }
}
