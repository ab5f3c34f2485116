//! The outbox of webhook deliveries and emails on PostgreSQL, claimed by any node: each due row
//! goes to exactly one node at a time, and a row whose node died goes to another once its claim
//! runs out.
//!
//! A row is written by [`enqueue`] inside the transaction of the event it follows, so it exists
//! only with its event. A node takes due rows with [`OutboxWorker::claim`]: one statement selects
//! them `FOR UPDATE SKIP LOCKED` (rows another node is claiming at that moment are passed over,
//! not waited for) and moves their due time to the end of the claim, as the appliance's redb
//! outbox does (`storage::outbox`), so a claim that is never finished makes the row due again.
//! The attempt's outcome is recorded by [`OutboxWorker::complete`], [`OutboxWorker::retry_later`]
//! (the appliance's backoff, `base::outbound::backoff`, until `give_up_after` from the row's
//! creation) or [`OutboxWorker::skip`], each only while the row is still claimed by that node: a
//! node whose claim was taken over records nothing, and the row's new claimer decides.
//! Delivery is at least once, as in the appliance: receivers deduplicate on the row id.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::{GenericClient, Row, Transaction};

use crate::cluster::messages::unsigned;
use crate::cluster::node::{NodeName, check_name, checked_millis};
use crate::cluster::postgres::PostgresError;
use crate::email::transcript::TranscriptOf;
use crate::email::{Email, EmailKind, EmailStatus, OutgoingEmail, ReadCheck};

/// The most rows one claim takes.
pub const MAX_CLAIM: usize = 1000;

/// The longest claim, retry base, give-up time or delay accepted (a week).
const LONGEST_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Which sender a row is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboxKind {
    Webhook,
    Email,
}

impl OutboxKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxKind::Webhook => "webhook",
            OutboxKind::Email => "email",
        }
    }
}

/// What a row sends: the fields of the appliance's `webhooks::Delivery` and `email::Email` that
/// are not its state (status, attempts, due time, last outcome, which are columns).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OutboxContent {
    Webhook {
        webhook_id: String,
        event_type: String,
        /// The exact body sent (and signed).
        payload: String,
        #[serde(default)]
        trace_id: Option<u64>,
        /// A row the database wrote for a new message or conversation (migration 17) comes with
        /// an empty payload and what it is about: the node that claims it first renders the
        /// payload, which every attempt then sends as it is.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        about: Option<WebhookAbout>,
    },
    Email {
        email_kind: EmailKind,
        to_address: String,
        to_name: String,
        subject: String,
        text: String,
        html: String,
        #[serde(default)]
        unless_read: Option<ReadCheck>,
        #[serde(default)]
        transcript_of: Option<TranscriptOf>,
        /// An agent's answer the database wrote a row for (migration 17) comes with empty parts
        /// and what it is about: the node that claims it first renders it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        about: Option<EmailAbout>,
    },
}

/// What an email row the database wrote is about.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailAbout {
    /// An agent's answer to a visitor who left their address: the stored message.
    Answer {
        conversation_id: u64,
        seq: u64,
        #[serde(default)]
        day: Option<u32>,
    },
}

impl OutboxContent {
    pub fn kind(&self) -> OutboxKind {
        match self {
            OutboxContent::Webhook { .. } => OutboxKind::Webhook,
            OutboxContent::Email { .. } => OutboxKind::Email,
        }
    }

    /// An email to queue, as the appliance's `email::queue` stores it.
    pub fn of_email(email: OutgoingEmail) -> OutboxContent {
        OutboxContent::Email {
            email_kind: email.kind,
            to_address: email.to_address,
            to_name: email.to_name,
            subject: email.message.subject,
            text: email.message.text,
            html: email.message.html,
            unless_read: email.unless_read,
            transcript_of: email.transcript_of,
            about: None,
        }
    }

    /// An email row's content as the appliance's `Email`, pending with `attempts` so far; `None`
    /// for a webhook's.
    pub fn into_email(self, id: u64, site: Option<String>, attempts: u32, created_at: i64) -> Option<Email> {
        let OutboxContent::Email {
            email_kind,
            to_address,
            to_name,
            subject,
            text,
            html,
            unless_read,
            transcript_of,
            ..
        } = self
        else {
            return None;
        };
        Some(Email {
            id,
            kind: email_kind,
            site,
            to_address,
            to_name,
            subject,
            text,
            html,
            status: EmailStatus::Pending,
            attempts,
            created_at,
            next_attempt_at: None,
            last_error: None,
            sent_at: None,
            unless_read,
            transcript_of,
        })
    }

