//! kefu's integration suite: real servers on port 0, real redb, real sockets.

mod bad_input;
mod chat;
mod console;
mod crash;
mod delivery;
mod moderation;
mod operations;
mod routing;
mod search;
mod support;
mod visitor_features;
mod webhooks;
