//! The bot's settings on the cluster's PostgreSQL: the [`BotSettingsStore`] boundary over the
//! `bot_settings` record table (migration 7), each change applied with the appliance's
//! `SettingsChange::apply` to the stored settings in one transaction under an advisory lock of
//! the site, so two nodes changing different fields at once keep both. With NATS, each committed
//! change is announced so every node drops its copy (`events::follow_bot_settings_changes`).

use crate::bot::BotSettings;
use crate::bot::settings::{BotSettingsStore, ChangeError, SettingsChange};
use crate::cluster::events;
use crate::cluster::postgres::{self, PostgresError, Readers, Writers, database};
use crate::storage::StorageError;

pub struct PostgresBotSettings {
    readers: Readers,
    writers: Writers,
    /// Where committed changes are announced to every node
    /// (`events::publish_bot_settings_changed`).
    nats: Option<async_nats::Client>,
}

impl PostgresBotSettings {
    /// Connects and applies the migrations the database lacks.
    pub async fn open(url: &str) -> Result<PostgresBotSettings, PostgresError> {
        postgres::ensure_migrated(url).await?;
        Ok(PostgresBotSettings { readers: Readers::new(url, 1), writers: Writers::new(url, 1), nats: None })
    }

    /// Announces every committed change on NATS, so other nodes drop their copy.
    pub fn with_events(self, nats: async_nats::Client) -> PostgresBotSettings {
        PostgresBotSettings { nats: Some(nats), ..self }
    }
}

/// The statement reading a site's settings.
const SETTINGS_OF_SITE: &str = "SELECT record::text FROM bot_settings WHERE site = $1";

impl BotSettingsStore for PostgresBotSettings {
    async fn settings(&self, site: &str) -> Result<BotSettings, StorageError> {
        let client = self.readers.client().await?;
        let stored = postgres::record_where(&*client, "bot settings", SETTINGS_OF_SITE, &[&site]).await?;
        Ok(stored.unwrap_or_default())
    }

    async fn change(
        &self,
        site: &str,
        requested: SettingsChange,
        allow_private_llm: bool,
    ) -> Result<BotSettings, ChangeError> {
        let settings = self
            .writers
            .run(async |transaction| -> Result<_, ChangeError> {
                transaction
                    .execute("SELECT pg_advisory_xact_lock(hashtext('kefu bot settings ' || $1))", &[&site])
                    .await
                    .map_err(database)?;
                let found = transaction
                    .query_opt("SELECT 1 FROM sites WHERE key = $1 FOR KEY SHARE", &[&site])
                    .await
                    .map_err(database)?;
                if found.is_none() {
                    return Err(ChangeError::NoSuchSite);
                }
                let stored: Option<BotSettings> =
                    postgres::record_where(transaction, "bot settings", SETTINGS_OF_SITE, &[&site]).await?;
                let settings = requested.apply(&stored.unwrap_or_default(), allow_private_llm)?;
                postgres::put_record(transaction, "bot_settings", "site", &site, &settings).await?;
                Ok(settings)
            })
            .await?;
        if let Some(nats) = &self.nats {
            events::publish_bot_settings_changed(nats, site).await;
        }
        Ok(settings)
    }
}
