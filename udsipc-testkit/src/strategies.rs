//! proptest strategies for the udsipc framing: lengths at every varint
//! boundary and at a maximum size, frame sequences, chunkings of a byte
//! stream, malformed prefixes, and adversarial streams mixing them.
//!
//! ```
//! use proptest::prelude::*;
//! use udsipc_testkit::oracle::{chunked, non_empty, oracle};
//! use udsipc_testkit::strategies::{chunk_cuts, frame_stream};
//!
//! proptest!(|((bodies, wire) in frame_stream(300, 20), cuts in chunk_cuts(8))| {
//!     let fed = chunked(&wire, &cuts, u64::MAX);
//!     prop_assert_eq!(&fed.msgs, &non_empty(bodies.clone()));
//!     prop_assert_eq!(oracle(&wire, u64::MAX).0, bodies);
//! });
//! ```

use proptest::prelude::*;
use udsipc::frame::{MAX_VARINT_LEN, encode_frame, encode_varint};

/// Lengths clustered at every varint boundary: `2^(7k) - 2 ..= 2^(7k) + 2`
/// for k in 0..=9 (0, 127/128, 16383/16384, ..., around 2^63), clamped to
/// `0..=u64::MAX`.
pub fn varint_boundary_len() -> impl Strategy<Value = u64> {
    (0u32..=9, -2i64..=2).prop_map(|(k, d)| {
        let base: u64 = if k == 0 { 0 } else { 1u64 << (7 * k).min(63) };
        if d < 0 {
            base.saturating_sub(d.unsigned_abs())
        } else {
            base.saturating_add(d as u64)
        }
    })
}

/// Lengths around a maximum message size: `max - 2 ..= max + 2`.
pub fn len_near(max: u64) -> impl Strategy<Value = u64> {
    (-2i64..=2).prop_map(move |d| {
        if d < 0 {
            max.saturating_sub(d.unsigned_abs())
        } else {
            max.saturating_add(d as u64)
        }
    })
}

/// A body length up to `max_len`: mostly small, often at a varint boundary
/// that fits, sometimes exactly `max_len`.
pub fn body_len(max_len: usize) -> impl Strategy<Value = usize> {
    let cap = max_len as u64;
    prop_oneof![
        4 => 0..=max_len.min(64),
        3 => varint_boundary_len().prop_map(move |l| l.min(cap) as usize),
        1 => Just(max_len),
    ]
}

/// Message bodies: up to `max_count` of them, each up to `max_len` bytes.
/// Short bodies are arbitrary bytes; long ones (over 64 bytes) are a
/// pattern from a random seed, which keeps large cases cheap to generate.
pub fn bodies(max_len: usize, max_count: usize) -> impl Strategy<Value = Vec<Vec<u8>>> {
    let body = body_len(max_len).prop_flat_map(|len| {
        if len <= 64 {
            prop::collection::vec(any::<u8>(), len).boxed()
        } else {
            any::<u8>()
                .prop_map(move |seed| {
                    (0..len)
                        .map(|i| seed.wrapping_add((i as u8).wrapping_mul(31)))
                        .collect()
                })
                .boxed()
        }
    });
    prop::collection::vec(body, 0..=max_count)
}

/// A valid frame sequence: the bodies and their encoding as one stream.
pub fn frame_stream(
    max_len: usize,
    max_count: usize,
) -> impl Strategy<Value = (Vec<Vec<u8>>, Vec<u8>)> {
    bodies(max_len, max_count).prop_map(|bodies| {
        let mut wire = Vec::new();
        for body in &bodies {
            encode_frame(body, &mut wire);
        }
        (bodies, wire)
    })
}

/// Up to `max_cuts` chunk boundaries for any stream (positions are taken
/// modulo the stream length + 1, as [`crate::oracle::chunked`] and
/// [`split_at_cuts`] do).
pub fn chunk_cuts(max_cuts: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(any::<usize>(), 0..=max_cuts)
}

/// Splits `stream` at `cuts` (modulo its length + 1): the chunks, in order,
/// some possibly empty, together equal to the stream.
///
/// ```
/// let chunks = udsipc_testkit::strategies::split_at_cuts(b"abcdef", &[4, 1]);
/// assert_eq!(chunks, [b"a".to_vec(), b"bcd".to_vec(), b"ef".to_vec()]);
/// ```
pub fn split_at_cuts(stream: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    bounds.sort_unstable();
    bounds.push(stream.len());
    let mut at = 0;
    let mut out = Vec::with_capacity(bounds.len());
    for end in bounds {
        out.push(stream[at..end].to_vec());
        at = end;
    }
    out
}

