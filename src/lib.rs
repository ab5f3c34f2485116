//! kefu: a self-hosted customer-service live chat in one binary.
//!
//! The library holds everything; `main.rs` only calls [`cli::main`].
//! See ARCHITECTURE.md for the map of the modules and the invariants they keep.

pub mod agents;
pub mod assets;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod conversations;
pub mod delivery;
pub mod http;
pub mod messages;
pub mod offline_messages;
pub mod principal;
pub mod protocol;
pub mod routing;
pub mod secrets;
pub mod sensitive_words;
pub mod server;
pub mod session;
pub mod sites;
pub mod storage;
pub mod telemetry;
pub mod transport;
pub mod uploads;
pub mod visitors;
