//! kefu's integration suite: real servers on port 0, real redb, real sockets.

mod admin;
mod api;
mod bad_input;
mod bench;
mod bot;
mod chat;
mod connection_limits;
mod console;
mod crash;
mod delivery;
mod file_modes;
mod kb_eval;
mod moderation;
mod operations;
mod quic;
mod reports;
mod reverse_proxy;
mod routing;
mod search;
mod support;
mod visitor_features;
mod webhooks;
