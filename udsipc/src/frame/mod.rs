//! The wire format, without any IO: varint encoding and an incremental frame
//! decoder.
//!
//! This module owns the bytes-on-the-wire rules and nothing else: it never
//! touches a socket, a runtime or a clock, so every rule here is tested with
//! plain byte slices. The [`Reader`](crate::Reader) and
//! [`Writer`](crate::Writer) only move bytes in and out of it.
//!
//! # Framing
//!
//! A message is its length as an unsigned LEB128 varint (Go's
//! `encoding/binary` `PutUvarint`), followed by that many bytes:
//!
//! ```text
//! +----------------------+---------------------+
//! | length (1..=10 B)    |  body (length B)    |
//! +----------------------+---------------------+
//!   7 bits per byte, least significant group first,
//!   high bit set = another byte follows
//! ```
//!
//! | INPUT (hex)                     | DECODED                                   |
//! |---------------------------------|-------------------------------------------|
//! | `03 61 62 63`                   | frame `"abc"`                             |
//! | `80 01` + 128 bytes             | frame of 128 bytes                        |
//! | `83 00 61 62 63`                | frame `"abc"` (non-minimal prefix, accepted as Go does) |
//! | `00`                            | empty frame (the Reader skips it)         |
//! | `80 80`                         | need more bytes                           |
//! | `ff ff ff ff ff ff ff ff ff 02` | [`FrameError::PrefixOverflow`]            |
//! | `ff` x 10                       | [`FrameError::PrefixOverflow`] (11th byte would follow) |
//! | `05 61` then EOF                | [`FrameError::TruncatedBody`]             |
//! | `80` then EOF                   | [`FrameError::TruncatedPrefix`]           |
//!
//! A length above the configured maximum is rejected as soon as its prefix is
//! complete, before a single byte of the body is buffered
//! ([`FrameError::TooLarge`]).
//!
//! ```
//! use udsipc::frame::{encode_frame, FrameDecoder, Next};
//!
//! let mut wire = Vec::new();
//! encode_frame(b"hello", &mut wire);
//! encode_frame(b"world", &mut wire);
//!
//! let decoder = FrameDecoder::new(1024);
//! let mut at = 0;
//! let mut got = Vec::new();
//! while let Next::Frame { body, consumed } = decoder.decode(&wire[at..])? {
//!     got.push(wire[at..][body].to_vec());
//!     at += consumed;
//! }
//! assert_eq!(got, [b"hello".to_vec(), b"world".to_vec()]);
//! decoder.finish(&wire[at..])?; // clean end: nothing left over
//! # Ok::<(), udsipc::frame::FrameError>(())
//! ```

use std::ops::Range;

pub(crate) mod pool;
mod receiver;

pub use receiver::{Expired, INITIAL_BUFFER, Receiver, SHRINK_AFTER, STREAM_BUFFER};

/// The longest valid varint prefix, in bytes (a `u64` needs at most 10).
pub const MAX_VARINT_LEN: usize = 10;

/// How far the decoder lets a buffer grow past what has already arrived,
/// when a frame is only partly there (see [`FrameDecoder::grow_hint`]).
pub const GROWTH_STEP: usize = 64 * 1024;

/// A protocol violation found in the bytes a peer sent.
///
/// Each variant is one of the ways the Go reference Reader closes a
/// connection with an error; all of them end the connection.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix is longer than 10 bytes, or its 10th byte is above 1:
    /// the value does not fit in 64 bits.
    #[error("length prefix overflows a 64-bit integer")]
    PrefixOverflow,
    /// The declared length is above the configured maximum message size.
    #[error("message length {len} exceeds the limit of {max} bytes")]
    TooLarge {
        /// The length the peer declared.
        len: u64,
        /// The configured maximum.
        max: u64,
    },
    /// The stream ended inside a length prefix.
    #[error("stream ended inside a length prefix after {got} byte(s)")]
    TruncatedPrefix {
        /// How many prefix bytes had arrived.
        got: usize,
    },
    /// The stream ended inside a message body.
    #[error("stream ended inside a message body: {got} of {expected} bytes arrived")]
    TruncatedBody {
        /// The declared body length.
        expected: u64,
        /// How many body bytes had arrived.
        got: u64,
    },
}

/// Writes `value` as a minimal varint into `out` and returns how many bytes
/// it used (1 to 10), exactly as Go's `binary.PutUvarint`.
///
/// ```
/// let mut buf = [0u8; udsipc::frame::MAX_VARINT_LEN];
/// let n = udsipc::frame::encode_varint(300, &mut buf);
/// assert_eq!(&buf[..n], &[0xac, 0x02]);
/// ```
#[inline]
pub fn encode_varint(mut value: u64, out: &mut [u8; MAX_VARINT_LEN]) -> usize {
    let mut i = 0;
    while value >= 0x80 {
        out[i] = (value as u8) | 0x80;
        value >>= 7;
        i += 1;
    }
    out[i] = value as u8;
    i + 1
}

