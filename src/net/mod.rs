//! The transports: the socket session shared by WebSocket and QUIC, the HTTP API, the admin
//! pages, the control socket and the embedded web UI. They adapt requests to domain functions
//! and hold no rules of their own.

pub mod admin;
pub mod assets;
pub mod control;
pub mod framing;
pub mod http;
pub mod metrics_endpoint;
pub mod protobuf;
pub mod quic;
pub mod session;
mod state;
pub mod websocket;

pub use state::{App, AppState};