    /// Whether the body holds a secret (a password reset's link), blanked once the row is finished.
    fn erase_when_done(&self) -> bool {
        matches!(self, OutboxContent::Email { email_kind, .. } if email_kind.is_secret())
    }
}

/// What a webhook row the database wrote is about.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookAbout {
    /// `message.created`: the stored message, and its day partition.
    Message {
        conversation_id: u64,
        seq: u64,
        #[serde(default)]
        day: Option<u32>,
    },
    /// `conversation.created`: the conversation's row as it was inserted.
    Conversation(Box<crate::chat::conversations::Conversation>),
}

/// A row to write with its event.
#[derive(Clone, Debug)]
pub struct NewOutboxRow {
    /// The site it is about, if any.
    pub site: Option<String>,
    pub content: OutboxContent,
    /// How long after the commit the first attempt is due (zero: at once); a missed-chat email
    /// waits a few minutes.
    pub delay: Duration,
}

/// Where a row stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboxStatus {
    /// Waiting for an attempt, or claimed by a node for one.
    Pending,
    /// Accepted by the receiver (a webhook's 2xx, the SMTP server's acceptance).
    Delivered,
    /// Still failing `give_up_after` after it was written; not tried again.
    Failed,
    /// No longer needed (the visitor read the answer in the chat); not sent.
    Skipped,
}

impl OutboxStatus {
    fn parse(text: &str) -> Result<OutboxStatus, PostgresError> {
        match text {
            "pending" => Ok(OutboxStatus::Pending),
            "delivered" => Ok(OutboxStatus::Delivered),
            "failed" => Ok(OutboxStatus::Failed),
            "skipped" => Ok(OutboxStatus::Skipped),
            other => Err(PostgresError::Corrupt(format!("unknown outbox status {other:?}"))),
        }
    }
}

/// A row as stored. Times are Unix milliseconds of the database's clock.
#[derive(Clone, Debug)]
pub struct OutboxRow {
    pub id: u64,
    pub site: Option<String>,
    pub content: OutboxContent,
    pub status: OutboxStatus,
    /// Attempts that ended, delivered or failed.
    pub attempts: u32,
    pub created_at: i64,
    /// When the next attempt is due, or the end of the current claim; `None` once finished.
    pub next_attempt_at: Option<i64>,
    /// The node that claimed it last, while it holds it.
    pub claimed_by: Option<String>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub finished_at: Option<i64>,
}

/// A row a node claimed, with what its attempt needs.
#[derive(Clone, Debug)]
pub struct ClaimedRow {
    pub id: u64,
    pub site: Option<String>,
    pub content: OutboxContent,
    /// Attempts that ended before this one.
    pub attempts: u32,
    pub created_at: i64,
    /// The end of this claim: past it, another node may claim the row.
    pub claimed_until: i64,
    /// The node whose claim ran out before this one took the row (it died or stalled), if any.
    pub taken_over_from: Option<String>,
}

/// How a node claims and retries; the appliance's `[webhooks]` and `[email]` settings.
#[derive(Clone, Debug)]
pub struct OutboxSettings {
    /// How long a claim lasts: longer than an attempt can take (twice its timeout, as in the
    /// appliance), so that only a dead or stalled node's rows are taken over.
    pub claim_for: Duration,
    /// The first retry's delay; each later one doubles it (at most an hour), times 0.5 to 1.5.
    pub retry_base: Duration,
    /// A row still failing this long after it was written is marked failed.
    pub give_up_after: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("there is no outbox row {0}")]
    NotFound(u64),
    #[error("outbox row {id} is not claimed by this node ({state}); nothing was recorded")]
    NotClaimed { id: u64, state: String },
    #[error(transparent)]
    Postgres(#[from] PostgresError),
}

impl From<tokio_postgres::Error> for OutboxError {
    fn from(error: tokio_postgres::Error) -> Self {
        OutboxError::Postgres(error.into())
    }
}

/// What [`OutboxWorker::retry_later`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Due again at `next_attempt_at`, `delay` after the failure.
    Rescheduled { attempts: u32, next_attempt_at: i64, delay: Duration },
    /// The next attempt would have been due more than `give_up_after` after the row was
    /// written: the row is failed and not tried again.
    GaveUp { attempts: u32 },
}

