//! Blocking visitors: by visitor (the `blocked` flag on the visitor record) and by address
//! (`blocked_ips_v1`, per site). A block closes the visitor's live connections with 4003 and
//! refuses their new sessions and sockets.
//!
//! [`BlockStore`] is its storage boundary: [`Store`] implements it here, the cluster's
//! PostgreSQL in `cluster::blocking`; both list with [`newest_first`].

use std::future::Future;

use redb::{ReadTransaction, ReadableTable};

use crate::chat::delivery::Hub;
use crate::people::visitor_presence::OnlineVisitors;
use crate::people::visitors::Visitor;
use crate::protocol::{ErrorCode, close_code};
use crate::storage::{StorageError, Store, WriteContext, tables};

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("no such visitor")]
    NotFound,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Blocked visitors or addresses, newest block first (by the time in each).
pub fn newest_first<T>(mut blocked: Vec<T>, blocked_at: impl Fn(&T) -> i64) -> Vec<T> {
    blocked.sort_by_key(|item| std::cmp::Reverse(blocked_at(item)));
    blocked
}

/// The blocks' storage boundary.
pub trait BlockStore: Send + Sync {
    /// Blocks (`blocked`) or unblocks a visitor; a block also blocks `ip` on the visitor's site
    /// when given (addresses stay blocked until lifted on their own).
    fn set_visitor_blocked(
        &self,
        visitor_id: u64,
        blocked: bool,
        ip: Option<String>,
    ) -> impl Future<Output = Result<Visitor, BlockError>> + Send;

    /// Blocks an address on a site (the caller has checked the site exists and `ip` parses).
    fn block_address(&self, site: String, ip: String) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Lifts a block of an address on a site; `NotFound` if it was not blocked.
    fn unblock_address(&self, site: String, ip: String) -> impl Future<Output = Result<(), BlockError>> + Send;

    /// Blocked visitors with when they were blocked, newest block first.
    fn blocked_visitors(&self) -> impl Future<Output = Result<Vec<(Visitor, i64)>, StorageError>> + Send;

    /// Blocked addresses as (site, address, blocked at), newest first.
    fn blocked_addresses(&self) -> impl Future<Output = Result<Vec<(String, String, i64)>, StorageError>> + Send;

    /// Whether `ip` is blocked on `site`.
    fn is_ip_blocked(&self, site: &str, ip: &str) -> impl Future<Output = Result<bool, StorageError>> + Send;
}

impl BlockStore for Store {
    async fn set_visitor_blocked(
        &self,
        visitor_id: u64,
        blocked: bool,
        ip: Option<String>,
    ) -> Result<Visitor, BlockError> {
        set_blocked(self, visitor_id, blocked, ip).await
    }

    async fn block_address(&self, site: String, ip: String) -> Result<(), StorageError> {
        block_address(self, site, ip).await
    }

    async fn unblock_address(&self, site: String, ip: String) -> Result<(), BlockError> {
        unblock_address(self, site, ip).await
    }

    async fn blocked_visitors(&self) -> Result<Vec<(Visitor, i64)>, StorageError> {
        self.read(blocked_visitors).await
    }

    async fn blocked_addresses(&self) -> Result<Vec<(String, String, i64)>, StorageError> {
        self.read(blocked_addresses).await
    }

    async fn is_ip_blocked(&self, site: &str, ip: &str) -> Result<bool, StorageError> {
        let (site, ip) = (site.to_owned(), ip.to_owned());
        self.read(move |transaction| is_ip_blocked(transaction, &site, &ip)).await
    }
}

async fn set_blocked(store: &Store, visitor_id: u64, blocked: bool, ip: Option<String>) -> Result<Visitor, BlockError> {
    store
        .write(move |context| {
            let Some(mut visitor) = crate::people::visitors::get_for_update(context, visitor_id)? else {
                return Ok(Err(BlockError::NotFound));
            };
            visitor.blocked = blocked;
            crate::people::visitors::put(context, &visitor)?;
            let mut blocked_visitors = context.transaction.open_table(tables::BLOCKED_VISITORS)?;
            if blocked {
                blocked_visitors.insert(visitor_id, context.now)?;
            } else {
                blocked_visitors.remove(visitor_id)?;
            }
            if let Some(ip) = &ip {
                context
                    .transaction
                    .open_table(tables::BLOCKED_IPS)?
                    .insert((visitor.site.as_str(), ip.as_str()), context.now)?;
            }
            Ok(Ok(visitor))
        })
        .await
}

