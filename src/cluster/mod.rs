//! Cluster mode (issue 29): several kefu nodes sharing PostgreSQL. So far the message path:
//! [`messages::PostgresMessages`] implements the chat's `MessageStore` on PostgreSQL, with the
//! connections, migrations and day partitions of [`postgres`]; with a NATS connection it publishes
//! each committed message once ([`events`]). [`redb_copy`] copies an appliance's history into it
//! (`kefu migrate-to-postgres`). [`search`] searches the messages from any node and [`uploads`]
//! stores attachments' files for every node. The server does not use it yet:
//! the other areas still live in redb, so there is no `storage.backend` setting (docs/cluster.md).

pub mod events;
pub mod messages;
pub mod postgres;
pub mod redb_copy;
pub mod search;
pub mod uploads;
