//! Transports that carry protocol frames between clients and [`crate::session::Session`]s.

pub mod framing;
pub mod protobuf;
pub mod quic;
pub mod websocket;
