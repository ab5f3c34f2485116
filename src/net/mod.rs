//! The transports: the socket session shared by WebSocket and QUIC, the HTTP API, the admin
//! pages, the control socket and the embedded web UI. They adapt requests to domain functions
//! and hold no rules of their own.

pub mod admin;
pub mod assets;
pub mod control;
pub mod grpc;
pub mod http;
pub mod metrics_endpoint;
pub mod quic;
pub mod session;
mod state;
pub mod tls;
pub mod websocket;

pub use state::{App, AppState};

/// The QUIC framing and the Protobuf form of the frames are wire vocabulary (the kefu-wire crate),
/// shared with the clients.
pub use kefu_wire::{framing, protobuf};
