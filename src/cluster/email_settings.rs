//! The SMTP settings on the cluster's PostgreSQL: the [`EmailSettingsStore`] boundary over the
//! `email_settings` record table (migration 7), so settings saved through one node are what
//! every node sends with. Decided as on the appliance (`settings::in_effect`,
//! `SettingsChange::apply`); a save takes an advisory lock for its transaction, so two nodes
//! saving at once apply their changes one after the other and neither is lost.

use crate::base::config::EmailConfig;
use crate::cluster::outbox::{self, OutboxContent, OutboxKind, OutboxRow, OutboxStatus};
use crate::cluster::postgres::{self, PostgresError, Readers, Writers, database};
use crate::email::notifications::{EmailRuntime, RUNTIME_KEY};
use crate::email::settings::{self, EmailSettingsStore, SMTP_KEY, SettingsChange, SmtpSettings};
use crate::email::{Email, EmailError, EmailStatus, OutgoingEmail, sender};
use crate::storage::StorageError;

pub struct PostgresEmailSettings {
    readers: Readers,
    writers: Writers,
}

impl PostgresEmailSettings {
    /// Connects and applies the migrations the database lacks.
    pub async fn open(url: &str) -> Result<PostgresEmailSettings, PostgresError> {
        postgres::ensure_migrated(url).await?;
        Ok(PostgresEmailSettings { readers: Readers::new(url, 1), writers: Writers::new(url, 1) })
    }
}

impl PostgresEmailSettings {
    /// Records what emails queued in the nodes' transactions need from the configuration (the
    /// URL they link to), as the appliance does on every start; the last node started wins.
    pub async fn remember_runtime(&self, runtime: &EmailRuntime) -> Result<(), StorageError> {
        self.writers
            .run(async |transaction| {
                postgres::put_record(transaction, "email_settings", "name", &RUNTIME_KEY, runtime).await
            })
            .await
    }
}

/// The statement reading the saved settings.
const SAVED: &str = "SELECT record::text FROM email_settings WHERE name = $1";

/// An email row as the appliance's `Email`, with its state.
fn email_of(row: OutboxRow) -> Option<Email> {
    let mut email = row.content.into_email(row.id, row.site, row.attempts, row.created_at)?;
    email.status = match row.status {
        OutboxStatus::Pending => EmailStatus::Pending,
        OutboxStatus::Delivered => EmailStatus::Sent,
        OutboxStatus::Failed => EmailStatus::Failed,
        OutboxStatus::Skipped => EmailStatus::Skipped,
    };
    email.next_attempt_at = row.next_attempt_at;
    email.last_error = row.last_error;
    email.sent_at = row.finished_at.filter(|_| email.status == EmailStatus::Sent);
    Some(email)
}

impl EmailSettingsStore for PostgresEmailSettings {
    async fn recent_emails(&self, limit: usize) -> Result<Vec<Email>, StorageError> {
        let client = self.readers.client().await?;
        let rows = outbox::newest(&*client, OutboxKind::Email, limit).await?;
        Ok(rows.into_iter().filter_map(email_of).collect())
    }

    async fn send_now(&self, config: &EmailConfig, email: OutgoingEmail) -> Result<Result<(), String>, StorageError> {
        let smtp = self.load(config).await?;
        let site = email.site.clone();
        let content = OutboxContent::of_email(email);
        let Some(sendable) = content.clone().into_email(0, site.clone(), 0, crate::base::clock::now_millis()) else {
            return Err(StorageError::Corrupt("an email's content was not an email".to_owned()));
        };
        let outcome = match smtp.is_configured() {
            true => sender::send(&smtp, &sendable, std::time::Duration::from_secs(config.timeout_secs)).await,
            false => Err(sender::NOT_CONFIGURED.to_owned()),
        };
        let mut writer = self.writers.acquire().await?;
        outbox::record_attempted(writer.client(), site.as_deref(), &content, &outcome).await?;
        Ok(outcome)
    }

    async fn load(&self, config: &EmailConfig) -> Result<SmtpSettings, StorageError> {
        let client = self.readers.client().await?;
        let saved = postgres::record_where(&*client, "SMTP settings", SAVED, &[&SMTP_KEY]).await?;
        Ok(settings::in_effect(saved, config))
    }

    async fn save(&self, config: &EmailConfig, change: SettingsChange) -> Result<SmtpSettings, EmailError> {
        self.writers
            .run(async |transaction| -> Result<_, EmailError> {
                transaction
                    .execute("SELECT pg_advisory_xact_lock(hashtext('kefu email settings'))", &[])
                    .await
                    .map_err(database)?;
                let saved = postgres::record_where(transaction, "SMTP settings", SAVED, &[&SMTP_KEY]).await?;
                let next = change.apply(&settings::in_effect(saved, config))?;
                postgres::put_record(transaction, "email_settings", "name", &SMTP_KEY, &next).await?;
                Ok(next)
            })
            .await
    }
}
