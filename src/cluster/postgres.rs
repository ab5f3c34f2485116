//! Cluster mode's PostgreSQL: connections, the versioned migrations embedded in the binary, and
//! the day partitions of the messages table (created ahead, dropped by retention).
//!
//! Migrations are the SQL files of `src/cluster/migrations/`, applied in order at start (and by
//! `kefu migrate --postgres URL`), each in its own transaction with its row in
//! `schema_migrations`. Nodes starting at once take turns on an advisory lock. A database whose
//! schema is newer than this binary knows is refused rather than written by an older kefu.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio_postgres::{Client, Config, GenericClient, NoTls};

use crate::storage::StorageError;

/// One migration: its version (the order it runs in), a name and its SQL.
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration this binary knows, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "messages", sql: include_str!("migrations/0001_messages.sql") },
    Migration { version: 2, name: "redb_copy", sql: include_str!("migrations/0002_redb_copy.sql") },
    Migration { version: 3, name: "offline_mark", sql: include_str!("migrations/0003_offline_mark.sql") },
    Migration { version: 4, name: "work_once", sql: include_str!("migrations/0004_work_once.sql") },
    Migration { version: 5, name: "search_uploads", sql: include_str!("migrations/0005_search_uploads.sql") },
    Migration { version: 6, name: "presence", sql: include_str!("migrations/0006_presence.sql") },
    Migration { version: 7, name: "records", sql: include_str!("migrations/0007_records.sql") },
    Migration { version: 8, name: "conversations", sql: include_str!("migrations/0008_conversations.sql") },
    Migration { version: 9, name: "delivery", sql: include_str!("migrations/0009_delivery.sql") },
    Migration { version: 10, name: "sequences", sql: include_str!("migrations/0010_sequences.sql") },
    Migration { version: 11, name: "api_tokens", sql: include_str!("migrations/0011_api_tokens.sql") },
    Migration { version: 12, name: "webhooks", sql: include_str!("migrations/0012_webhooks.sql") },
    Migration { version: 13, name: "knowledge_base", sql: include_str!("migrations/0013_knowledge_base.sql") },
    Migration { version: 14, name: "agents", sql: include_str!("migrations/0014_agents.sql") },
    Migration { version: 15, name: "offline_messages", sql: include_str!("migrations/0015_offline_messages.sql") },
    Migration { version: 16, name: "upload_quota", sql: include_str!("migrations/0016_upload_quota.sql") },
    Migration { version: 17, name: "webhook_rows", sql: include_str!("migrations/0017_webhook_rows.sql") },
    Migration { version: 18, name: "missed_chats", sql: include_str!("migrations/0018_missed_chats.sql") },
    Migration { version: 19, name: "accepting_agents", sql: include_str!("migrations/0019_accepting_agents.sql") },
    Migration { version: 20, name: "kb_vectors", sql: include_str!("migrations/0020_kb_vectors.sql") },
];

/// The key of the advisory lock that serializes migrations across nodes ("kefu" in ASCII).
const MIGRATION_LOCK: i64 = 0x6b65_6675;

/// The key of the advisory lock that serializes the creation of message partitions.
const PARTITION_LOCK: i64 = MIGRATION_LOCK + 1;

/// How many days of message partitions exist ahead of today (today included), so the append of
/// a new day finds its partition already there.
pub const PARTITION_DAYS_AHEAD: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error("the PostgreSQL URL is not valid: {0}")]
    BadUrl(String),
    #[error("PostgreSQL: {}", describe(.0))]
    Database(#[from] tokio_postgres::Error),
    #[error("the database's schema is version {found}, newer than this kefu knows ({known}); run a newer kefu")]
    NewerSchema { found: i64, known: i64 },
    #[error("a stored row could not be read: {0}")]
    Corrupt(String),
    /// A caller's value the database must not be asked to store (an empty node name, a zero
    /// duration); nothing was written.
    #[error("{0}")]
    Invalid(String),
}

impl From<PostgresError> for StorageError {
    fn from(error: PostgresError) -> Self {
        match error {
            PostgresError::Corrupt(detail) => StorageError::Corrupt(detail),
            // The driver's own text ("db error") hides the server's message, which is in the source.
            PostgresError::Database(error) => StorageError::Server(describe(&error)),
            other => StorageError::Server(other.to_string()),
        }
    }
}

/// A driver error with the server's message when there is one.
pub fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db_error) => format!("{} ({})", db_error.message(), db_error.code().code()),
        None => error.to_string(),
    }
}

/// A driver error as a storage error, with the server's message (for `map_err`).
pub(crate) fn database(error: tokio_postgres::Error) -> StorageError {
    StorageError::from(PostgresError::from(error))
}

/// A record table's `record::text` read back into its domain record; `what` names it in the
/// error.
pub(crate) fn record_of<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T, StorageError> {
    serde_json::from_str(text).map_err(|error| StorageError::Corrupt(format!("{what}: {error}")))
}

