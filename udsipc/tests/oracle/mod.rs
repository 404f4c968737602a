//! The naive frame oracle and the input strategies shared by the frame
//! property tests (`frame_props.rs`, run in CI) and the long adversarial
//! stress (`frame_stress.rs`, ignored): one oracle, two budgets.
#![allow(dead_code, unreachable_pub)]

use proptest::prelude::*;
use udsipc::frame::{FrameDecoder, FrameError, GROWTH_STEP, Next, encode_frame};

/// How a stream ends, as the Go Reader classifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Clean,
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
    pub msgs: Vec<Vec<u8>>,
    pub outcome: Outcome,
    /// The most bytes ever buffered at once.
    pub peak_buffered: usize,
    /// The first growth hint above the bound (buffered, frame_len, hint):
    /// more than the whole frame, or more than
    /// `max(2 * buffered, buffered + GROWTH_STEP)`.
    pub oversized_hint: Option<(usize, usize, usize)>,
}

/// The fast path, fed in chunks the way the Reader feeds it: append, parse
/// every complete frame, keep the rest, and ask how far to grow.
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

/// Lengths clustered at every varint boundary.
pub fn boundary_len() -> impl Strategy<Value = u64> {
    (0u32..10, -2i64..=2).prop_map(|(k, d)| {
        let base = if k == 0 { 0 } else { 1u64 << (7 * k).min(63) };
        (base as i64).saturating_add(d).max(0) as u64
    })
}

/// Valid streams of up to 20 messages of up to 300 bytes.
pub fn frame_stream() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..20).prop_map(|msgs| {
        let mut out = Vec::new();
        for m in &msgs {
            encode_frame(m, &mut out);
        }
        out
    })
}

/// Valid streams, with a malformed tail (or random garbage) appended.
pub fn any_stream() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        frame_stream(),
        (frame_stream(), prop::collection::vec(any::<u8>(), 0..24)).prop_map(|(mut a, b)| {
            a.extend(b);
            a
        }),
        (
            frame_stream(),
            prop::sample::select(vec![
                vec![0xffu8; 11],
                vec![0xff; 10],
                vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
                vec![0x80],
                vec![0x80, 0x00, b'x'],
                vec![0x83, 0x00, 1, 2, 3],
                vec![0x05, 1, 2],
            ])
        )
            .prop_map(|(mut a, b)| {
                a.extend(b);
                a
            }),
        prop::collection::vec(any::<u8>(), 0..64),
    ]
}

/// Valid frames, then a frame declaring any length (clustered at varint
/// boundaries, up to `u64::MAX`) of which only part of the body arrives:
/// what a hostile or slow peer sends.
pub fn declared_then_partial() -> impl Strategy<Value = Vec<u8>> {
    (
        frame_stream(),
        prop_oneof![boundary_len(), any::<u64>()],
        prop::collection::vec(any::<u8>(), 0..600),
    )
        .prop_map(|(mut out, len, partial)| {
            let mut prefix = [0u8; udsipc::frame::MAX_VARINT_LEN];
            let n = udsipc::frame::encode_varint(len, &mut prefix);
            out.extend_from_slice(&prefix[..n]);
            let take = partial
                .len()
                .min(usize::try_from(len).unwrap_or(usize::MAX));
            out.extend_from_slice(&partial[..take]);
            out
        })
}

/// Every input shape the tests feed the decoder.
pub fn adversarial_stream() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![any_stream(), declared_then_partial()]
}
