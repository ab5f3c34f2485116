//! Sites on the cluster's PostgreSQL: the [`SiteStore`] boundary over the `sites` record table
//! (migration 7), so every node reads and changes the same sites, with the appliance's checks
//! (`sites::new_record`, `Site::checked`, the routed teams being the site's own) and the same
//! cascade when a site is deleted, in one transaction. With NATS, each committed change is
//! announced so every node's `SiteDirectory` drops its copy (`events::follow_site_changes`).

use tokio_postgres::Transaction;

use crate::cluster::events;
use crate::cluster::postgres::Readers;
use crate::cluster::postgres::{self, PostgresError, Writers, database, record_of, record_text};
use crate::sites::store::SiteStore;
use crate::sites::{self, NewSite, Site, SiteError};
use crate::storage::StorageError;

/// Connections a node's reads take in turn.
const READ_CONNECTIONS: usize = 2;

/// Tries at a free key before giving up (a key is 32 random bits).
const KEY_TRIES: usize = 4;

pub struct PostgresSites {
    writers: Writers,
    readers: Readers,
    /// Where committed changes are announced to every node (`events::publish_site_changed`).
    nats: Option<async_nats::Client>,
}

impl PostgresSites {
    /// Connects and applies the migrations the database lacks (sites need migration 7).
    pub async fn open(url: &str) -> Result<PostgresSites, PostgresError> {
        postgres::ensure_migrated(url).await?;
        Ok(PostgresSites { writers: Writers::new(url, 1), readers: Readers::new(url, READ_CONNECTIONS), nats: None })
    }

    /// Announces every committed change on NATS, so other nodes' `SiteDirectory` drop their copy.
    pub fn with_events(self, nats: async_nats::Client) -> PostgresSites {
        PostgresSites { nats: Some(nats), ..self }
    }

    /// Tells every node that `key` changed (after its commit).
    async fn announce(&self, key: &str) {
        if let Some(nats) = &self.nats {
            events::publish_site_changed(nats, key).await;
        }
    }
}

/// The stored site with `key`, locked until the transaction ends.
async fn locked(transaction: &Transaction<'_>, key: &str) -> Result<Site, SiteError> {
    let row = transaction
        .query_opt("SELECT record::text FROM sites WHERE key = $1 FOR UPDATE", &[&key])
        .await
        .map_err(database)?;
    match row {
        Some(row) => Ok(record_of("site", row.get(0))?),
        None => Err(SiteError::NotFound(key.to_owned())),
    }
}

async fn update(transaction: &Transaction<'_>, site: &Site) -> Result<(), SiteError> {
    transaction
        .execute("UPDATE sites SET record = $2::text::jsonb WHERE key = $1", &[&site.key, &record_text(site)])
        .await
        .map_err(database)?;
    Ok(())
}

impl SiteStore for PostgresSites {
    async fn get(&self, key: &str) -> Result<Option<Site>, StorageError> {
        let client = self.readers.client().await?;
        postgres::record_where(&*client, "site", "SELECT record::text FROM sites WHERE key = $1", &[&key]).await
    }

    async fn list(&self) -> Result<Vec<Site>, StorageError> {
        let client = self.readers.client().await?;
        let rows =
            client.query("SELECT record::text FROM sites ORDER BY key COLLATE \"C\"", &[]).await.map_err(database)?;
        rows.iter().map(|row| record_of("site", row.get(0))).collect()
    }

    async fn create(&self, new_site: NewSite) -> Result<Site, SiteError> {
        let mut site = sites::new_record(new_site)?;
        for _ in 0..KEY_TRIES {
            let stored = self
                .writers
                .run(async |transaction| -> Result<_, SiteError> {
                    let inserted = transaction
                        .execute(
                            "INSERT INTO sites (key, record) VALUES ($1, $2::text::jsonb) ON CONFLICT (key) DO NOTHING",
                            &[&site.key, &record_text(&site)],
                        )
                        .await
                        .map_err(database)?;
                    Ok(inserted == 1)
                })
                .await?;
            if stored {
                return Ok(site);
            }
            site.key = sites::new_key();
        }
        Err(StorageError::Server("no free site key was found".into()).into())
    }

