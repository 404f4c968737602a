//! The production receive path (`udsipc::frame::Receiver`) against the
//! byte-at-a-time oracle, on libFuzzer's
//! inputs: the same comparison as `udsipc/tests/frame_stress.rs`, with
//! coverage guidance instead of generated shapes.
//!
//! Input layout: `[max selector] [cut count] [cut count x u16 LE cut] stream`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../udsipc-testkit/src/oracle.rs"]
mod naive;

fuzz_target!(|data: &[u8]| {
    let Some((&select, rest)) = data.split_first() else {
        return;
    };
    let max = match select % 4 {
        0 => u64::MAX,
        1 => 16 << 20,
        _ => u64::from(select),
    };
    let Some((&cuts, rest)) = rest.split_first() else {
        return;
    };
    let cuts = usize::from(cuts % 12);
    let Some((cut_bytes, stream)) = rest.split_at_checked(2 * cuts) else {
        return;
    };
    let cuts: Vec<usize> = cut_bytes
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])))
        .collect();
    let (msgs, outcome) = naive::oracle(stream, max);
    let fed = naive::chunked(stream, &cuts, max);
    assert_eq!(fed.msgs, naive::non_empty(msgs));
    assert_eq!(fed.outcome, outcome);
    assert_eq!(fed.oversized_hint, None, "growth hint above the bound");
});
