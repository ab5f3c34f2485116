//! kefu: a self-hosted customer-service live chat in one binary.
//!
//! The library holds everything; `main.rs` only calls [`cli::main`].
//! The modules are layered, bottom up: [`base`] (process-wide foundations), [`protocol`] (the
//! wire vocabulary) and [`storage`]; the domain ([`chat`], [`people`], [`sites`], [`routing`],
//! [`bot`], [`search`], [`history`], [`webhooks`]); the transports ([`net`]); and the wiring
//! ([`server`], [`cli`]). A module imports only from its own layer or below; `tests/it/layers.rs`
//! checks it. See ARCHITECTURE.md for the map and the invariants.

pub mod base;
pub mod bench;
pub mod bot;
pub mod chat;
pub mod cli;
pub mod client;
pub mod history;
pub mod net;
pub mod people;
pub mod protocol;
pub mod routing;
pub mod search;
pub mod server;
pub mod sites;
pub mod storage;
pub mod webhooks;
