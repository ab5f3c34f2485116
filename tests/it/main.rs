//! kefu's integration suite: real servers on port 0, real redb, real sockets.

mod admin;
mod api;
mod bad_input;
mod bench;
mod bot;
mod chat;
mod console;
mod crash;
mod delivery;
mod display_safety;
mod documented_contract;
mod identity;
mod kb_eval;
mod moderation;
mod operations;
mod protocol_edges;
mod quic;
mod reports;
mod revocation;
mod routing;
mod search;
mod support;
mod visitor_features;
mod webhooks;
