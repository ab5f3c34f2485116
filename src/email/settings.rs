//! The SMTP server kefu sends through: `[email]` of kefu.toml, overridden as a whole by the
//! settings an admin saves on the Email page (stored in `email_settings_v1`).
//!
//! A change names only the fields it changes ([`SettingsChange`]); what it leaves out keeps its
//! value, and a change with any invalid field is refused whole, so nothing is half-saved.
//!
//! [`EmailSettingsStore`] is its storage boundary: [`Store`] implements it here, the cluster's
//! PostgreSQL in `cluster::email_settings`; both decide with [`in_effect`] and
//! [`SettingsChange::apply`].

use std::future::Future;

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::EmailError;
use crate::base::config::EmailConfig;
use crate::base::field_error::FieldError;
use crate::storage::{StorageError, Store, decode_json, encode_json, tables};

/// The key of the saved settings in `email_settings_v1` (and the cluster's `email_settings`).
pub const SMTP_KEY: &str = "smtp";

/// How the connection to the SMTP server is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain connection upgraded with STARTTLS (refused if the server does not offer it).
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
    /// No encryption: a relay on this machine or a trusted network only.
    None,
}

impl Security {
    pub fn as_str(self) -> &'static str {
        match self {
            Security::Starttls => "starttls",
            Security::Tls => "tls",
            Security::None => "none",
        }
    }

    pub fn parse(text: &str) -> Result<Security, FieldError> {
        match text.trim().to_lowercase().as_str() {
            "starttls" => Ok(Security::Starttls),
            "tls" => Ok(Security::Tls),
            "none" => Ok(Security::None),
            other => Err(FieldError::new("security", format!("{other:?} is not starttls, tls or none"))),
        }
    }
}

/// The SMTP settings in effect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub username: String,
    pub password: String,
    pub from_address: String,
    pub from_name: String,
}

impl SmtpSettings {
    /// The file's settings; an unknown `security` there falls back to STARTTLS, the safe choice.
    pub fn from_config(config: &EmailConfig) -> SmtpSettings {
        SmtpSettings {
            host: config.host.trim().to_owned(),
            port: config.port,
            security: Security::parse(&config.security).unwrap_or(Security::Starttls),
            username: config.username.clone(),
            password: config.password.clone(),
            from_address: config.from_address.trim().to_owned(),
            from_name: config.from_name.clone(),
        }
    }

    /// Whether email can be sent at all: a server and a sender are set.
    pub fn is_configured(&self) -> bool {
        !self.host.is_empty() && !self.from_address.is_empty()
    }

    fn validate(&self) -> Result<(), FieldError> {
        if self.host.chars().count() > 253 || self.host.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err(FieldError::new("host", "must be a host name or address such as smtp.example.com"));
        }
        if self.port == 0 {
            return Err(FieldError::new("port", "must be 1 to 65535"));
        }
        if !self.from_address.is_empty() && !super::plausible_address(&self.from_address) {
            return Err(FieldError::new("from_address", "must be an email address such as support@example.com"));
        }
        if self.from_name.chars().count() > 100 || self.from_name.contains(['\r', '\n']) {
            return Err(FieldError::new("from_name", "must be at most 100 characters on one line"));
        }
        if self.username.chars().count() > 254 || self.password.chars().count() > 1024 {
            return Err(FieldError::new("username", "the username or password is too long"));
        }
        Ok(())
    }
}

/// What a change sets; `None` keeps the current value.
#[derive(Clone, Debug, Default)]
pub struct SettingsChange {
    pub host: Option<String>,
    /// As typed, so a bad port is reported rather than lost in parsing.
    pub port: Option<String>,
    pub security: Option<String>,
    pub username: Option<String>,
    /// An empty password keeps the current one (the page never shows it back).
    pub password: Option<String>,
    /// Removes the stored password.
    pub clear_password: bool,
    pub from_address: Option<String>,
    pub from_name: Option<String>,
}

impl SettingsChange {
    /// `current` with this change applied, or the first invalid field.
    pub fn apply(self, current: &SmtpSettings) -> Result<SmtpSettings, FieldError> {
        let mut next = current.clone();
        if let Some(host) = self.host {
            next.host = host.trim().to_owned();
        }
        if let Some(port) = self.port {
            next.port =
                port.trim().parse::<u16>().ok().filter(|port| *port > 0).ok_or_else(|| {
                    FieldError::new("port", format!("{:?} is not a port from 1 to 65535", port.trim()))
                })?;
        }
        if let Some(security) = self.security {
            next.security = Security::parse(&security)?;
        }
        if let Some(username) = self.username {
            next.username = username.trim().to_owned();
        }
        if self.clear_password {
            next.password.clear();
        } else if let Some(password) = self.password.filter(|password| !password.is_empty()) {
            next.password = password;
        }
        if let Some(from_address) = self.from_address {
            next.from_address = from_address.trim().to_owned();
        }
        if let Some(from_name) = self.from_name {
            next.from_name = from_name.trim().to_owned();
        }
        next.validate()?;
        Ok(next)
    }
}

