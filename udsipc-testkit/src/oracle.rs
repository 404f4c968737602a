//! A naive frame decoder to test fast ones against (STYLE: property tests
//! against an oracle), and a driver that feeds udsipc's
//! [`FrameDecoder`] a stream in chunks the way the Reader does.
//!
//! The oracle reads one byte at a time, as Go's `binary.ReadUvarint` then
//! `io.ReadFull` do, and is written for clarity, not speed. This file
//! depends on `udsipc` only: the cargo-fuzz target in `fuzz/` compiles it
//! too.
//!
//! ```
//! use udsipc_testkit::oracle::{chunked, oracle, Outcome};
//! let stream = [2, b'h', b'i', 0, 0x80]; // "hi", an empty message, half a prefix
//! let (msgs, end) = oracle(&stream, 100);
//! assert_eq!(msgs, [b"hi".to_vec(), vec![]]);
//! assert!(matches!(end, Outcome::Error(_)));
//! // Any chunking of the stream decodes the same.
//! let fed = chunked(&stream, &[1, 3], 100);
//! assert_eq!((fed.msgs, fed.outcome), (msgs, end));
//! ```

use udsipc::frame::{FrameDecoder, FrameError, GROWTH_STEP, Next};

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

/// What the fast decoder made of a chunked stream.
#[derive(Debug)]
pub struct Fed {
    /// Every message, empty ones included.
    pub msgs: Vec<Vec<u8>>,
    /// How the stream ended.
    pub outcome: Outcome,
    /// The most bytes ever buffered at once.
    pub peak_buffered: usize,
    /// The first growth hint above the bound (buffered, frame_len, hint):
    /// more than the whole frame, or more than
    /// `max(2 * buffered, buffered + GROWTH_STEP)`.
    pub oversized_hint: Option<(usize, usize, usize)>,
}

/// The fast path, fed in chunks the way the Reader feeds it: append, parse
/// every complete frame, keep the rest, and ask how far to grow. `cuts` are
/// chunk boundaries (taken modulo the stream length + 1, in any order).
pub fn chunked(stream: &[u8], cuts: &[usize], max: u64) -> Fed {
    let d = FrameDecoder::new(max);
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = Fed {
        msgs: Vec::new(),
        outcome: Outcome::Clean,
        peak_buffered: 0,
        oversized_hint: None,
    };
    let mut at = 0;
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    bounds.push(stream.len());
    bounds.sort_unstable();
    for end in bounds {
        if end < at {
            continue;
        }
        buf.extend_from_slice(&stream[at..end]);
        at = end;
        fed.peak_buffered = fed.peak_buffered.max(buf.len());
        loop {
            match d.decode(&buf) {
                Ok(Next::Frame { body, consumed }) => {
                    fed.msgs.push(buf[body].to_vec());
                    buf.drain(..consumed);
                }
                Ok(Next::NeedMore { frame_len }) => {
                    if let Some(total) = frame_len {
                        let hint = d.grow_hint(buf.len(), total);
                        let bound = (2 * buf.len()).max(buf.len() + GROWTH_STEP);
                        if (hint > total || hint > bound) && fed.oversized_hint.is_none() {
                            fed.oversized_hint = Some((buf.len(), total, hint));
                        }
                    }
                    break;
                }
                Err(e) => {
                    fed.outcome = Outcome::Error(e);
                    return fed;
                }
            }
        }
    }
    if let Err(e) = d.finish(&buf) {
        fed.outcome = Outcome::Error(e);
    }
    fed
}
