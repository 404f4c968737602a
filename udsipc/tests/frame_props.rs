//! The frame decoder against a byte-at-a-time oracle written for clarity,
//! over arbitrary inputs and arbitrary chunkings.

use proptest::prelude::*;
use udsipc::frame::{
    FrameDecoder, FrameError, GROWTH_STEP, MAX_VARINT_LEN, Next, decode_varint, encode_frame,
    encode_varint,
};
use udsipc_testkit::oracle::{Outcome, chunked, non_empty, oracle};
use udsipc_testkit::strategies::{
    MalformedPrefix, adversarial_stream, chunk_cuts, frame_stream, len_near, malformed_prefix,
    varint_boundary_len,
};

/// The production receiver, fed `stream` cut at `cuts`, gives the oracle's
/// (non-empty) messages and ending, and never holds more than the bound.
fn agrees_with_oracle(stream: &[u8], cuts: &[usize], max: u64) -> Result<(), TestCaseError> {
    let (want_msgs, want_end) = oracle(stream, max);
    let fed = chunked(stream, cuts, max);
    prop_assert_eq!(fed.msgs, non_empty(want_msgs));
    prop_assert_eq!(fed.outcome, want_end);
    prop_assert_eq!(fed.oversized_hint, None);
    Ok(())
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
    fn varint_round_trips_at_boundaries(v in varint_boundary_len()) {
        let mut buf = [0u8; MAX_VARINT_LEN];
        let n = encode_varint(v, &mut buf);
        prop_assert_eq!(n, udsipc::frame::varint_len(v));
        prop_assert_eq!(decode_varint(&buf[..n]), Ok(Some((v, n))));
    }

    #[test]
    fn decoder_agrees_with_oracle_under_any_chunking(
        stream in adversarial_stream(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
        max in prop_oneof![Just(u64::MAX), 0u64..400],
    ) {
        agrees_with_oracle(&stream, &cuts, max)?;
    }

    #[test]
    fn decoder_agrees_with_oracle_fed_byte_by_byte(stream in adversarial_stream(), max in 0u64..400) {
        let cuts: Vec<usize> = (0..=stream.len()).collect();
        agrees_with_oracle(&stream, &cuts, max)?;
    }

    #[test]
    fn any_chunking_of_a_frame_stream_decodes_to_the_messages_sent(
        (bodies, wire) in frame_stream(17_000, 8),
        cuts in chunk_cuts(16),
    ) {
        let fed = chunked(&wire, &cuts, u64::MAX);
        prop_assert_eq!(fed.outcome, Outcome::Clean);
        prop_assert_eq!(fed.msgs, non_empty(bodies));
    }

    #[test]
    fn malformed_prefixes_are_classified_like_the_oracle(
        (_, valid) in frame_stream(300, 5),
        prefix in malformed_prefix(),
        cuts in chunk_cuts(6),
    ) {
        let mut stream = valid;
        stream.extend_from_slice(prefix.bytes());
        agrees_with_oracle(&stream, &cuts, u64::MAX)?;
        if !matches!(prefix, MalformedPrefix::NonMinimal(_)) {
            let (_, end) = oracle(&stream, u64::MAX);
            prop_assert!(matches!(end, Outcome::Error(_)), "{:?} was accepted", prefix);
        }
    }

    #[test]
    fn lengths_around_the_maximum_are_accepted_up_to_it_exactly(
        (max, declared) in varint_boundary_len()
            .prop_filter("addressable", |m| *m < 1 << 40)
            .prop_flat_map(|m| (Just(m), len_near(m))),
    ) {
        let mut buf = [0u8; MAX_VARINT_LEN];
        let n = encode_varint(declared, &mut buf);
        let got = FrameDecoder::new(max).decode(&buf[..n]);
        if declared > max {
            prop_assert_eq!(got, Err(FrameError::TooLarge { len: declared, max }));
        } else {
            prop_assert!(got.is_ok());
        }
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
            let fed = chunked(&wire, &[1, 2, 3, len / 2], u64::MAX);
            assert_eq!(fed.outcome, Outcome::Clean);
            assert_eq!(fed.msgs, non_empty(vec![body]));
        }
    }
}
