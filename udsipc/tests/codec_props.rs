//! `codec::UvarintCodec` against the byte-at-a-time oracle (the Go Reader's
//! classification), over adversarial streams in arbitrary chunkings, with
//! empty frames skipped and surfaced.
#![cfg(feature = "tokio-util")]

use bytes::BytesMut;
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};
use udsipc::codec::{CodecError, UvarintCodec};
use udsipc_testkit::oracle::{Outcome, non_empty, oracle};
use udsipc_testkit::strategies::{adversarial_stream, bodies, chunk_cuts, split_at_cuts};

/// Feeds `stream` to the codec in the chunks `cuts` makes, as `FramedRead`
/// does (decode after every read, `decode_eof` at the end).
fn run_codec(codec: &mut UvarintCodec, stream: &[u8], cuts: &[usize]) -> (Vec<Vec<u8>>, Outcome) {
    let mut buf = BytesMut::new();
    let mut msgs = Vec::new();
    for chunk in split_at_cuts(stream, cuts) {
        buf.extend_from_slice(&chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(m)) => msgs.push(m.to_vec()),
                Ok(None) => break,
                Err(CodecError::Frame(e)) => return (msgs, Outcome::Error(e)),
                Err(e) => panic!("io error from a byte slice: {e}"),
            }
        }
        // Bounded memory: whatever a prefix declares (up to u64::MAX), the
        // buffer stays within what arrived plus a growth step (doubled at
        // most by the allocator's rounding).
        let bound = 2 * (stream.len() + udsipc::frame::GROWTH_STEP) + 64;
        assert!(buf.capacity() <= bound, "{} > {bound}", buf.capacity());
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(m)) => msgs.push(m.to_vec()),
            Ok(None) => return (msgs, Outcome::Clean),
            Err(CodecError::Frame(e)) => return (msgs, Outcome::Error(e)),
            Err(e) => panic!("io error from a byte slice: {e}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn codec_skipping_empty_frames_agrees_with_the_oracle(
        stream in adversarial_stream(),
        cuts in chunk_cuts(12),
        max in prop_oneof![Just(300u64), Just(64u64), Just(u64::MAX)],
    ) {
        let (want, end) = oracle(&stream, max);
        let got = run_codec(&mut UvarintCodec::new().max_message_size(max), &stream, &cuts);
        prop_assert_eq!(got, (non_empty(want), end));
    }

    #[test]
    fn codec_surfacing_empty_frames_agrees_with_the_oracle(
        stream in adversarial_stream(),
        cuts in chunk_cuts(12),
    ) {
        let want = oracle(&stream, 300);
        let got = run_codec(&mut UvarintCodec::new().max_message_size(300).skip_empty(false), &stream, &cuts);
        prop_assert_eq!(got, want);
    }

    #[test]
    fn encoded_messages_decode_back_in_any_chunking(
        msgs in bodies(2000, 20),
        cuts in chunk_cuts(12),
    ) {
        let mut codec = UvarintCodec::new();
        let mut wire = BytesMut::new();
        for m in &msgs {
            codec.encode(&m[..], &mut wire).unwrap();
        }
        // The encoder's bytes are the frame module's (what the Writer sends).
        let mut expected = Vec::new();
        for m in msgs.iter().filter(|m| !m.is_empty()) {
            udsipc::frame::encode_frame(m, &mut expected);
        }
        prop_assert_eq!(&wire[..], &expected[..]);
        let got = run_codec(&mut codec, &wire, &cuts);
        prop_assert_eq!(got, (non_empty(msgs), Outcome::Clean));
    }
}
