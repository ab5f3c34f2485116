//! Length-prefixed frames on a byte stream (QUIC streams): a 4-byte big-endian length, then that
//! many bytes of one frame. Shared by the server's QUIC transport and `kefu-client`.
//!
//! Reading is tokio-util's [`LengthDelimitedCodec`], whose defaults are exactly this format.
//! Writing stays a 4-byte prefix sent beside the frame with quinn's `write_all_chunks`: the codec's
//! encoder copies every frame into its buffer, while quinn takes the frame's `Bytes` as they are.

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncRead;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec, LengthDelimitedCodecError};

/// Bytes of the length prefix.
pub const PREFIX_BYTES: usize = 4;

/// A stream read frame by frame. It may read past a frame and keep the rest, so a stream keeps one
/// reader for its whole life.
pub type FrameReader<R> = FramedRead<R, LengthDelimitedCodec>;

/// Why reading a frame stopped.
#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    #[error("a frame is over the limit")]
    TooBig,
    #[error("reading the stream failed: {0}")]
    Io(std::io::Error),
}

/// The length prefix for a frame of `len` bytes.
pub fn prefix(len: usize) -> Bytes {
    Bytes::copy_from_slice(&(len as u32).to_be_bytes())
}

/// A reader of frames of at most `max_bytes` from `stream`.
pub fn reader<R: AsyncRead>(stream: R, max_bytes: usize) -> FrameReader<R> {
    let codec = LengthDelimitedCodec::builder()
        .length_field_length(PREFIX_BYTES)
        .big_endian()
        .max_frame_length(max_bytes)
        .new_codec();
    // Room for a prefix only: the codec reserves each frame's length once it has read the prefix,
    // so an idle stream (a server holds thousands) keeps no frame-sized buffer of its own.
    FramedRead::with_capacity(stream, codec, PREFIX_BYTES)
}

/// Reads the next frame; `Ok(None)` when the stream ended cleanly between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut FrameReader<R>) -> Result<Option<Bytes>, FramingError> {
    match reader.next().await {
        None => Ok(None),
        Some(Ok(frame)) => Ok(Some(frame.freeze())),
        Some(Err(error)) if error.get_ref().is_some_and(|inner| inner.is::<LengthDelimitedCodecError>()) => {
            Err(FramingError::TooBig)
        }
        Some(Err(error)) => Err(FramingError::Io(error)),
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use tokio_util::codec::Encoder;

    use super::*;

    async fn read_all(wire: &[u8], max_bytes: usize) -> (Vec<Bytes>, Option<FramingError>) {
        let mut reader = reader(wire, max_bytes);
        let mut frames = Vec::new();
        loop {
            match read_frame(&mut reader).await {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => return (frames, None),
                Err(error) => return (frames, Some(error)),
            }
        }
    }

    #[tokio::test]
    async fn the_written_prefix_is_what_the_codec_reads_and_writes() {
        let frames = [&b"{\"type\":\"ping\"}"[..], b"", &[7u8; 300][..]];
        let mut wire = Vec::new();
        for frame in frames {
            wire.extend_from_slice(&prefix(frame.len()));
            wire.extend_from_slice(frame);
        }
        let mut encoded = BytesMut::new();
        for frame in frames {
            LengthDelimitedCodec::new().encode(Bytes::copy_from_slice(frame), &mut encoded).expect("a small frame");
        }
        assert_eq!(&encoded[..], &wire[..]);
        assert_eq!(&wire[..4], &[0, 0, 0, 15]);

        let (read, error) = read_all(&wire, 1024).await;
        assert!(error.is_none(), "{error:?}");
        assert_eq!(read, frames.map(Bytes::copy_from_slice));
    }

    #[tokio::test]
    async fn a_frame_over_the_limit_is_too_big() {
        let mut wire = prefix(11).to_vec();
        wire.extend_from_slice(b"hello world");
        let (read, error) = read_all(&wire, 10).await;
        assert!(read.is_empty());
        assert!(matches!(error, Some(FramingError::TooBig)), "{error:?}");
        let (read, error) = read_all(&wire, 11).await;
        assert_eq!(read, [Bytes::from_static(b"hello world")]);
        assert!(error.is_none(), "{error:?}");
    }

    #[tokio::test]
    async fn a_stream_ending_inside_a_frame_is_an_error() {
        let mut wire = prefix(11).to_vec();
        wire.extend_from_slice(b"hello");
        assert!(matches!(read_all(&wire, 100).await, (read, Some(FramingError::Io(_))) if read.is_empty()));
        assert!(matches!(read_all(&[0, 0], 100).await, (read, Some(FramingError::Io(_))) if read.is_empty()));
    }
}