/// The record (the first column, `record::text`) of the one row `statement` finds, if any.
pub(crate) async fn record_where<T: serde::de::DeserializeOwned>(
    client: &impl GenericClient,
    what: &str,
    statement: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Option<T>, StorageError> {
    let row = client.query_opt(statement, params).await.map_err(database)?;
    row.map(|row| record_of(what, row.get(0))).transpose()
}

/// The records (the first column, `record::text`) of every row `statement` finds, in its order.
pub(crate) async fn records_where<T: serde::de::DeserializeOwned>(
    client: &impl GenericClient,
    what: &str,
    statement: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<T>, StorageError> {
    let rows = client.query(statement, params).await.map_err(database)?;
    rows.iter().map(|row| record_of(what, row.get(0))).collect()
}

/// Writes `record` as the row of the record table `table` whose one key column `key_column` is
/// `key`, replacing the row there.
pub(crate) async fn put_record(
    client: &impl GenericClient,
    table: &str,
    key_column: &str,
    key: &(dyn tokio_postgres::types::ToSql + Sync),
    record: &impl serde::Serialize,
) -> Result<(), StorageError> {
    let statement = format!(
        "INSERT INTO {table} ({key_column}, record) VALUES ($1, $2::text::jsonb)
         ON CONFLICT ({key_column}) DO UPDATE SET record = EXCLUDED.record"
    );
    client.execute(&statement, &[key, &record_text(record)]).await.map_err(database)?;
    Ok(())
}

/// A domain record as the JSON text a record table's `record` is written from.
pub(crate) fn record_text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("records always serialize")
}

/// Opens one connection; its I/O runs on a task of its own until the client is dropped or the
/// server closes it.
pub async fn connect(url: &str) -> Result<Client, PostgresError> {
    let config: Config =
        url.parse().map_err(|error: tokio_postgres::Error| PostgresError::BadUrl(error.to_string()))?;
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(error = %describe(&error), "a PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// What a migration run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// The versions applied by this run, oldest first (empty when the schema was current).
    pub applied: Vec<i64>,
    /// The schema version after the run.
    pub version: i64,
}

/// The newest schema version this binary knows.
pub fn known_version() -> i64 {
    MIGRATIONS.last().map_or(0, |migration| migration.version)
}

/// Applies the migrations the database lacks, over a connection of its own (what each store
/// does when it opens).
pub(crate) async fn ensure_migrated(url: &str) -> Result<(), PostgresError> {
    let mut client = connect(url).await?;
    migrate(&mut client).await?;
    Ok(())
}

/// Applies the migrations the database lacks, each in its own transaction.
pub async fn migrate(client: &mut Client) -> Result<MigrationReport, PostgresError> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
    let outcome = migrate_locked(client).await;
    // A failed unlock leaves the lock to the session's end, which the caller's error ends anyway.
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await;
    let report = outcome?;
    unlocked?;
    Ok(report)
}

async fn migrate_locked(client: &mut Client) -> Result<MigrationReport, PostgresError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version bigint PRIMARY KEY,
                 name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await?;
    let current = schema_version(client).await?;
    let known = known_version();
    if current > known {
        return Err(PostgresError::NewerSchema { found: current, known });
    }
    let mut applied = Vec::new();
    for migration in MIGRATIONS.iter().filter(|migration| migration.version > current) {
        let transaction = client.transaction().await?;
        transaction.batch_execute(migration.sql).await?;
        transaction
            .execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                &[&migration.version, &migration.name],
            )
            .await?;
        transaction.commit().await?;
        tracing::info!(version = migration.version, name = migration.name, "PostgreSQL migration applied");
        applied.push(migration.version);
    }
    Ok(MigrationReport { applied, version: known.max(current) })
}

/// The schema version of the database (0 before any migration).
pub async fn schema_version(client: &Client) -> Result<i64, PostgresError> {
    let exists: bool = client.query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[]).await?.get(0);
    if !exists {
        return Ok(0);
    }
    let version: Option<i64> = client.query_one("SELECT max(version) FROM schema_migrations", &[]).await?.get(0);
    Ok(version.unwrap_or(0))
}

/// Creates the message partitions of `days` days from `first_day` (UTC day numbers) that are
/// missing; returns how many it created. Nodes take turns (an advisory lock), since two
/// creating one partition at once would fail.
pub async fn create_partitions(client: &Client, first_day: u32, days: u32) -> Result<usize, PostgresError> {
    client.execute("SELECT pg_advisory_lock($1)", &[&PARTITION_LOCK]).await?;
    let outcome: Result<usize, PostgresError> = async {
        let mut created = 0;
        for day in first_day..first_day.saturating_add(days) {
            let day = day_param(day)?;
            let made: bool = client.query_one("SELECT kefu_create_message_partition($1)", &[&day]).await?.get(0);
            created += usize::from(made);
        }
        Ok(created)
    }
    .await;
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&PARTITION_LOCK]).await;
    let created = outcome?;
    unlocked?;
    Ok(created)
}