async fn block_address(store: &Store, site: String, ip: String) -> Result<(), StorageError> {
    store
        .write(move |context| {
            context.transaction.open_table(tables::BLOCKED_IPS)?.insert((site.as_str(), ip.as_str()), context.now)?;
            Ok(Ok::<_, StorageError>(()))
        })
        .await
}

async fn unblock_address(store: &Store, site: String, ip: String) -> Result<(), BlockError> {
    store
        .write(move |context| {
            match context.transaction.open_table(tables::BLOCKED_IPS)?.remove((site.as_str(), ip.as_str()))? {
                Some(_) => Ok(Ok(())),
                None => Ok(Err(BlockError::NotFound)),
            }
        })
        .await
}

/// Lifts every address block of a site (inside the site's deletion).
pub fn unblock_addresses_of_site(context: &WriteContext<'_>, site: &str) -> Result<(), StorageError> {
    context.transaction.open_table(tables::BLOCKED_IPS)?.retain(|(blocked_on, _), _| blocked_on != site)?;
    Ok(())
}

/// Blocked visitors with when they were blocked, newest block first (in a read transaction).
pub fn blocked_visitors(transaction: &ReadTransaction) -> Result<Vec<(Visitor, i64)>, StorageError> {
    let blocked = transaction.open_table(tables::BLOCKED_VISITORS)?;
    let mut found = Vec::new();
    for entry in blocked.iter()? {
        let (visitor_id, blocked_at) = entry?;
        if let Some(visitor) = crate::people::visitors::get(transaction, visitor_id.value())? {
            found.push((visitor, blocked_at.value()));
        }
    }
    Ok(newest_first(found, |(_, blocked_at)| *blocked_at))
}

/// Blocked addresses as (site, address, blocked at), newest first (in a read transaction).
pub fn blocked_addresses(transaction: &ReadTransaction) -> Result<Vec<(String, String, i64)>, StorageError> {
    let table = transaction.open_table(tables::BLOCKED_IPS)?;
    let mut found = Vec::new();
    for entry in table.iter()? {
        let (key, blocked_at) = entry?;
        let (site, ip) = key.value();
        found.push((site.to_owned(), ip.to_owned(), blocked_at.value()));
    }
    Ok(newest_first(found, |(_, _, blocked_at)| *blocked_at))
}

fn is_ip_blocked(transaction: &ReadTransaction, site: &str, ip: &str) -> Result<bool, StorageError> {
    match transaction.open_table(tables::BLOCKED_IPS) {
        Ok(table) => Ok(table.get((site, ip))?.is_some()),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// Closes the live connections of blocked visitors: `visitor_id`'s, and on `site` everyone's
/// from `ip` when given.
pub fn disconnect(hub: &Hub, online: &OnlineVisitors, site: &str, visitor_id: u64, ip: Option<&str>) {
    let mut visitor_ids = vec![visitor_id];
    if let Some(ip) = ip {
        visitor_ids.extend(online.at_address(site, ip));
    }
    close_visitors(hub, visitor_ids);
}

/// Closes the live connections of every visitor of `site` at `ip`.
pub fn disconnect_address(hub: &Hub, online: &OnlineVisitors, site: &str, ip: &str) {
    close_visitors(hub, online.at_address(site, ip));
}

fn close_visitors(hub: &Hub, visitor_ids: impl IntoIterator<Item = u64>) {
    let frame = crate::protocol::error_frame(ErrorCode::Blocked, "you have been blocked", None);
    for id in visitor_ids {
        for connection in hub.visitor_connections(id) {
            connection.request_close(close_code::FORBIDDEN, frame.clone());
        }
    }
}
