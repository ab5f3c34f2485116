//! Blocking visitors: by visitor (the `blocked` flag on the visitor record) and by address
//! (`blocked_ips_v1`, per site). A block closes the visitor's live connections with 4003 and
//! refuses their new sessions and sockets.

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

/// Blocks a visitor, and `ip` on the visitor's site when given.
pub async fn block_visitor(store: &Store, visitor_id: u64, ip: Option<String>) -> Result<Visitor, BlockError> {
    set_blocked(store, visitor_id, true, ip).await
}

/// Lifts a visitor's block (addresses stay blocked until lifted on their own).
pub async fn unblock_visitor(store: &Store, visitor_id: u64) -> Result<Visitor, BlockError> {
    set_blocked(store, visitor_id, false, None).await
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

/// Blocks an address on a site (the caller has checked the site exists and `ip` parses).
pub async fn block_address(store: &Store, site: String, ip: String) -> Result<(), StorageError> {
    store
        .write(move |context| {
            context.transaction.open_table(tables::BLOCKED_IPS)?.insert((site.as_str(), ip.as_str()), context.now)?;
            Ok(Ok::<_, StorageError>(()))
        })
        .await
}

/// Lifts a block of an address on a site; `NotFound` if it was not blocked.
pub async fn unblock_address(store: &Store, site: String, ip: String) -> Result<(), BlockError> {
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

/// Blocked visitors with when they were blocked, newest block first.
pub fn blocked_visitors(transaction: &ReadTransaction) -> Result<Vec<(Visitor, i64)>, StorageError> {
    let blocked = transaction.open_table(tables::BLOCKED_VISITORS)?;
    let mut found = Vec::new();
    for entry in blocked.iter()? {
        let (visitor_id, blocked_at) = entry?;
        if let Some(visitor) = crate::people::visitors::get(transaction, visitor_id.value())? {
            found.push((visitor, blocked_at.value()));
        }
    }
    found.sort_by_key(|(_, blocked_at)| std::cmp::Reverse(*blocked_at));
    Ok(found)
}

/// Blocked addresses as (site, address, blocked at), newest first.
pub fn blocked_addresses(transaction: &ReadTransaction) -> Result<Vec<(String, String, i64)>, StorageError> {
    let table = transaction.open_table(tables::BLOCKED_IPS)?;
    let mut found = Vec::new();
    for entry in table.iter()? {
        let (key, blocked_at) = entry?;
        let (site, ip) = key.value();
        found.push((site.to_owned(), ip.to_owned(), blocked_at.value()));
    }
    found.sort_by_key(|(_, _, blocked_at)| std::cmp::Reverse(*blocked_at));
    Ok(found)
}

/// Whether `ip` is blocked on `site`.
pub fn is_ip_blocked(transaction: &ReadTransaction, site: &str, ip: &str) -> Result<bool, StorageError> {
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
