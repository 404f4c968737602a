//! A tokio-util [`Decoder`]/[`Encoder`] for the Go-compatible framing, for
//! byte streams this crate does not own: any `AsyncRead`/`AsyncWrite` (a
//! `UnixStream` you accepted yourself, a pipe, TCP, stdin) through
//! `tokio_util::codec::{Framed, FramedRead, FramedWrite}`.
//!
//! This module owns the adapter only: every framing rule is in
//! [`frame`](crate::frame), so the codec classifies input exactly as the
//! [`Reader`](crate::Reader) (and Go's `binary.ReadUvarint` + `io.ReadFull`)
//! does:
//!
//! | INPUT (hex)                     | DECODED                                            |
//! |---------------------------------|----------------------------------------------------|
//! | `03 61 62 63`                   | `"abc"`                                            |
//! | `83 00 61 62 63`                | `"abc"` (non-minimal prefix, accepted as Go does)  |
//! | `00`                            | skipped (or an empty frame, see [`UvarintCodec::skip_empty`]) |
//! | `80 80`                         | need more bytes                                    |
//! | `ff` x 10                       | [`FrameError::PrefixOverflow`]                     |
//! | a prefix above the maximum      | [`FrameError::TooLarge`], before any body byte is buffered |
//! | `80` then EOF                   | [`FrameError::TruncatedPrefix`]                    |
//! | `05 61` then EOF                | [`FrameError::TruncatedBody`]                      |
//!
//! Unlike `unsigned-varint`'s `UviBytes`, non-minimal prefixes are accepted
//! (Go accepts them); unlike `LengthDelimitedCodec`, the prefix is a varint.
//! The buffer never grows past what has arrived plus a bounded step
//! ([`FrameDecoder::grow_hint`]), so a peer that declares a large frame and
//! sends little makes the decoder hold little.
//!
//! The encoder writes minimal prefixes (Go's `binary.PutUvarint`), refuses a
//! message above the maximum (the peer would close the connection on it) and
//! writes nothing for an empty message, as the Go and Rust Writers do.
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use tokio_util::codec::{Decoder, Encoder};
//! use udsipc::codec::UvarintCodec;
//!
//! let mut codec = UvarintCodec::new();
//! let mut wire = BytesMut::new();
//! codec.encode(Bytes::from_static(b"hello"), &mut wire)?;
//! codec.encode(&b"world"[..], &mut wire)?;
//! assert_eq!(&wire[..7], b"\x05hello\x05");
//!
//! assert_eq!(codec.decode(&mut wire)?.as_deref(), Some(&b"hello"[..]));
//! assert_eq!(codec.decode(&mut wire)?.as_deref(), Some(&b"world"[..]));
//! assert_eq!(codec.decode_eof(&mut wire)?, None); // clean end
//! # Ok::<(), udsipc::codec::CodecError>(())
//! ```
//!
//! Over a socket (any `AsyncRead + AsyncWrite`):
//!
//! ```no_run
//! use futures_util::{SinkExt, StreamExt};
//! use tokio_util::codec::Framed;
//! use udsipc::codec::UvarintCodec;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let stream = tokio::net::UnixStream::connect("/run/app/app.sock").await?;
//! let mut framed = Framed::new(stream, UvarintCodec::new().max_message_size(1 << 20));
//! framed.send(bytes::Bytes::from_static(b"ping")).await?;
//! while let Some(msg) = framed.next().await {
//!     println!("{} bytes", msg?.len());
//! }
//! # Ok(())
//! # }
//! ```

use std::io;

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::frame::{FrameDecoder, FrameError, Next, put_prefix, varint_len};

/// The default maximum message size: 10 MiB, the Go reference's and the
/// Reader's default.
pub const DEFAULT_CODEC_MAX_MESSAGE_SIZE: u64 = 10 << 20;

/// Why the codec failed: a protocol violation in the stream, or an IO error
/// of the stream underneath (tokio-util's `FramedRead` passes those through
/// the decoder's error type).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The peer broke the framing (or, when encoding, a message is above the
    /// maximum). The stream cannot be resynchronised: close it.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// Reading or writing the stream failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl From<CodecError> for io::Error {
    fn from(e: CodecError) -> Self {
        match e {
            CodecError::Io(e) => e,
            CodecError::Frame(e) => io::Error::new(io::ErrorKind::InvalidData, e),
        }
    }
}

