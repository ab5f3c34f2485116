//! Agents' push subscriptions on the cluster's PostgreSQL: the [`PushSubscriptionStore`] over the
//! `push_subscriptions` record table (migration 7, keyed by agent and `endpoint_hash`, stored as
//! the same bits in a signed column), so a browser subscribed through one node is notified by
//! whichever node sends. A save takes an advisory lock of its agent, so two nodes saving at once
//! keep to the most per agent; both backends evict with `subscriptions::beyond_the_most`.

use crate::cluster::postgres::{
    self, PostgresError, Readers, Writers, database, record_of, record_text, records_where,
};
use crate::push::subscriptions::{self, PushSubscriptionStore, Subscription, SubscriptionError};
use crate::storage::StorageError;

pub struct PostgresPushSubscriptions {
    readers: Readers,
    writers: Writers,
}

impl PostgresPushSubscriptions {
    /// Connects and applies the migrations the database lacks.
    pub async fn open(url: &str) -> Result<PostgresPushSubscriptions, PostgresError> {
        postgres::ensure_migrated(url).await?;
        Ok(PostgresPushSubscriptions { readers: Readers::new(url, 1), writers: Writers::new(url, 1) })
    }
}

/// A subscription's key columns.
fn key_of(agent_id: u64, endpoint: &str) -> Result<(i64, i64), StorageError> {
    let agent =
        i64::try_from(agent_id).map_err(|_| StorageError::Corrupt(format!("agent id {agent_id} out of range")))?;
    Ok((agent, subscriptions::endpoint_hash(endpoint) as i64))
}

impl PushSubscriptionStore for PostgresPushSubscriptions {
    async fn keep_subscription(&self, subscription: Subscription) -> Result<Subscription, StorageError> {
        let (agent, hash) = key_of(subscription.agent_id, &subscription.endpoint)?;
        self.writers
            .run(async |transaction| -> Result<_, StorageError> {
                transaction
                    .execute("SELECT pg_advisory_xact_lock(hashtext('kefu push subscriptions'), $1::int)", &[&(agent as i32)])
                    .await
                    .map_err(database)?;
                let rows = transaction
                    .query(
                        "SELECT endpoint_hash, record::text FROM push_subscriptions WHERE agent_id = $1 AND endpoint_hash <> $2",
                        &[&agent, &hash],
                    )
                    .await
                    .map_err(database)?;
                let mut others = Vec::with_capacity(rows.len());
                for row in &rows {
                    let other: Subscription = record_of("push subscription", row.get(1))?;
                    others.push((row.get::<_, i64>(0), other.created_at));
                }
                let evicted: Vec<i64> = subscriptions::beyond_the_most(others).collect();
                transaction
                    .execute(
                        "DELETE FROM push_subscriptions WHERE agent_id = $1 AND endpoint_hash = ANY($2)",
                        &[&agent, &evicted],
                    )
                    .await
                    .map_err(database)?;
                transaction
                    .execute(
                        "INSERT INTO push_subscriptions (agent_id, endpoint_hash, record) VALUES ($1, $2, $3::text::jsonb)
                         ON CONFLICT (agent_id, endpoint_hash) DO UPDATE SET record = EXCLUDED.record",
                        &[&agent, &hash, &record_text(&subscription)],
                    )
                    .await
                    .map_err(database)?;
                Ok(subscription)
            })
            .await
    }

    async fn remove_subscription(&self, agent_id: u64, endpoint: String) -> Result<(), SubscriptionError> {
        let Ok((agent, hash)) = key_of(agent_id, &endpoint) else { return Err(SubscriptionError::NotFound) };
        let client = self.readers.client().await.map_err(StorageError::from)?;
        let removed = client
            .execute("DELETE FROM push_subscriptions WHERE agent_id = $1 AND endpoint_hash = $2", &[&agent, &hash])
            .await
            .map_err(database)?;
        match removed {
            0 => Err(SubscriptionError::NotFound),
            _ => Ok(()),
        }
    }

    async fn subscriptions_of(&self, agent_id: u64) -> Result<Vec<Subscription>, StorageError> {
        let Ok(agent) = i64::try_from(agent_id) else { return Ok(Vec::new()) };
        let client = self.readers.client().await?;
        let mut found: Vec<Subscription> = records_where(
            &*client,
            "push subscription",
            "SELECT record::text FROM push_subscriptions WHERE agent_id = $1",
            &[&agent],
        )
        .await?;
        found.sort_by_key(|subscription| subscription.created_at);
        Ok(found)
    }

    async fn any_subscription(&self) -> Result<bool, StorageError> {
        let client = self.readers.client().await?;
        let row = client.query_opt("SELECT 1 FROM push_subscriptions LIMIT 1", &[]).await.map_err(database)?;
        Ok(row.is_some())
    }

    async fn vapid_secret(&self, fresh: Vec<u8>) -> Result<Vec<u8>, StorageError> {
        // Stored as the copy stores the appliance's (`redb_copy::records`): hex in a JSON string.
        self.writers
            .run(async |transaction| -> Result<_, StorageError> {
                transaction
                    .execute(
                        "INSERT INTO push_keys (name, record) VALUES ($1, to_jsonb($2::text)) ON CONFLICT DO NOTHING",
                        &[&crate::push::vapid::KEY_ROW, &hex::encode(&fresh)],
                    )
                    .await
                    .map_err(database)?;
                let row = transaction
                    .query_one("SELECT record #>> '{}' FROM push_keys WHERE name = $1", &[&crate::push::vapid::KEY_ROW])
                    .await
                    .map_err(database)?;
                let text: String = row.get(0);
                hex::decode(text).map_err(|_| StorageError::Corrupt("the stored VAPID key is not hex".into()))
            })
            .await
    }
}
