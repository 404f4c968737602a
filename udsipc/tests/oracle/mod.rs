//! The naive frame oracle and the input strategies shared by the frame
//! property tests (`frame_props.rs`, run in CI) and the long adversarial
//! stress (`frame_stress.rs`, ignored): one oracle, two budgets. The oracle
//! itself lives in `naive.rs`, which the cargo-fuzz target shares too.
#![allow(dead_code, unreachable_pub)]

mod naive;

pub use naive::*;
use proptest::prelude::*;
use udsipc::frame::encode_frame;

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
