//! The appliance's webhook deliveries and emails as rows of the cluster's `outbox` (migration 4):
//! pending ones for the nodes' senders to claim, finished ones as their history.
//!
//! The outbox's ids come from its own sequence (the appliance numbers deliveries and emails
//! separately, so their ids overlap); everything else is kept: site, what is sent, status,
//! attempts, times, the last outcome.

use redb::{ReadTransaction, TableDefinition};
use serde::Serialize;

use super::CopyError;
use crate::cluster::outbox::{OutboxContent, OutboxKind};
use crate::cluster::postgres::PostgresError;
use crate::email::{Email, EmailStatus};
use crate::storage::{StorageError, decode_json, tables};
use crate::webhooks::{Delivery, DeliveryStatus};

/// An outbox row as copied: what the checksum covers, the same from a redb record and from a
/// PostgreSQL row.
#[derive(Debug, Serialize)]
pub(super) struct OutboxCopy {
    /// The appliance's delivery or email id: the copy's cursor, not stored.
    #[serde(skip)]
    pub source_id: u64,
    pub site: Option<String>,
    pub content: OutboxContent,
    pub erase_when_done: bool,
    pub status: &'static str,
    pub attempts: u32,
    pub created_at: i64,
    /// Due time while pending; none once finished.
    pub next_attempt_at: Option<i64>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub finished_at: Option<i64>,
}

/// The columns of `outbox` the copy writes (the id is the sequence's), in [`OutboxCopy::cells`]
/// order.
pub(super) const COLUMNS: &[(&str, super::Column)] = {
    use super::Column::*;
    &[
        ("kind", Text),
        ("site", Text),
        ("content", Json),
        ("erase_when_done", Bool),
        ("status", Text),
        ("attempts", Int4),
        ("created_at", Int),
        ("next_attempt_at", Int),
        ("last_status", Int),
        ("last_error", Text),
        ("finished_at", Int),
    ]
};

/// What a target read selects, in [`OutboxCopy::of_target`] order.
pub(super) const SELECT: &str = "SELECT site, content::text, erase_when_done, status, attempts, created_at, \
                                 next_attempt_at, last_status, last_error, finished_at FROM outbox";

/// The pending status wants a due time: one the appliance did not record is now-due.
fn pending_due(next_attempt_at: Option<i64>, created_at: i64) -> Option<i64> {
    Some(next_attempt_at.unwrap_or(created_at))
}

impl OutboxCopy {
    fn of_delivery(delivery: Delivery) -> OutboxCopy {
        let (status, next_attempt_at, finished_at) = match delivery.status {
            DeliveryStatus::Pending => ("pending", pending_due(delivery.next_attempt_at, delivery.created_at), None),
            DeliveryStatus::Delivered => ("delivered", None, delivery.delivered_at),
            DeliveryStatus::Failed => ("failed", None, None),
        };
        OutboxCopy {
            source_id: delivery.id,
            site: Some(delivery.site),
            content: OutboxContent::Webhook {
                webhook_id: delivery.webhook_id,
                event_type: delivery.event_type,
                payload: delivery.payload,
                trace_id: delivery.trace_id,
                about: None,
            },
            erase_when_done: false,
            status,
            attempts: delivery.attempts,
            created_at: delivery.created_at,
            next_attempt_at,
            last_status: delivery.last_status,
            last_error: delivery.last_error,
            finished_at,
        }
    }

    fn of_email(email: Email) -> OutboxCopy {
        let (status, next_attempt_at, finished_at) = match email.status {
            EmailStatus::Pending => ("pending", pending_due(email.next_attempt_at, email.created_at), None),
            EmailStatus::Sent => ("delivered", None, email.sent_at),
            EmailStatus::Failed => ("failed", None, None),
            EmailStatus::Skipped => ("skipped", None, None),
        };
        OutboxCopy {
            source_id: email.id,
            site: email.site,
            erase_when_done: email.kind.is_secret(),
            content: OutboxContent::Email {
                email_kind: email.kind,
                to_address: email.to_address,
                to_name: email.to_name,
                subject: email.subject,
                text: email.text,
                html: email.html,
                unless_read: email.unless_read,
                transcript_of: email.transcript_of,
                about: None,
            },
            status,
            attempts: email.attempts,
            created_at: email.created_at,
            next_attempt_at,
            last_status: None,
            last_error: email.last_error,
            finished_at,
        }
    }

    /// The row's values for [`COLUMNS`].
    pub(super) fn cells(&self) -> Result<Vec<super::Cell>, CopyError> {
        use super::Cell;
        let content = serde_json::to_string(&self.content).map_err(|error| CopyError::Unstorable(error.to_string()))?;
        Ok(vec![
            Cell::Text(Some(self.content.kind().as_str().to_owned())),
            Cell::Text(self.site.clone()),
            Cell::Text(Some(content)),
            Cell::Bool(self.erase_when_done),
            Cell::Text(Some(self.status.to_owned())),
            Cell::Int4(i32::try_from(self.attempts).unwrap_or(i32::MAX)),
            Cell::Int(Some(self.created_at)),
            Cell::Int(self.next_attempt_at),
            Cell::Int(self.last_status.map(i64::from)),
            Cell::Text(self.last_error.clone()),
            Cell::Int(self.finished_at),
        ])
    }

    /// A row of [`SELECT`] read back.
    pub(super) fn of_target(row: &tokio_postgres::Row) -> Result<OutboxCopy, PostgresError> {
        let content: String = row.try_get(1)?;
        let status: &str = row.try_get(3)?;
        let last_status: Option<i32> = row.try_get(7)?;
        let attempts: i32 = row.try_get(4)?;
        Ok(OutboxCopy {
            source_id: 0,
            site: row.try_get(0)?,
            content: serde_json::from_str(&content)
                .map_err(|error| PostgresError::Corrupt(format!("outbox content: {error}")))?,
            erase_when_done: row.try_get(2)?,
            status: match status {
                "pending" => "pending",
                "delivered" => "delivered",
                "failed" => "failed",
                "skipped" => "skipped",
                other => return Err(PostgresError::Corrupt(format!("unknown outbox status {other:?}"))),
            },
            attempts: u32::try_from(attempts).map_err(|_| PostgresError::Corrupt(format!("attempts {attempts}")))?,
            created_at: row.try_get(5)?,
            next_attempt_at: row.try_get(6)?,
            last_status: last_status.map(|status| u16::try_from(status).unwrap_or(u16::MAX)),
            last_error: row.try_get(8)?,
            finished_at: row.try_get(9)?,
        })
    }
}

/// Up to `limit` of the appliance's deliveries (`Webhook`) or emails (`Email`) after the id
/// `after`, in id order.
pub(super) fn scan(
    transaction: &ReadTransaction,
    kind: OutboxKind,
    after: Option<u64>,
    limit: usize,
) -> Result<Vec<OutboxCopy>, StorageError> {
    let definition: TableDefinition<u64, &[u8]> = match kind {
        OutboxKind::Webhook => tables::WEBHOOK_DELIVERIES,
        OutboxKind::Email => tables::EMAILS,
    };
    let table = match transaction.open_table(definition) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(error) => return Err(error.into()),
    };
    let range = match after {
        Some(after) => table.range(after.saturating_add(1)..)?,
        None => table.range(0..)?,
    };
    let mut rows = Vec::new();
    for entry in range.take(limit) {
        let value = entry?.1;
        rows.push(match kind {
            OutboxKind::Webhook => OutboxCopy::of_delivery(decode_json(value.value())?),
            OutboxKind::Email => OutboxCopy::of_email(decode_json(value.value())?),
        });
    }
    Ok(rows)
}