/// Writes `row` in the caller's transaction (the one that stores its event); returns its id.
pub async fn enqueue(transaction: &Transaction<'_>, row: &NewOutboxRow) -> Result<u64, PostgresError> {
    let content = serde_json::to_value(&row.content).map_err(|error| PostgresError::Invalid(error.to_string()))?;
    // PostgreSQL's text and jsonb cannot hold U+0000.
    if holds_nul(&content) || row.site.as_deref().is_some_and(|site| site.contains('\0')) {
        return Err(PostgresError::Invalid(
            "the outbox row was not written: PostgreSQL cannot store the character U+0000".to_owned(),
        ));
    }
    if let Some(site) = &row.site {
        check_name("site", site)?;
    }
    let delay = if row.delay.is_zero() { 0 } else { checked_millis("delay", row.delay, LONGEST_DURATION)? };
    let inserted = transaction
        .query_one(
            "INSERT INTO outbox (kind, site, content, erase_when_done, created_at, next_attempt_at)
             VALUES ($1, $2, $3::text::jsonb, $4, kefu_now_ms(), kefu_now_ms() + $5)
             RETURNING id",
            &[&row.content.kind().as_str(), &row.site, &content.to_string(), &row.content.erase_when_done(), &delay],
        )
        .await?;
    unsigned(inserted.try_get(0)?)
}

/// What a read of whole rows selects, in [`outbox_row_of`]'s order.
const ROW_COLUMNS: &str = "SELECT id, site, content::text, status, attempts, created_at, next_attempt_at, claimed_by,
                                  last_status, last_error, finished_at FROM outbox";

/// One row, or `None` when there is no such id.
pub async fn get(client: &impl GenericClient, id: u64) -> Result<Option<OutboxRow>, PostgresError> {
    let Ok(key) = i64::try_from(id) else { return Ok(None) };
    let row = client.query_opt(&format!("{ROW_COLUMNS} WHERE id = $1"), &[&key]).await?;
    row.as_ref().map(outbox_row_of).transpose()
}

/// One row, locked until the caller's transaction ends (a claim passes over it meanwhile).
pub async fn get_for_update(transaction: &Transaction<'_>, id: u64) -> Result<Option<OutboxRow>, PostgresError> {
    let Ok(key) = i64::try_from(id) else { return Ok(None) };
    let row = transaction.query_opt(&format!("{ROW_COLUMNS} WHERE id = $1 FOR UPDATE"), &[&key]).await?;
    row.as_ref().map(outbox_row_of).transpose()
}

/// The newest `limit` rows of `kind`, newest first (the Email page's list of recent emails).
pub async fn newest(
    client: &impl GenericClient,
    kind: OutboxKind,
    limit: usize,
) -> Result<Vec<OutboxRow>, PostgresError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = client
        .query(&format!("{ROW_COLUMNS} WHERE kind = $1 ORDER BY id DESC LIMIT $2"), &[&kind.as_str(), &limit])
        .await?;
    rows.iter().map(outbox_row_of).collect()
}

/// Writes a row whose one attempt already happened outside the senders (the Email page's test
/// email, sent while the admin waits): delivered, or failed with the attempt's error. It is
/// finished, so no node claims it.
pub async fn record_attempted(
    client: &impl GenericClient,
    site: Option<&str>,
    content: &OutboxContent,
    outcome: &Result<(), String>,
) -> Result<u64, PostgresError> {
    let value = serde_json::to_value(content).map_err(|error| PostgresError::Invalid(error.to_string()))?;
    if holds_nul(&value) || site.is_some_and(|site| site.contains('\0')) {
        return Err(PostgresError::Invalid("PostgreSQL cannot store the character U+0000".to_owned()));
    }
    let (status, error) = match outcome {
        Ok(()) => ("delivered", None),
        Err(error) => ("failed", Some(error.replace('\0', ""))),
    };
    let row = client
        .query_one(
            "INSERT INTO outbox (kind, site, content, status, attempts, created_at, last_error, finished_at)
             VALUES ($1, $2, $3::text::jsonb, $4, 1, kefu_now_ms(), $5, kefu_now_ms())
             RETURNING id",
            &[&content.kind().as_str(), &site, &value.to_string(), &status, &error],
        )
        .await?;
    unsigned(row.try_get(0)?)
}