    async fn save(&self, site: Site) -> Result<Site, SiteError> {
        site.checked()?;
        let saved = self
            .writers
            .run(async |transaction| -> Result<_, SiteError> {
                let mut site = site;
                let team_ids: Vec<i64> = site.routed_teams().map(|id| i64::try_from(id).unwrap_or(-1)).collect();
                let rows = transaction
                    .query(
                        "SELECT id FROM unnest($1::bigint[]) AS wanted(id)
                     WHERE NOT EXISTS (SELECT 1 FROM teams t WHERE t.id = wanted.id AND t.record->>'site' = $2)",
                        &[&team_ids, &site.key],
                    )
                    .await
                    .map_err(database)?;
                if let Some(row) = rows.first() {
                    return Err(sites::foreign_team(row.get::<_, i64>(0) as u64));
                }
                let stored = locked(transaction, &site.key).await?;
                site.secret = stored.secret;
                site.created_at = stored.created_at;
                update(transaction, &site).await?;
                Ok(site)
            })
            .await?;
        self.announce(&saved.key).await;
        Ok(saved)
    }

    async fn rotate_secret(&self, key: &str) -> Result<Site, SiteError> {
        let rotated = self
            .writers
            .run(async |transaction| -> Result<_, SiteError> {
                let mut site = locked(transaction, key).await?;
                site.secret = sites::new_secret();
                update(transaction, &site).await?;
                Ok(site)
            })
            .await?;
        self.announce(key).await;
        Ok(rotated)
    }

    async fn delete(&self, key: &str) -> Result<Site, SiteError> {
        let deleted = self
            .writers
            .run(async |transaction| -> Result<_, SiteError> {
                let site = locked(transaction, key).await?;
                // What is only the site's goes with it, as on the appliance (`sites::delete`); its
                // conversations stay in the history.
                transaction.execute("DELETE FROM sites WHERE key = $1", &[&key]).await.map_err(database)?;
                for table in ["teams", "canned_replies", "webhooks", "kb_entries"] {
                    transaction
                        .execute(&format!("DELETE FROM {table} WHERE record->>'site' = $1"), &[&key])
                        .await
                        .map_err(database)?;
                }
                for table in ["bot_settings", "blocked_ips", "refused_origins"] {
                    transaction
                        .execute(&format!("DELETE FROM {table} WHERE site = $1"), &[&key])
                        .await
                        .map_err(database)?;
                }
                // Its API tokens are revoked (kept, with the time) and stop being accepted.
                transaction
                    .execute(
                        "WITH revoked AS (
                         UPDATE api_tokens SET record = jsonb_set(record, '{revoked_at}', to_jsonb(kefu_now_ms()))
                         WHERE record->>'site' = $1 AND (record->'revoked_at' IS NULL OR record->'revoked_at' = 'null')
                         RETURNING id)
                     DELETE FROM api_token_digests WHERE (record #>> '{}')::bigint IN (SELECT id FROM revoked)",
                        &[&key],
                    )
                    .await
                    .map_err(database)?;
                // And its key leaves the agents' sites.
                transaction
                    .execute(
                        "UPDATE agents SET record = jsonb_set(record, '{sites}',
                         (SELECT coalesce(jsonb_agg(s), '[]'::jsonb) FROM jsonb_array_elements(record->'sites') s
                          WHERE s <> to_jsonb($1::text)))
                     WHERE record->'sites' ? $1",
                        &[&key],
                    )
                    .await
                    .map_err(database)?;
                Ok(site)
            })
            .await?;
        self.announce(key).await;
        Ok(deleted)
    }
}
