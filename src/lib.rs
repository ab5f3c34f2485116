//! kefu: a self-hosted customer-service live chat in one binary.
//!
//! The library holds everything; `main.rs` only calls [`cli::main`].
//! See ARCHITECTURE.md for the map of the modules and the invariants they keep.

pub mod admin;
pub mod agents;
pub mod allocator;
pub mod api_tokens;
pub mod assets;
pub mod audit;
pub mod backup;
pub mod bench;
pub mod blocking;
pub mod bot;
pub mod business_hours;
pub mod canned_replies;
pub mod chat;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod control;
pub mod conversation_actions;
pub mod conversations;
pub mod delivery;
pub mod export;
pub mod file_modes;
pub mod history;
pub mod http;
pub mod knowledge_base;
pub mod llm;
pub mod messages;
pub mod metrics;
pub mod offline_messages;
pub mod outbound;
pub mod principal;
pub mod protocol;
pub mod reports;
pub mod retention;
pub mod routing;
pub mod routing_rules;
pub mod search;
pub mod secrets;
pub mod sensitive_words;
pub mod server;
pub mod session;
pub mod sites;
pub mod storage;
pub mod systemd;
pub mod teams;
pub mod telemetry;
pub mod transport;
pub mod uploads;
pub mod visitor_presence;
pub mod visitors;
pub mod webhooks;