/// Go-compatible varint length-prefixed framing as a tokio-util codec.
///
/// | option | default |
/// |---|---|
/// | [`max_message_size`](Self::max_message_size) | 10 MiB (as the Reader and Go) |
/// | [`skip_empty`](Self::skip_empty) | `true` (as the Reader and Go) |
///
/// Decoded messages are `BytesMut` split off the read buffer (no copy);
/// `freeze()` them for a `Bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UvarintCodec {
    decoder: FrameDecoder,
    skip_empty: bool,
}

impl Default for UvarintCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl UvarintCodec {
    /// A codec with the defaults: 10 MiB maximum, empty frames skipped.
    pub const fn new() -> Self {
        Self {
            decoder: FrameDecoder::new(DEFAULT_CODEC_MAX_MESSAGE_SIZE),
            skip_empty: true,
        }
    }

    /// The largest message accepted, in either direction. A larger declared
    /// length is a [`FrameError::TooLarge`] as soon as its prefix is read.
    #[must_use]
    pub const fn max_message_size(mut self, max: u64) -> Self {
        self.decoder = FrameDecoder::new(max);
        self
    }

    /// Whether zero-length frames are skipped (`true`, the default, as the
    /// Go Reader does) or decoded as empty messages (`false`).
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use tokio_util::codec::Decoder;
    /// let mut wire = BytesMut::from(&[0u8, 1, b'x'][..]);
    /// let mut codec = udsipc::codec::UvarintCodec::new().skip_empty(false);
    /// assert_eq!(codec.decode(&mut wire)?.as_deref(), Some(&b""[..]));
    /// assert_eq!(codec.decode(&mut wire)?.as_deref(), Some(&b"x"[..]));
    /// # Ok::<(), udsipc::codec::CodecError>(())
    /// ```
    #[must_use]
    pub const fn skip_empty(mut self, skip: bool) -> Self {
        self.skip_empty = skip;
        self
    }

    /// The configured maximum message size.
    pub const fn max_len(&self) -> u64 {
        self.decoder.max_message_size()
    }
}

