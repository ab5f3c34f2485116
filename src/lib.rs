//! kefu: a self-hosted customer-service live chat in one binary.
//!
//! The library holds the server; `main.rs` only calls [`cli::main`]. The modules are layered,
//! bottom up: [`base`] (process-wide foundations), [`protocol`] (the wire vocabulary, which is the
//! kefu-wire crate, shared with the clients) and [`storage`]; the domain ([`chat`], [`people`],
//! [`sites`], [`routing`], [`bot`], [`search`], [`history`], [`webhooks`], [`push`], [`email`], [`cluster`]); the transports
//! ([`net`]); and the wiring ([`server`], [`cli`]). A module imports only from its own layer or
//! below; `tests/it/layers.rs` checks it. The Rust client with `kefu chat` (kefu-client) and the
//! load generator of `kefu bench` (kefu-bench) are crates of their own, which the command line
//! dispatches to. See ARCHITECTURE.md for the map, the crates and the invariants.

pub mod base;
pub mod bot;
pub mod chat;
pub mod cli;
pub mod cluster;
pub mod email;
pub mod history;
pub mod net;
pub mod people;
pub mod push;
pub mod routing;
pub mod search;
pub mod server;
pub mod sites;
pub mod storage;
pub mod webhooks;

/// The wire vocabulary lives in the kefu-wire crate, shared with the clients; the server names it
/// `crate::protocol` as before.
pub use kefu_wire::protocol;
