//! kefu's integration suite: real servers on port 0, real redb, real sockets.

mod bad_input;
mod chat;
mod crash;
mod delivery;
mod moderation;
mod quic;
mod routing;
mod support;
