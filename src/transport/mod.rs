//! Transports that carry protocol frames between clients and [`crate::session::Session`]s.

pub mod websocket;