/// A stream and a chunking of it: the chunks concatenate to the stream.
pub fn chunked_stream(
    stream: impl Strategy<Value = Vec<u8>>,
    max_cuts: usize,
) -> impl Strategy<Value = Vec<Vec<u8>>> {
    (stream, chunk_cuts(max_cuts)).prop_map(|(s, cuts)| split_at_cuts(&s, &cuts))
}

/// A length prefix that is not a plain minimal varint.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MalformedPrefix {
    /// Ten bytes whose last is above 1: overflows 64 bits (Go: overflow).
    Overflow(Vec<u8>),
    /// Eleven bytes with the continuation bit set on the first ten.
    Eleven(Vec<u8>),
    /// A multi-byte prefix cut short (the stream ends inside it).
    Truncated(Vec<u8>),
    /// A valid but non-minimal encoding (`0x80 0x00` for 0): Go accepts it,
    /// so a decoder must too.
    NonMinimal(Vec<u8>),
}

impl MalformedPrefix {
    /// The prefix bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Self::Overflow(b) | Self::Eleven(b) | Self::Truncated(b) | Self::NonMinimal(b) => b,
        }
    }
}

/// Malformed (or unusual) length prefixes of every kind.
pub fn malformed_prefix() -> impl Strategy<Value = MalformedPrefix> {
    prop_oneof![
        (prop::collection::vec(0x80u8..=0xff, 9), 2u8..0x80).prop_map(|(mut b, last)| {
            b.push(last);
            MalformedPrefix::Overflow(b)
        }),
        (prop::collection::vec(0x80u8..=0xff, 10), any::<u8>()).prop_map(|(mut b, last)| {
            b.push(last);
            MalformedPrefix::Eleven(b)
        }),
        (128u64.., 1usize..MAX_VARINT_LEN).prop_map(|(len, keep)| {
            let mut buf = [0u8; MAX_VARINT_LEN];
            let n = encode_varint(len, &mut buf);
            MalformedPrefix::Truncated(buf[..keep.min(n - 1).max(1)].to_vec())
        }),
        (0u64..1 << 20, 1usize..=3).prop_map(|(len, pad)| {
            let mut buf = [0u8; MAX_VARINT_LEN];
            let n = encode_varint(len, &mut buf);
            let mut b = buf[..n].to_vec();
            // Set the continuation bit on the last byte and add zero groups.
            if let Some(last) = b.last_mut() {
                *last |= 0x80;
            }
            let total = (n + pad).min(MAX_VARINT_LEN);
            b.resize(total - 1, 0x80);
            b.push(0);
            MalformedPrefix::NonMinimal(b)
        }),
    ]
}

/// Valid frames, then a malformed prefix, random garbage, or a frame that
/// declares any length (up to `u64::MAX`) of which only part arrives: what
/// a hostile or slow peer sends.
pub fn adversarial_stream() -> impl Strategy<Value = Vec<u8>> {
    let valid = || frame_stream(300, 20).prop_map(|(_, wire)| wire);
    prop_oneof![
        valid(),
        (
            valid(),
            malformed_prefix(),
            prop::collection::vec(any::<u8>(), 0..8)
        )
            .prop_map(|(mut wire, prefix, tail)| {
                wire.extend_from_slice(prefix.bytes());
                wire.extend(tail);
                wire
            }),
        (valid(), prop::collection::vec(any::<u8>(), 0..24)).prop_map(|(mut wire, junk)| {
            wire.extend(junk);
            wire
        }),
        (
            valid(),
            prop_oneof![varint_boundary_len(), any::<u64>()],
            prop::collection::vec(any::<u8>(), 0..600),
        )
            .prop_map(|(mut wire, len, partial)| {
                let mut prefix = [0u8; MAX_VARINT_LEN];
                let n = encode_varint(len, &mut prefix);
                wire.extend_from_slice(&prefix[..n]);
                let take = partial
                    .len()
                    .min(usize::try_from(len).unwrap_or(usize::MAX));
                wire.extend_from_slice(&partial[..take]);
                wire
            }),
        prop::collection::vec(any::<u8>(), 0..64),
    ]
}