impl Decoder for UvarintCodec {
    type Item = BytesMut;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, CodecError> {
        loop {
            match self.decoder.decode(src)? {
                Next::Frame { body, consumed } => {
                    let mut frame = src.split_to(consumed);
                    if body.is_empty() && self.skip_empty {
                        continue;
                    }
                    frame.advance(body.start);
                    return Ok(Some(frame));
                }
                Next::NeedMore { frame_len } => {
                    // Never reserve more than has arrived plus a bounded step.
                    if let Some(total) = frame_len {
                        let want = self.decoder.grow_hint(src.len(), total);
                        src.reserve(want.saturating_sub(src.len()));
                    }
                    return Ok(None);
                }
            }
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, CodecError> {
        if let Some(frame) = self.decode(src)? {
            return Ok(Some(frame));
        }
        self.decoder.finish(src)?;
        src.clear();
        Ok(None)
    }
}

/// Any bytes: `Bytes`, `BytesMut`, `Vec<u8>`, `&[u8]`, ...
impl<T: AsRef<[u8]>> Encoder<T> for UvarintCodec {
    type Error = CodecError;

    fn encode(&mut self, body: T, dst: &mut BytesMut) -> Result<(), CodecError> {
        let body = body.as_ref();
        self.decoder.check_len(body.len() as u64)?;
        if !body.is_empty() {
            dst.reserve(varint_len(body.len() as u64) + body.len());
            put_prefix(dst, body.len());
            dst.put_slice(body);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{MAX_VARINT_LEN, encode_varint};
    use bytes::Bytes;

    fn decode_all(codec: &mut UvarintCodec, wire: &[u8]) -> (Vec<Vec<u8>>, Result<(), CodecError>) {
        let mut buf = BytesMut::from(wire);
        let mut out = Vec::new();
        loop {
            match codec.decode_eof(&mut buf) {
                Ok(Some(m)) => out.push(m.to_vec()),
                Ok(None) => return (out, Ok(())),
                Err(e) => return (out, Err(e)),
            }
        }
    }

    fn frame_error(r: Result<(), CodecError>) -> FrameError {
        match r {
            Err(CodecError::Frame(e)) => e,
            other => panic!("expected a frame error, got {other:?}"),
        }
    }

    #[test]
    fn non_minimal_prefix_is_accepted_as_go_does() {
        let (msgs, end) = decode_all(&mut UvarintCodec::new(), &[0x83, 0x00, b'a', b'b', b'c']);
        assert_eq!(msgs, [b"abc".to_vec()]);
        assert!(end.is_ok());
    }

    #[test]
    fn empty_frames_are_skipped_by_default_and_surfaced_on_request() {
        let wire = [0, 1, b'x', 0x80, 0x00, 0];
        let (msgs, _) = decode_all(&mut UvarintCodec::new(), &wire);
        assert_eq!(msgs, [b"x".to_vec()]);
        let (msgs, _) = decode_all(&mut UvarintCodec::new().skip_empty(false), &wire);
        assert_eq!(msgs, [vec![], b"x".to_vec(), vec![], vec![]]);
    }

    #[test]
    fn prefix_overflow_is_an_error() {
        let (_, end) = decode_all(&mut UvarintCodec::new(), &[0xff; 10]);
        assert_eq!(frame_error(end), FrameError::PrefixOverflow);
        let mut tenth_two = [0xff; 10];
        tenth_two[9] = 0x02;
        let (_, end) = decode_all(&mut UvarintCodec::new(), &tenth_two);
        assert_eq!(frame_error(end), FrameError::PrefixOverflow);
    }

    #[test]
    fn oversized_prefix_is_rejected_without_reserving_the_body() {
        let mut codec = UvarintCodec::new().max_message_size(1000);
        let mut buf = BytesMut::new();
        buf.put_slice(&[0xe9, 0x07]); // 1001
        let before = buf.capacity();
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::Frame(FrameError::TooLarge {
                len: 1001,
                max: 1000
            }))
        ));
        assert_eq!(buf.capacity(), before);
    }

    #[test]
    fn partial_large_frame_reserves_only_a_bounded_step() {
        let mut codec = UvarintCodec::new();
        let mut buf = BytesMut::new();
        let mut prefix = [0u8; MAX_VARINT_LEN];
        let n = encode_varint(10 << 20, &mut prefix);
        buf.put_slice(&prefix[..n]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() <= n + crate::frame::GROWTH_STEP * 2);
    }

    #[test]
    fn eof_inside_prefix_or_body_is_truncation_and_between_frames_is_clean() {
        let (_, end) = decode_all(&mut UvarintCodec::new(), &[1, b'a', 0x80]);
        assert_eq!(frame_error(end), FrameError::TruncatedPrefix { got: 1 });
        let (msgs, end) = decode_all(&mut UvarintCodec::new(), &[5, b'a']);
        assert!(msgs.is_empty());
        assert_eq!(
            frame_error(end),
            FrameError::TruncatedBody {
                expected: 5,
                got: 1
            }
        );
        let (msgs, end) = decode_all(&mut UvarintCodec::new(), &[1, b'a']);
        assert_eq!(msgs, [b"a".to_vec()]);
        assert!(end.is_ok());
    }

    #[test]
    fn encoder_writes_minimal_prefixes_and_nothing_for_empty_messages() {
        let mut codec = UvarintCodec::new();
        let mut dst = BytesMut::new();
        codec.encode(Bytes::new(), &mut dst).unwrap();
        assert!(dst.is_empty());
        codec.encode(vec![7u8; 300], &mut dst).unwrap();
        assert_eq!(&dst[..2], &[0xac, 0x02]);
        assert_eq!(dst.len(), 302);
    }

    #[test]
    fn encoder_refuses_a_message_above_the_maximum() {
        let mut codec = UvarintCodec::new().max_message_size(3);
        let mut dst = BytesMut::new();
        let err = codec.encode(&b"abcd"[..], &mut dst).unwrap_err();
        assert!(matches!(
            err,
            CodecError::Frame(FrameError::TooLarge { len: 4, max: 3 })
        ));
        assert!(dst.is_empty());
        assert_eq!(
            io::Error::from(err).kind(),
            io::ErrorKind::InvalidData,
            "maps to InvalidData for io-based callers"
        );
    }

    #[test]
    fn default_maximum_matches_the_readers() {
        #[cfg(feature = "runtime")]
        assert_eq!(
            DEFAULT_CODEC_MAX_MESSAGE_SIZE,
            crate::DEFAULT_MAX_MESSAGE_SIZE
        );
        assert_eq!(UvarintCodec::default().max_len(), 10 << 20);
    }
}