/// How many bytes the minimal varint encoding of `value` takes (1 to 10).
///
/// ```
/// assert_eq!(udsipc::frame::varint_len(127), 1);
/// assert_eq!(udsipc::frame::varint_len(128), 2);
/// assert_eq!(udsipc::frame::varint_len(u64::MAX), 10);
/// ```
#[inline]
pub const fn varint_len(value: u64) -> usize {
    // Bits needed (at least 1), rounded up to groups of 7.
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Appends one frame (prefix and body) for `body` to `out`.
///
/// ```
/// let mut wire = Vec::new();
/// udsipc::frame::encode_frame(b"abc", &mut wire);
/// assert_eq!(wire, [3, b'a', b'b', b'c']);
/// ```
pub fn encode_frame(body: &[u8], out: &mut Vec<u8>) {
    out.reserve(varint_len(body.len() as u64) + body.len());
    put_prefix(out, body.len());
    out.extend_from_slice(body);
}

/// Appends the varint length prefix of a `len`-byte body: the one prefix
/// writer of the crate (the Writer's queue, its batches and
/// [`encode_frame`] use it). One byte, without a copy call, below 128.
#[inline]
pub(crate) fn put_prefix(out: &mut impl bytes::BufMut, len: usize) {
    if len < 0x80 {
        out.put_u8(len as u8);
    } else {
        let mut prefix = [0u8; MAX_VARINT_LEN];
        let n = encode_varint(len as u64, &mut prefix);
        out.put_slice(&prefix[..n]);
    }
}

/// Decodes a varint at the start of `buf`, as Go's `binary.ReadUvarint`
/// would read it from a stream.
///
/// Returns `Ok(Some((value, prefix_len)))` when complete, `Ok(None)` when
/// `buf` ends before the varint does, and [`FrameError::PrefixOverflow`] as
/// soon as the bytes seen cannot be a valid 64-bit varint (non-minimal
/// encodings such as `80 00` are accepted).
///
/// ```
/// use udsipc::frame::{decode_varint, FrameError};
/// assert_eq!(decode_varint(&[0xac, 0x02]), Ok(Some((300, 2))));
/// assert_eq!(decode_varint(&[0x80, 0x00]), Ok(Some((0, 2))));
/// assert_eq!(decode_varint(&[0x80]), Ok(None));
/// assert_eq!(decode_varint(&[0xff; 10]), Err(FrameError::PrefixOverflow));
/// ```
#[inline]
pub fn decode_varint(buf: &[u8]) -> Result<Option<(u64, usize)>, FrameError> {
    let mut value: u64 = 0;
    for (i, &byte) in buf.iter().take(MAX_VARINT_LEN).enumerate() {
        if byte < 0x80 {
            if i == MAX_VARINT_LEN - 1 && byte > 1 {
                return Err(FrameError::PrefixOverflow);
            }
            return Ok(Some((value | (u64::from(byte) << (7 * i)), i + 1)));
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
    }
    if buf.len() >= MAX_VARINT_LEN {
        // Ten continuation bytes: an eleventh byte would be needed.
        return Err(FrameError::PrefixOverflow);
    }
    Ok(None)
}

/// What [`FrameDecoder::decode`] found at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// A whole frame. Its body is `buf[body]` (empty for a zero-length frame,
    /// which the Reader skips); drop `consumed` bytes to reach the next frame.
    Frame {
        /// Where the body lies in the buffer passed to `decode`.
        body: Range<usize>,
        /// Prefix plus body length.
        consumed: usize,
    },
    /// The buffer ends inside a frame; read more and call again.
    NeedMore {
        /// The whole frame's size (prefix plus body) once the prefix is known,
        /// `None` while the prefix itself is incomplete.
        frame_len: Option<usize>,
    },
}

/// An incremental, allocation-free frame decoder.
///
/// It keeps no state between calls: each call looks at the start of the bytes
/// buffered so far, so the caller decides how to buffer (the Reader parses
/// every complete frame of a read before reading again, without copying
/// them). The maximum message size is enforced from the prefix alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameDecoder {
    max_message_size: u64,
}

impl FrameDecoder {
    /// A decoder that rejects frames longer than `max_message_size` bytes.
    pub const fn new(max_message_size: u64) -> Self {
        Self { max_message_size }
    }

    /// The largest accepted body length.
    pub const fn max_message_size(&self) -> u64 {
        self.max_message_size
    }

