//! Length-prefixed frames on a byte stream (QUIC streams): a 4-byte big-endian length, then that
//! many bytes of one frame. Shared by the server's QUIC transport and `kefu::client`.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes of the length prefix.
pub const PREFIX_BYTES: usize = 4;

/// Why reading a frame stopped.
#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    #[error("a frame of {0} bytes is over the limit")]
    TooBig(usize),
    #[error("the stream ended inside a frame")]
    Truncated,
    #[error("reading the stream failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The length prefix for a frame of `len` bytes.
pub fn prefix(len: usize) -> Bytes {
    Bytes::copy_from_slice(&(len as u32).to_be_bytes())
}

/// Reads the next frame; `Ok(None)` when the stream ended cleanly between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R, max_bytes: usize) -> Result<Option<Bytes>, FramingError> {
    let mut length = [0u8; PREFIX_BYTES];
    let mut filled = 0;
    while filled < PREFIX_BYTES {
        let n = reader.read(&mut length[filled..]).await?;
        if n == 0 {
            return if filled == 0 { Ok(None) } else { Err(FramingError::Truncated) };
        }
        filled += n;
    }
    let len = u32::from_be_bytes(length) as usize;
    if len > max_bytes {
        return Err(FramingError::TooBig(len));
    }
    let mut frame = BytesMut::zeroed(len);
    reader.read_exact(&mut frame).await.map_err(|error| match error.kind() {
        std::io::ErrorKind::UnexpectedEof => FramingError::Truncated,
        _ => FramingError::Io(error),
    })?;
    Ok(Some(frame.freeze()))
}
