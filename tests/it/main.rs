//! kefu's integration suite: real servers on port 0, real redb, real sockets.

mod admin;
mod api;
mod bad_input;
mod bench;
mod bot;
mod chat;
mod console;
mod crash;
mod csv_injection;
mod delivery;
mod kb_eval;
mod login_limits;
mod moderation;
mod operations;
mod outbound_guard;
mod quic;
mod reports;
mod routing;
mod search;
mod support;
mod visitor_features;
mod visitor_limits;
mod webhooks;
