//! The two encodings a QUIC connection may speak, named by its ALPN (docs/quic.md): JSON frames
//! as on the WebSocket, or their Protobuf form ([`crate::protobuf`]).

/// ALPN of the JSON encoding.
pub const ALPN_JSON: &[u8] = b"kefu/1";
/// ALPN of the Protobuf encoding.
pub const ALPN_PROTOBUF: &[u8] = b"kefu/1+proto";

/// Which encoding a connection speaks, from its ALPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Protobuf,
}

impl Encoding {
    /// The encoding a negotiated ALPN names; anything but the Protobuf one is JSON.
    pub fn of_alpn(alpn: Option<&[u8]>) -> Encoding {
        match alpn {
            Some(protocol) if protocol == ALPN_PROTOBUF => Encoding::Protobuf,
            _ => Encoding::Json,
        }
    }
}