    /// Looks for one frame at the start of `buf`.
    ///
    /// ```
    /// use udsipc::frame::{FrameDecoder, FrameError, Next};
    /// let d = FrameDecoder::new(4);
    /// assert_eq!(d.decode(&[2, 7, 7, 9])?, Next::Frame { body: 1..3, consumed: 3 });
    /// assert_eq!(d.decode(&[2, 7])?, Next::NeedMore { frame_len: Some(3) });
    /// assert_eq!(d.decode(&[5]), Err(FrameError::TooLarge { len: 5, max: 4 }));
    /// # Ok::<(), FrameError>(())
    /// ```
    #[inline]
    pub fn decode(&self, buf: &[u8]) -> Result<Next, FrameError> {
        let Some((len, prefix_len)) = decode_varint(buf)? else {
            return Ok(Next::NeedMore { frame_len: None });
        };
        self.check_len(len)?;
        // `len <= max_message_size`, which the caller keeps addressable; on a
        // 32-bit target a larger limit saturates and never matches a buffer.
        let total = usize::try_from(len)
            .ok()
            .and_then(|len| len.checked_add(prefix_len))
            .unwrap_or(usize::MAX);
        if buf.len() < total {
            return Ok(Next::NeedMore {
                frame_len: Some(total),
            });
        }
        Ok(Next::Frame {
            body: prefix_len..total,
            consumed: total,
        })
    }

    /// Classifies what is left in the buffer when the peer closes the stream.
    ///
    /// An empty remainder is a clean close; anything else is a truncated frame.
    ///
    /// ```
    /// use udsipc::frame::{FrameDecoder, FrameError};
    /// let d = FrameDecoder::new(100);
    /// assert_eq!(d.finish(&[]), Ok(()));
    /// assert_eq!(d.finish(&[0x80]), Err(FrameError::TruncatedPrefix { got: 1 }));
    /// assert_eq!(d.finish(&[3, 1]), Err(FrameError::TruncatedBody { expected: 3, got: 1 }));
    /// ```
    pub fn finish(&self, rest: &[u8]) -> Result<(), FrameError> {
        match decode_varint(rest)? {
            None if rest.is_empty() => Ok(()),
            None => Err(FrameError::TruncatedPrefix { got: rest.len() }),
            Some((len, prefix_len)) => {
                self.check_len(len)?;
                let got = (rest.len() - prefix_len) as u64;
                if got >= len {
                    // A whole frame was left undecoded: a caller bug, but the
                    // stream itself ended cleanly after it.
                    return Ok(());
                }
                Err(FrameError::TruncatedBody { expected: len, got })
            }
        }
    }

    /// [`FrameError::TooLarge`] if a body of `len` bytes is above the
    /// maximum: the one check of the limit, for decoding, for the end of a
    /// stream and for the codec's encoder.
    #[inline]
    pub(crate) fn check_len(&self, len: u64) -> Result<(), FrameError> {
        if len > self.max_message_size {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_message_size,
            });
        }
        Ok(())
    }

    /// How large a buffer holding `buffered` bytes of an incomplete frame of
    /// `frame_len` bytes should become before the next read.
    ///
    /// Never more than the whole frame, and never more than
    /// `max(2 * buffered, buffered + GROWTH_STEP)`: a peer that declares a
    /// large length but sends little makes the reader hold little.
    ///
    /// ```
    /// use udsipc::frame::{FrameDecoder, GROWTH_STEP};
    /// let d = FrameDecoder::new(10 << 20);
    /// // A 10 MiB frame of which 3 bytes arrived: grow by one step only.
    /// assert_eq!(d.grow_hint(3, 10 << 20), 3 + GROWTH_STEP);
    /// // A small frame: exactly its size.
    /// assert_eq!(d.grow_hint(3, 100), 100);
    /// ```
    pub fn grow_hint(&self, buffered: usize, frame_len: usize) -> usize {
        let bounded = buffered.saturating_mul(2).max(buffered + GROWTH_STEP);
        frame_len.min(bounded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_len_matches_encoder_at_every_boundary() {
        for shift in 0..64 {
            for v in [1u64 << shift, (1u64 << shift) - 1, (1u64 << shift) + 1] {
                let mut buf = [0; MAX_VARINT_LEN];
                assert_eq!(varint_len(v), encode_varint(v, &mut buf), "value {v}");
            }
        }
        assert_eq!(varint_len(0), 1);
    }

    #[test]
    fn tenth_byte_of_one_is_accepted() {
        let mut buf = [0; MAX_VARINT_LEN];
        let n = encode_varint(u64::MAX, &mut buf);
        assert_eq!(n, 10);
        assert_eq!(buf[9], 1);
        assert_eq!(decode_varint(&buf), Ok(Some((u64::MAX, 10))));
    }

    #[test]
    fn oversized_prefix_is_rejected_before_body_arrives() {
        let d = FrameDecoder::new(10);
        assert_eq!(
            d.decode(&[11]),
            Err(FrameError::TooLarge { len: 11, max: 10 })
        );
    }
}