/// Up to `limit` deliveries of the webhook `webhook_id`, newest first (by the index of
/// migration 12).
pub async fn of_webhook(
    client: &impl GenericClient,
    webhook_id: &str,
    limit: usize,
) -> Result<Vec<OutboxRow>, PostgresError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = client
        .query(
            &format!("{ROW_COLUMNS} WHERE kind = 'webhook' AND content->>'webhook_id' = $1 ORDER BY id DESC LIMIT $2"),
            &[&webhook_id, &limit],
        )
        .await?;
    rows.iter().map(outbox_row_of).collect()
}

/// Makes row `id` pending again as if written at `created_at`, due at `due_at` and held by no
/// node: any node's next claim takes it, and a node still holding it records nothing (its claim
/// is over). The caller holds the row's lock ([`get_for_update`]).
pub async fn requeue(
    transaction: &Transaction<'_>,
    id: u64,
    created_at: i64,
    due_at: i64,
) -> Result<(), PostgresError> {
    let Ok(key) = i64::try_from(id) else { return Ok(()) };
    transaction
        .execute(
            "UPDATE outbox SET status = 'pending', created_at = $2, next_attempt_at = $3, claimed_by = NULL,
                 finished_at = NULL
             WHERE id = $1",
            &[&key, &created_at, &due_at],
        )
        .await?;
    Ok(())
}

/// One node's sender of one kind of row: claims due rows and records the outcomes of their
/// attempts.
#[derive(Clone, Debug)]
pub struct OutboxWorker {
    node: NodeName,
    kind: OutboxKind,
    claim_for: i64,
    retry_base: Duration,
    give_up_after: i64,
}

impl OutboxWorker {
    /// Refuses a zero or over-long duration of `settings`.
    pub fn new(node: NodeName, kind: OutboxKind, settings: &OutboxSettings) -> Result<OutboxWorker, PostgresError> {
        Ok(OutboxWorker {
            node,
            kind,
            claim_for: checked_millis("claim duration", settings.claim_for, LONGEST_DURATION)?,
            retry_base: {
                checked_millis("retry base", settings.retry_base, LONGEST_DURATION)?;
                settings.retry_base
            },
            give_up_after: checked_millis("give-up time", settings.give_up_after, LONGEST_DURATION)?,
        })
    }

    pub fn node(&self) -> &NodeName {
        &self.node
    }

    pub fn kind(&self) -> OutboxKind {
        self.kind
    }

