//! kefu's integration suite: real servers on port 0, real redb, real sockets.

mod bad_input;
mod bench;
mod chat;
mod crash;
mod delivery;
mod moderation;
mod routing;
mod support;
mod visitor_features;