/// Drops the partitions of the days before `day` (retention); returns their names.
pub async fn drop_partitions_before(client: &impl GenericClient, day: u32) -> Result<Vec<String>, PostgresError> {
    let day = day_param(day)?;
    let rows = client.query("SELECT kefu_drop_message_partitions_before($1)", &[&day]).await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// The names of the message partitions (`messages_YYYYMMDD`), oldest first.
pub async fn partitions(client: &Client) -> Result<Vec<String>, PostgresError> {
    let rows = client
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'messages'::regclass ORDER BY c.relname",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// The days of the message partitions, oldest first.
pub async fn partition_days(client: &Client) -> Result<Vec<u32>, PostgresError> {
    Ok(partitions(client).await?.iter().filter_map(|name| day_of_partition(name)).collect())
}

/// The prefix of a day partition's name (`messages_YYYYMMDD`).
const PARTITION_PREFIX: &str = "messages_";

/// The day (since 1970-01-01) of a partition named `messages_YYYYMMDD`.
fn day_of_partition(name: &str) -> Option<u32> {
    let digits = name.strip_prefix(PARTITION_PREFIX)?;
    if digits.len() != 8 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    crate::base::clock::date_to_day(&format!("{}-{}-{}", &digits[..4], &digits[4..6], &digits[6..]))
}

fn day_param(day: u32) -> Result<i32, PostgresError> {
    i32::try_from(day).map_err(|_| PostgresError::Corrupt(format!("day {day} is out of range")))
}

/// A few connections for transactions, each used by one task at a time and kept open between
/// uses (a connection costs the server a process, so one per transaction would be dear); a
/// connection the server closed is opened again.
pub(crate) struct Writers {
    url: String,
    slots: Vec<tokio::sync::Mutex<Option<Client>>>,
    free: tokio::sync::Semaphore,
}

/// A connection held for one task's transactions; back in the pool when dropped.
pub(crate) struct Writer<'a> {
    slot: tokio::sync::MutexGuard<'a, Option<Client>>,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl Writer<'_> {
    pub(crate) fn client(&mut self) -> &mut Client {
        self.slot.as_mut().expect("a writer's slot holds an open connection")
    }
}

impl Writers {
    pub(crate) fn new(url: &str, count: usize) -> Writers {
        let count = count.max(1);
        Writers {
            url: url.to_owned(),
            slots: (0..count).map(|_| tokio::sync::Mutex::new(None)).collect(),
            free: tokio::sync::Semaphore::new(count),
        }
    }

    /// Runs `change` in a transaction on a pooled connection, committing only when it succeeds
    /// (an error rolls it back).
    pub(crate) async fn run<T, E: From<StorageError>>(
        &self,
        change: impl AsyncFnOnce(&tokio_postgres::Transaction<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut writer = self.acquire().await.map_err(StorageError::from)?;
        let transaction = writer.client().transaction().await.map_err(database)?;
        let outcome = change(&transaction).await?;
        transaction.commit().await.map_err(database)?;
        Ok(outcome)
    }

    /// Waits for a free connection (opening it if needed).
    pub(crate) async fn acquire(&self) -> Result<Writer<'_>, PostgresError> {
        let permit =
            self.free.acquire().await.map_err(|_| PostgresError::Invalid("the connection pool is closed".into()))?;
        // A permit guarantees a slot no other task holds.
        let mut slot = self.slots.iter().find_map(|slot| slot.try_lock().ok()).expect("a permit leaves a slot free");
        if slot.as_ref().is_none_or(Client::is_closed) {
            *slot = Some(connect(&self.url).await?);
        }
        Ok(Writer { slot, _permit: permit })
    }
}

/// A few connections for reads, used in turn; one that the server closed is opened again.
#[derive(Clone)]
pub(crate) struct Readers {
    url: Arc<str>,
    slots: Arc<[Mutex<Option<Arc<Client>>>]>,
    next: Arc<AtomicUsize>,
}

impl Readers {
    pub(crate) fn new(url: &str, count: usize) -> Readers {
        Readers {
            url: url.into(),
            slots: (0..count).map(|_| Mutex::new(None)).collect(),
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub(crate) async fn client(&self) -> Result<Arc<Client>, PostgresError> {
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        let open = slot.lock().clone().filter(|client| !client.is_closed());
        if let Some(client) = open {
            return Ok(client);
        }
        let client = Arc::new(connect(&self.url).await?);
        *slot.lock() = Some(client.clone());
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::day_of_partition;

    #[test]
    fn a_partitions_name_gives_its_day() {
        assert_eq!(day_of_partition("messages_19700102"), Some(1));
        assert_eq!(day_of_partition("messages_20261207"), crate::base::clock::date_to_day("2026-12-07"));
        for name in ["messages_2026120", "messages_2026x207", "messages", "other_20261207", "messages_20261399"] {
            assert_eq!(day_of_partition(name), None, "{name}");
        }
    }
}