    /// Claims up to `limit` due rows of this worker's kind, oldest due first: rows never claimed,
    /// rows due for a retry, and rows whose claim ran out. Rows another node is claiming at the
    /// same moment are skipped, never waited for or taken twice.
    pub async fn claim(&self, client: &impl GenericClient, limit: usize) -> Result<Vec<ClaimedRow>, OutboxError> {
        if limit == 0 || limit > MAX_CLAIM {
            return Err(PostgresError::Invalid(format!("a claim takes 1 to {MAX_CLAIM} rows, not {limit}")).into());
        }
        let limit = limit as i64;
        let rows = client
            .query(
                "WITH due AS (
                     SELECT id, claimed_by FROM outbox
                     WHERE kind = $1 AND status = 'pending' AND next_attempt_at <= kefu_now_ms()
                     ORDER BY next_attempt_at, id
                     LIMIT $3
                     FOR UPDATE SKIP LOCKED
                 )
                 UPDATE outbox o SET claimed_by = $2, next_attempt_at = kefu_now_ms() + $4
                 FROM due WHERE o.id = due.id
                 RETURNING o.id, o.site, o.content::text, o.attempts, o.created_at, o.next_attempt_at,
                           due.claimed_by",
                &[&self.kind.as_str(), &self.node.as_str(), &limit, &self.claim_for],
            )
            .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let decoded = (|| {
                Ok::<_, PostgresError>(ClaimedRow {
                    id: unsigned(row.try_get(0)?)?,
                    site: row.try_get(1)?,
                    content: content_of(row.try_get(2)?)?,
                    attempts: attempts_of(row.try_get(3)?)?,
                    created_at: row.try_get(4)?,
                    claimed_until: row.try_get(5)?,
                    taken_over_from: row.try_get(6)?,
                })
            })();
            match decoded {
                Ok(row) => claimed.push(row),
                // A row no node can read would hold up the ones claimed with it, claim after
                // claim: it is failed with the reason, and the others go on.
                Err(error) => {
                    let id: i64 = row.try_get(0)?;
                    tracing::error!(%error, outbox_id = id, "an outbox row could not be read; it is marked failed");
                    client
                        .execute(
                            "UPDATE outbox SET status = 'failed', last_error = $2, next_attempt_at = NULL,
                                 claimed_by = NULL, finished_at = kefu_now_ms()
                             WHERE id = $1",
                            &[&id, &format!("unreadable: {error}")],
                        )
                        .await?;
                }
            }
        }
        claimed.sort_by_key(|row| row.id);
        for row in claimed.iter().filter(|row| row.taken_over_from.is_some()) {
            tracing::info!(outbox_id = row.id, node = %self.node, from = ?row.taken_over_from, "outbox row taken over after its claim ran out");
        }
        Ok(claimed)
    }

    /// Records a delivered attempt (`last_status`: the receiver's HTTP status, for webhooks).
    pub async fn complete(
        &self,
        client: &impl GenericClient,
        id: u64,
        last_status: Option<u16>,
    ) -> Result<(), OutboxError> {
        let key = key_of(id)?;
        let last_status = last_status.map(i32::from);
        let changed = client
            .execute(
                &format!(
                    "UPDATE outbox SET status = 'delivered', attempts = attempts + 1, last_status = $4,
                         last_error = NULL, finished_at = kefu_now_ms(), {FINISHED}
                     WHERE {HELD}"
                ),
                &[&key, &self.node.as_str(), &self.kind.as_str(), &last_status],
            )
            .await?;
        self.changed_one(client, id, changed).await
    }

    /// Records a row that need not be sent any more (`reason` says why); not counted as an attempt.
    pub async fn skip(&self, client: &impl GenericClient, id: u64, reason: &str) -> Result<(), OutboxError> {
        let key = key_of(id)?;
        let reason = reason.replace('\0', "");
        let changed = client
            .execute(
                &format!(
                    "UPDATE outbox SET status = 'skipped', last_error = $4, finished_at = kefu_now_ms(), {FINISHED}
                     WHERE {HELD}"
                ),
                &[&key, &self.node.as_str(), &self.kind.as_str(), &reason],
            )
            .await?;
        self.changed_one(client, id, changed).await
    }

    /// Records a failed attempt: the row is due again after the appliance's backoff for its
    /// attempt count, or failed for good when that would pass `give_up_after` since it was
    /// written.
    pub async fn retry_later(
        &self,
        client: &impl GenericClient,
        id: u64,
        error: &str,
        last_status: Option<u16>,
    ) -> Result<Retry, OutboxError> {
        let key = key_of(id)?;
        // The attempt count read here is the one the update below expects: if another node took
        // the row over and recorded an attempt meanwhile, the update changes nothing.
        let attempts: Option<i32> = client
            .query_opt(
                &format!("SELECT attempts FROM outbox WHERE {HELD}"),
                &[&key, &self.node.as_str(), &self.kind.as_str()],
            )
            .await?
            .map(|row| row.try_get(0))
            .transpose()?;
        let Some(attempts) = attempts else {
            return Err(self.explain_unchanged(client, id).await);
        };
        let delay = crate::base::outbound::backoff(self.retry_base, attempts_of(attempts)? + 1);
        let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        let error = error.replace('\0', "");
        let last_status = last_status.map(i32::from);
        let row = client
            .query_opt(
                &format!(
                    "UPDATE outbox SET attempts = attempts + 1, last_status = $5, last_error = $6, claimed_by = NULL,
                         status = CASE WHEN {GIVES_UP} THEN 'failed' ELSE 'pending' END,
                         next_attempt_at = CASE WHEN {GIVES_UP} THEN NULL ELSE kefu_now_ms() + $7 END,
                         finished_at = CASE WHEN {GIVES_UP} THEN kefu_now_ms() END,
                         content = CASE WHEN erase_when_done AND {GIVES_UP} THEN {BLANKED} ELSE content END
                     WHERE {HELD} AND attempts = $4
                     RETURNING attempts, next_attempt_at"
                ),
                &[
                    &key,
                    &self.node.as_str(),
                    &self.kind.as_str(),
                    &attempts,
                    &last_status,
                    &error,
                    &delay_ms,
                    &self.give_up_after,
                ],
            )
            .await?;
        let Some(row) = row else {
            return Err(self.explain_unchanged(client, id).await);
        };
        let attempts = attempts_of(row.try_get(0)?)?;
        Ok(match row.try_get::<_, Option<i64>>(1)? {
            Some(next_attempt_at) => Retry::Rescheduled { attempts, next_attempt_at, delay },
            None => Retry::GaveUp { attempts },
        })
    }

    async fn changed_one(&self, client: &impl GenericClient, id: u64, changed: u64) -> Result<(), OutboxError> {
        if changed == 1 { Ok(()) } else { Err(self.explain_unchanged(client, id).await) }
    }

    /// Why an outcome changed nothing: the row does not exist, or this node does not hold it.
    async fn explain_unchanged(&self, client: &impl GenericClient, id: u64) -> OutboxError {
        match get(client, id).await {
            Ok(None) => OutboxError::NotFound(id),
            Ok(Some(row)) if row.content.kind() != self.kind => {
                OutboxError::NotClaimed { id, state: format!("it is an {} row", row.content.kind().as_str()) }
            }
            Ok(Some(row)) => {
                let state = match (row.status, row.claimed_by) {
                    (OutboxStatus::Pending, Some(holder)) => format!("node {holder} holds it"),
                    (OutboxStatus::Pending, None) => "nobody holds it".to_owned(),
                    (status, _) => format!("it is already {}", status_word(status)),
                };
                OutboxError::NotClaimed { id, state }
            }
            Err(error) => error.into(),
        }
    }
}

