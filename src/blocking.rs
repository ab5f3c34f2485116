//! Blocking visitors: by visitor (the `blocked` flag on the visitor record) and by address
//! (`blocked_ips_v1`, per site). A block closes the visitor's live connections with 4003 and
//! refuses their new sessions and sockets.

use redb::{ReadTransaction, ReadableTable};

use crate::delivery::Hub;
use crate::protocol::{ErrorCode, close_code};
use crate::storage::{StorageError, Store, decode_json, encode_json, tables};
use crate::visitor_presence::OnlineVisitors;
use crate::visitors::Visitor;

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("no such visitor")]
    NotFound,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Blocks a visitor, and `ip` on the visitor's site when given.
pub async fn block_visitor(store: &Store, visitor_id: u64, ip: Option<String>) -> Result<Visitor, BlockError> {
    store
        .write(move |context| {
            let mut visitors = context.transaction.open_table(tables::VISITORS)?;
            let Some(mut visitor) =
                visitors.get(visitor_id)?.map(|value| decode_json::<Visitor>(value.value())).transpose()?
            else {
                return Ok(Err(BlockError::NotFound));
            };
            visitor.blocked = true;
            visitors.insert(visitor_id, encode_json(&visitor).as_slice())?;
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
    let frame = crate::session::error_frame(ErrorCode::Blocked, "you have been blocked", None);
    let mut visitor_ids = vec![visitor_id];
    if let Some(ip) = ip {
        visitor_ids.extend(online.at_address(site, ip));
    }
    for id in visitor_ids {
        for connection in hub.visitor_connections(id) {
            connection.request_close(close_code::FORBIDDEN, frame.clone());
        }
    }
}
