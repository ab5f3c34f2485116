//! kefu: a self-hosted customer-service live chat in one binary.
//!
//! The library holds the server; `main.rs` only calls [`cli::main`]. The wire vocabulary
//! ([`protocol`], the QUIC framing and Protobuf) is the kefu-wire crate; the Rust client with
//! `kefu chat` is kefu-client and the load generator of `kefu bench` is kefu-bench, which the
//! command line dispatches to (ARCHITECTURE.md, "Crates").
//! The modules are layered, bottom up: [`base`] (process-wide foundations), [`protocol`] (the
//! wire vocabulary) and [`storage`]; the domain ([`chat`], [`people`], [`sites`], [`routing`],
//! [`bot`], [`search`], [`history`], [`webhooks`]); the transports ([`net`]); and the wiring
//! ([`server`], [`cli`]). A module imports only from its own layer or below; `tests/it/layers.rs`
//! checks it. See ARCHITECTURE.md for the map and the invariants.

pub mod base;
pub mod bot;
pub mod chat;
pub mod cli;
pub mod history;
pub mod net;
pub mod people;
pub mod routing;
pub mod search;
pub mod server;
pub mod sites;
pub mod storage;
pub mod webhooks;

/// The wire vocabulary lives in the kefu-wire crate, shared with the clients; the server names it
/// `crate::protocol` as before.
pub use kefu_wire::protocol;