/// The settings in effect: the `saved` ones, else the file's.
pub fn in_effect(saved: Option<SmtpSettings>, config: &EmailConfig) -> SmtpSettings {
    saved.unwrap_or_else(|| SmtpSettings::from_config(config))
}

/// The Email page's storage boundary: the SMTP settings, and the emails the outbox keeps.
pub trait EmailSettingsStore: Send + Sync {
    /// The newest `limit` emails, newest first.
    fn recent_emails(&self, limit: usize) -> impl Future<Output = Result<Vec<super::Email>, StorageError>> + Send;

    /// Sends `email` at once with the settings in effect, outside the background sender (the
    /// Email page's test email), and keeps it with its outcome; a failure is final for it.
    /// Returns the SMTP error, if any.
    fn send_now(
        &self,
        config: &EmailConfig,
        email: super::OutgoingEmail,
    ) -> impl Future<Output = Result<Result<(), String>, StorageError>> + Send;

    /// The settings in effect: the saved ones, else `config`'s.
    fn load(&self, config: &EmailConfig) -> impl Future<Output = Result<SmtpSettings, StorageError>> + Send;

    /// Applies `change` to the settings in effect and saves the result, which from then on
    /// overrides the file. An invalid field changes nothing.
    fn save(
        &self,
        config: &EmailConfig,
        change: SettingsChange,
    ) -> impl Future<Output = Result<SmtpSettings, EmailError>> + Send;
}

impl EmailSettingsStore for Store {
    async fn recent_emails(&self, limit: usize) -> Result<Vec<super::Email>, StorageError> {
        self.read(move |transaction| super::recent(transaction, limit)).await
    }

    async fn send_now(
        &self,
        config: &EmailConfig,
        email: super::OutgoingEmail,
    ) -> Result<Result<(), String>, StorageError> {
        super::sender::queue_and_send(self, config, email).await
    }

    async fn load(&self, config: &EmailConfig) -> Result<SmtpSettings, StorageError> {
        let config = config.clone();
        self.read(move |transaction| effective(transaction, &config)).await
    }

    async fn save(&self, config: &EmailConfig, change: SettingsChange) -> Result<SmtpSettings, EmailError> {
        save(self, config, change).await
    }
}

/// The saved settings, if an admin saved any (in a read or write transaction).
fn saved(table: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<Option<SmtpSettings>, StorageError> {
    table.get(SMTP_KEY)?.map(|value| decode_json(value.value())).transpose()
}

/// The settings in effect, read in `transaction` (what the sender reads each attempt with).
pub fn effective(transaction: &redb::ReadTransaction, config: &EmailConfig) -> Result<SmtpSettings, StorageError> {
    Ok(in_effect(saved(&transaction.open_table(tables::EMAIL_SETTINGS)?)?, config))
}

async fn save(store: &Store, config: &EmailConfig, change: SettingsChange) -> Result<SmtpSettings, EmailError> {
    let config = config.clone();
    store
        .write(move |context| {
            let mut table = context.transaction.open_table(tables::EMAIL_SETTINGS)?;
            let current = in_effect(saved(&table)?, &config);
            let next = match change.apply(&current) {
                Ok(next) => next,
                Err(error) => return Ok(Err(EmailError::Invalid(error))),
            };
            table.insert(SMTP_KEY, encode_json(&next).as_slice())?;
            Ok(Ok(next))
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_keeps_what_it_leaves_out_and_refuses_bad_fields_whole() {
        let current = SmtpSettings::from_config(&EmailConfig {
            host: "smtp.example.com".into(),
            password: "secret".into(),
            from_address: "help@example.com".into(),
            ..EmailConfig::default()
        });
        let changed = SettingsChange { port: Some("2525".into()), password: Some(String::new()), ..Default::default() }
            .apply(&current)
            .unwrap();
        assert_eq!(
            (changed.port, changed.host.as_str(), changed.password.as_str()),
            (2525, "smtp.example.com", "secret")
        );
        let error = SettingsChange { host: Some("other".into()), port: Some("99999".into()), ..Default::default() }
            .apply(&current)
            .unwrap_err();
        assert_eq!(error.field, "port");
        let error = SettingsChange { security: Some("ssl".into()), ..Default::default() }.apply(&current).unwrap_err();
        assert_eq!(error.field, "security");
    }
}
