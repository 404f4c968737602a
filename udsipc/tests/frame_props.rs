//! The frame decoder against a byte-at-a-time oracle written for clarity,
//! over arbitrary inputs and arbitrary chunkings.

use proptest::prelude::*;
use udsipc::frame::{
    FrameDecoder, FrameError, GROWTH_STEP, MAX_VARINT_LEN, Next, decode_varint, encode_frame,
    encode_varint,
};

/// How a stream ends, as the Go Reader classifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Clean,
    Error(FrameError),
}

/// The oracle: reads one byte at a time, like Go's `binary.ReadUvarint`
/// followed by `io.ReadFull`, and records every message (empty ones too).
fn oracle(stream: &[u8], max: u64) -> (Vec<Vec<u8>>, Outcome) {
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

/// The fast path, fed in chunks the way the Reader feeds it: append, parse
/// every complete frame, keep the rest.
fn chunked(stream: &[u8], cuts: &[usize], max: u64) -> (Vec<Vec<u8>>, Outcome, usize) {
    let d = FrameDecoder::new(max);
    let mut buf: Vec<u8> = Vec::new();
    let mut msgs = Vec::new();
    let mut peak = 0;
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
        peak = peak.max(buf.len());
        loop {
            match d.decode(&buf) {
                Ok(Next::Frame { body, consumed }) => {
                    msgs.push(buf[body].to_vec());
                    buf.drain(..consumed);
                }
                Ok(Next::NeedMore { .. }) => break,
                Err(e) => return (msgs, Outcome::Error(e), peak),
            }
        }
    }
    let outcome = match d.finish(&buf) {
        Ok(()) => Outcome::Clean,
        Err(e) => Outcome::Error(e),
    };
    (msgs, outcome, peak)
}

/// Lengths clustered at every varint boundary.
fn boundary_len() -> impl Strategy<Value = u64> {
    (0u32..10, -2i64..=2).prop_map(|(k, d)| {
        let base = if k == 0 { 0 } else { 1u64 << (7 * k).min(63) };
        (base as i64).saturating_add(d).max(0) as u64
    })
}

fn frame_stream() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..20).prop_map(|msgs| {
        let mut out = Vec::new();
        for m in &msgs {
            encode_frame(m, &mut out);
        }
        out
    })
}

/// Valid streams, with a malformed tail (or random garbage) appended.
fn any_stream() -> impl Strategy<Value = Vec<u8>> {
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn varint_round_trips_every_u64(v in any::<u64>()) {
        let mut buf = [0u8; MAX_VARINT_LEN];
        let n = encode_varint(v, &mut buf);
        prop_assert_eq!(decode_varint(&buf[..n]), Ok(Some((v, n))));
        // Any strict prefix of it needs more bytes.
        for cut in 0..n {
            prop_assert_eq!(decode_varint(&buf[..cut]), Ok(None));
        }
    }

    #[test]
    fn varint_round_trips_at_boundaries(v in boundary_len()) {
        let mut buf = [0u8; MAX_VARINT_LEN];
        let n = encode_varint(v, &mut buf);
        prop_assert_eq!(n, udsipc::frame::varint_len(v));
        prop_assert_eq!(decode_varint(&buf[..n]), Ok(Some((v, n))));
    }

    #[test]
    fn decoder_agrees_with_oracle_under_any_chunking(
        stream in any_stream(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
        max in prop_oneof![Just(u64::MAX), 0u64..400],
    ) {
        let (want_msgs, want_end) = oracle(&stream, max);
        let (msgs, end, _) = chunked(&stream, &cuts, max);
        prop_assert_eq!(msgs, want_msgs);
        prop_assert_eq!(end, want_end);
    }

    #[test]
    fn decoder_agrees_with_oracle_fed_byte_by_byte(stream in any_stream(), max in 0u64..400) {
        let cuts: Vec<usize> = (0..=stream.len()).collect();
        let (want_msgs, want_end) = oracle(&stream, max);
        let (msgs, end, _) = chunked(&stream, &cuts, max);
        prop_assert_eq!(msgs, want_msgs);
        prop_assert_eq!(end, want_end);
    }

    #[test]
    fn growth_never_exceeds_arrived_plus_a_step(buffered in 0usize..(1 << 24), frame in 0usize..(1 << 30)) {
        let d = FrameDecoder::new(u64::MAX);
        let hint = d.grow_hint(buffered, frame);
        prop_assert!(hint <= frame);
        prop_assert!(hint <= (2 * buffered).max(buffered + GROWTH_STEP));
    }

    #[test]
    fn oversized_declared_length_is_refused_from_the_prefix_alone(len in 1u64..u64::MAX, max in 0u64..1_000_000) {
        prop_assume!(len > max);
        let mut buf = [0u8; MAX_VARINT_LEN];
        let n = encode_varint(len, &mut buf);
        prop_assert_eq!(FrameDecoder::new(max).decode(&buf[..n]), Err(FrameError::TooLarge { len, max }));
    }
}

#[test]
fn non_minimal_prefixes_are_accepted() {
    let d = FrameDecoder::new(100);
    assert_eq!(
        d.decode(&[0x83, 0x00, 1, 2, 3]).unwrap(),
        Next::Frame {
            body: 2..5,
            consumed: 5
        }
    );
    assert_eq!(
        d.decode(&[0x80, 0x80, 0x00]).unwrap(),
        Next::Frame {
            body: 3..3,
            consumed: 3
        }
    );
}

#[test]
fn every_power_of_two_length_round_trips_through_the_decoder() {
    for k in 0..=21 {
        for len in [(1usize << k).saturating_sub(1), 1 << k, (1 << k) + 1] {
            let body = vec![0xa5u8; len];
            let mut wire = Vec::new();
            encode_frame(&body, &mut wire);
            let (msgs, end) = oracle(&wire, u64::MAX);
            assert_eq!(end, Outcome::Clean);
            assert_eq!(msgs, vec![body.clone()]);
            let (fast, end, _) = chunked(&wire, &[1, 2, 3, len / 2], u64::MAX);
            assert_eq!(end, Outcome::Clean);
            assert_eq!(fast, vec![body]);
        }
    }
}
