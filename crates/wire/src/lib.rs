//! kefu's wire vocabulary, shared by the server and its clients: every frame, view, error and
//! close code ([`protocol`]), their Protobuf form ([`protobuf`], generated from
//! `proto/kefu.proto`), the length-prefixed framing of QUIC streams ([`framing`]) and the ALPN
//! names of the two encodings ([`encoding`]). docs/protocol.md describes the same for people.
//!
//! It imports no other kefu crate: the server (`kefu`), the Rust client (`kefu-client`) and the
//! load generator (`kefu-bench`) all build on it.

pub mod encoding;
pub mod framing;
pub mod protobuf;
pub mod protocol;