/// The row `$1` while node `$2` holds it for a worker of kind `$3`: what every outcome updates.
const HELD: &str = "id = $1 AND claimed_by = $2 AND kind = $3 AND status = 'pending'";

/// Whether a failure gives up: the retry (`$7` ms from now) would be due more than the give-up
/// time (`$8` ms) after the row was written.
const GIVES_UP: &str = "kefu_now_ms() + $7 - created_at > $8";

/// An email's content with its parts blanked (a secret's row, once finished).
macro_rules! blanked_content {
    () => {
        "content || '{\"text\": \"\", \"html\": \"\"}'::jsonb"
    };
}
const BLANKED: &str = blanked_content!();

/// What every finishing update sets besides its status: out of the due index, held by nobody,
/// a secret blanked.
const FINISHED: &str = concat!(
    "next_attempt_at = NULL, claimed_by = NULL, content = CASE WHEN erase_when_done THEN ",
    blanked_content!(),
    " ELSE content END"
);

fn status_word(status: OutboxStatus) -> &'static str {
    match status {
        OutboxStatus::Pending => "pending",
        OutboxStatus::Delivered => "delivered",
        OutboxStatus::Failed => "failed",
        OutboxStatus::Skipped => "skipped",
    }
}

fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(fields) => fields.iter().any(|(key, value)| key.contains('\0') || holds_nul(value)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

fn outbox_row_of(row: &Row) -> Result<OutboxRow, PostgresError> {
    let last_status: Option<i32> = row.try_get(8)?;
    Ok(OutboxRow {
        id: unsigned(row.try_get(0)?)?,
        site: row.try_get(1)?,
        content: content_of(row.try_get(2)?)?,
        status: OutboxStatus::parse(row.try_get(3)?)?,
        attempts: attempts_of(row.try_get(4)?)?,
        created_at: row.try_get(5)?,
        next_attempt_at: row.try_get(6)?,
        claimed_by: row.try_get(7)?,
        last_status: last_status
            .map(|status| u16::try_from(status).map_err(|_| PostgresError::Corrupt(format!("HTTP status {status}"))))
            .transpose()?,
        last_error: row.try_get(9)?,
        finished_at: row.try_get(10)?,
    })
}

fn content_of(text: String) -> Result<OutboxContent, PostgresError> {
    serde_json::from_str(&text).map_err(|error| PostgresError::Corrupt(format!("outbox content: {error}")))
}

fn attempts_of(value: i32) -> Result<u32, PostgresError> {
    u32::try_from(value).map_err(|_| PostgresError::Corrupt(format!("attempt count {value}")))
}

/// The database key of `id`; an id no row can have is not found.
fn key_of(id: u64) -> Result<i64, OutboxError> {
    i64::try_from(id).map_err(|_| OutboxError::NotFound(id))
}
