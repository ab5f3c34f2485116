//! The polling loop of an outbox: rows waiting to be sent somewhere outside (webhook deliveries,
//! emails), indexed by due time in a `(due millis, id)` table.
//!
//! Every tick the loop reaps finished attempts, reads as many due rows as there is room for, and
//! hands each to its [`Outbox`] to claim and start. What a row is and how it is sent belong to the
//! domain (`webhooks::sender`, `email::sender`); storage only knows the due index, so the loop
//! lives here once and the senders implement the trait.

use std::future::Future;
use std::time::Duration;

use redb::{ReadTransaction, ReadableTable, TableDefinition};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::commit_log::LoggedTable;
use super::{StorageError, Store, decode_json, encode_json};

/// A due index: `(due time in milliseconds, row id)`, one entry per row waiting for an attempt.
pub type DueIndex = TableDefinition<'static, (u64, u64), ()>;

/// How often an outbox looks for due rows.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// One kind of outbox: how its due rows are read and how an attempt starts.
pub trait Outbox: Clone + Send + Sync + 'static {
    /// A due row, read with what its attempt needs.
    type Due: Send + 'static;

    /// Names the outbox in logs.
    const NAME: &'static str;

    /// Attempts in flight at once.
    const MAX_IN_FLIGHT: usize;

    /// Whether shutdown waits for the attempts in flight (each bounded by its timeout) rather than
    /// cutting them off. An attempt cut off may have been delivered without being recorded, and
    /// goes out again after the restart once its claim expires.
    const FINISH_ON_SHUTDOWN: bool;

    /// At most `limit` rows due at `now`.
    fn read_due(&self, transaction: &ReadTransaction, now: i64, limit: usize) -> Result<Vec<Self::Due>, StorageError>;

    /// Claims `due` and spawns its attempt on `in_flight`, or settles it without one.
    fn start(
        &self,
        store: &Store,
        due: Self::Due,
        now: i64,
        in_flight: &mut JoinSet<()>,
    ) -> impl Future<Output = ()> + Send;
}

/// Polls `outbox` until `shutdown`.
pub async fn run<O: Outbox>(store: Store, outbox: O, shutdown: CancellationToken) {
    let mut in_flight: JoinSet<()> = JoinSet::new();
    let mut ticker = tokio::time::interval(POLL_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        while in_flight.try_join_next().is_some() {}
        let room = O::MAX_IN_FLIGHT.saturating_sub(in_flight.len());
        if room == 0 {
            continue;
        }
        let now = crate::base::clock::now_millis();
        let reader = outbox.clone();
        let due = match store.read(move |transaction| reader.read_due(transaction, now, room)).await {
            Ok(due) => due,
            Err(error) => {
                tracing::error!(%error, outbox = O::NAME, "reading the outbox failed");
                continue;
            }
        };
        for due in due {
            outbox.start(&store, due, now, &mut in_flight).await;
        }
    }
    if O::FINISH_ON_SHUTDOWN {
        while in_flight.join_next().await.is_some() {}
    } else {
        in_flight.shutdown().await;
    }
}

/// The rows due at `now`, in due order: `load` reads each id's row, `None` when it is gone
/// (such ids do not count towards `limit`).
pub fn due_rows<T>(
    transaction: &ReadTransaction,
    index: DueIndex,
    now: i64,
    limit: usize,
    mut load: impl FnMut(u64) -> Result<Option<T>, StorageError>,
) -> Result<Vec<T>, StorageError> {
    let due = transaction.open_table(index)?;
    let mut found = Vec::new();
    for entry in due.range((0, 0)..=(now.max(0) as u64, u64::MAX))? {
        if found.len() >= limit {
            break;
        }
        let (_, id) = entry?.0.value();
        if let Some(row) = load(id)? {
            found.push(row);
        }
    }
    Ok(found)
}

/// Moves row `id` in the due index from `from` to `to`; `None` leaves that side out.
pub fn move_due(
    due: &mut LoggedTable<'_, (u64, u64), ()>,
    id: u64,
    from: Option<i64>,
    to: Option<i64>,
) -> Result<(), StorageError> {
    if let Some(from) = from {
        due.remove((from.max(0) as u64, id))?;
    }
    if let Some(to) = to {
        due.insert((to.max(0) as u64, id), ())?;
    }
    Ok(())
}

/// A row table of an outbox: JSON records by id.
pub type Rows = TableDefinition<'static, u64, &'static [u8]>;

/// Moves row `id` of `rows` from due time `from` to `to` in `index`, and writes the new due time
/// into the row with `set_due` (a row already gone only leaves the index).
pub async fn reschedule<T>(
    store: &Store,
    (index, rows): (DueIndex, Rows),
    id: u64,
    from: Option<i64>,
    to: Option<i64>,
    set_due: fn(&mut T, Option<i64>),
) -> Result<(), StorageError>
where
    T: serde::Serialize + serde::de::DeserializeOwned + 'static,
{
    store
        .write(move |context| {
            move_due(&mut context.transaction.open_table(index)?, id, from, to)?;
            let mut rows = context.transaction.open_table(rows)?;
            let found = rows.get(id)?.map(|value| decode_json::<T>(value.value())).transpose()?;
            if let Some(mut row) = found {
                set_due(&mut row, to);
                rows.insert(id, encode_json(&row).as_slice())?;
            }
            Ok(Ok::<_, StorageError>(()))
        })
        .await
}
