//! A naive frame decoder to test fast ones against (STYLE: property tests
//! against an oracle), and a driver that feeds udsipc's production
//! receive path ([`Receiver`]) a stream in chunks the way the Reader does.
//!
//! The oracle reads one byte at a time, as Go's `binary.ReadUvarint` then
//! `io.ReadFull` do, and is written for clarity, not speed. This file
//! depends on `udsipc` only: the cargo-fuzz target in `fuzz/` compiles it
//! too.
//!
//! ```
//! use udsipc_testkit::oracle::{chunked, non_empty, oracle, Outcome};
//! let stream = [2, b'h', b'i', 0, 0x80]; // "hi", an empty message, half a prefix
//! let (msgs, end) = oracle(&stream, 100);
//! assert_eq!(msgs, [b"hi".to_vec(), vec![]]);
//! assert!(matches!(end, Outcome::Error(_)));
//! // Any chunking of the stream decodes the same (the Reader skips the
//! // empty message).
//! let fed = chunked(&stream, &[1, 3], 100);
//! assert_eq!((fed.msgs, fed.outcome), (non_empty(msgs), end));
//! ```

use std::time::{Duration, Instant};

use udsipc::frame::{FrameError, GROWTH_STEP, Receiver, STREAM_BUFFER};

/// How a stream ends, as the Go Reader classifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The stream ended between two frames.
    Clean,
    /// The stream broke the protocol, or ended inside a frame.
    Error(FrameError),
}

/// The oracle: reads one byte at a time, like Go's `binary.ReadUvarint`
/// followed by `io.ReadFull`, and records every message (empty ones too).
pub fn oracle(stream: &[u8], max: u64) -> (Vec<Vec<u8>>, Outcome) {
    let mut msgs = Vec::new();
    let mut i = 0;
    loop {
        // Prefix.
        let mut value: u64 = 0;
        let mut shift = 0;
        let mut nbytes = 0;
        loop {
            if i == stream.len() {
                if nbytes == 0 {
                    return (msgs, Outcome::Clean);
                }
                return (
                    msgs,
                    Outcome::Error(FrameError::TruncatedPrefix { got: nbytes }),
                );
            }
            let b = stream[i];
            i += 1;
            nbytes += 1;
            if b < 0x80 {
                if nbytes == 10 && b > 1 {
                    return (msgs, Outcome::Error(FrameError::PrefixOverflow));
                }
                value |= u64::from(b) << shift;
                break;
            }
            if nbytes == 10 {
                return (msgs, Outcome::Error(FrameError::PrefixOverflow));
            }
            value |= u64::from(b & 0x7f) << shift;
            shift += 7;
        }
        if value > max {
            return (
                msgs,
                Outcome::Error(FrameError::TooLarge { len: value, max }),
            );
        }
        // Body.
        let mut body = Vec::new();
        while (body.len() as u64) < value {
            if i == stream.len() {
                return (
                    msgs,
                    Outcome::Error(FrameError::TruncatedBody {
                        expected: value,
                        got: body.len() as u64,
                    }),
                );
            }
            body.push(stream[i]);
            i += 1;
        }
        msgs.push(body);
    }
}

/// What the production receiver made of a chunked stream.
#[derive(Debug)]
pub struct Fed {
    /// Every non-empty message (the Reader skips zero-length frames; see
    /// [`non_empty`]).
    pub msgs: Vec<Vec<u8>>,
    /// How the stream ended.
    pub outcome: Outcome,
    /// The most bytes ever buffered at once.
    pub peak_buffered: usize,
    /// The first time the receiver held more memory than the bound, as
    /// (bytes buffered, bytes held, bound): the bound is the largest of the
    /// stream buffer, twice what is buffered, and what is buffered plus one
    /// growth step.
    pub oversized_hint: Option<(usize, usize, usize)>,
}

/// The oracle's messages without the empty ones: what a Reader hands over.
pub fn non_empty(msgs: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    msgs.into_iter().filter(|m| !m.is_empty()).collect()
}

/// The production receive path ([`udsipc::frame::Receiver`]), fed in chunks
/// the way a socket feeds the Reader: each read gets at most the room the
/// receiver offers, every complete frame is taken before the next read
/// (alternately borrowed and owned, so both paths are driven), and the end
/// of the stream is classified. `cuts` are chunk boundaries (taken modulo the
/// stream length + 1, in any order).
pub fn chunked(stream: &[u8], cuts: &[usize], max: u64) -> Fed {
    let now = Instant::now();
    let mut rx = Receiver::new(max, Duration::from_secs(3600), now);
    let mut fed = Fed {
        msgs: Vec::new(),
        outcome: Outcome::Clean,
        peak_buffered: 0,
        oversized_hint: None,
    };
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    bounds.push(stream.len());
    bounds.sort_unstable();
    let mut at = 0;
    let mut owned = false;
    for end in bounds {
        while at < end {
            let n = rx
                .fill(|buf| {
                    let n = (end - at).min(buf.capacity() - buf.len());
                    buf.extend_from_slice(&stream[at..at + n]);
                    Ok::<_, ()>(n)
                })
                .unwrap_or(0);
            at += n;
            fed.peak_buffered = fed.peak_buffered.max(rx.buffered());
            let buffered = rx.buffered();
            let bound = STREAM_BUFFER.max(2 * buffered).max(buffered + GROWTH_STEP);
            if rx.capacity() > bound && fed.oversized_hint.is_none() {
                fed.oversized_hint = Some((buffered, rx.capacity(), bound));
            }
            loop {
                owned = !owned;
                let next = if owned {
                    rx.next_owned().map(|m| m.map(|b| b.to_vec()))
                } else {
                    rx.next_borrowed().map(|m| m.map(<[u8]>::to_vec))
                };
                match next {
                    Ok(Some(m)) => fed.msgs.push(m),
                    Ok(None) => break,
                    Err(e) => {
                        fed.outcome = Outcome::Error(e);
                        return fed;
                    }
                }
            }
            rx.on_idle(now);
        }
    }
    if let Err(e) = rx.finish() {
        fed.outcome = Outcome::Error(e);
    }
    fed
}
