//! The long adversarial run: millions of generated inputs through the frame
//! decoder, each compared with the byte-at-a-time oracle under an arbitrary
//! chunking. Ignored by default (minutes); run it with
//!
//! ```text
//! cargo test --release -p udsipc --test frame_stress -- --ignored --nocapture
//! ```
//!
//! `UDSIPC_STRESS_CASES` sets the number of inputs (default 10,000,000).
//! The CI-sized version of the same properties is `frame_props.rs`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use udsipc_testkit::oracle::{chunked, non_empty, oracle};
use udsipc_testkit::strategies::adversarial_stream;

#[test]
#[ignore = "minutes of CPU; run with --ignored (see the module docs)"]
fn ten_million_adversarial_inputs_match_the_oracle_with_bounded_growth() {
    let cases: u32 = std::env::var("UDSIPC_STRESS_CASES")
        .ok()
        .map(|v| v.parse().expect("UDSIPC_STRESS_CASES is a number"))
        .unwrap_or(10_000_000);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let ran = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let started = Instant::now();
    let strategy = (
        adversarial_stream(),
        prop::collection::vec(any::<usize>(), 0..12),
        prop_oneof![Just(u64::MAX), 0u64..400, Just(16u64 << 20)],
    );
    runner
        .run(&strategy, |(stream, cuts, max)| {
            ran.fetch_add(1, Relaxed);
            bytes.fetch_add(stream.len() as u64, Relaxed);
            let (want_msgs, want_end) = oracle(&stream, max);
            let fed = chunked(&stream, &cuts, max);
            prop_assert_eq!(fed.msgs, non_empty(want_msgs));
            prop_assert_eq!(fed.outcome, want_end);
            prop_assert_eq!(fed.oversized_hint, None);
            Ok(())
        })
        .unwrap();
    let elapsed = started.elapsed();
    let ran = ran.load(Relaxed);
    eprintln!(
        "frame_stress: {ran} inputs ({:.1} MiB) matched the oracle in {:.1} s ({:.0} inputs/s)",
        bytes.load(Relaxed) as f64 / (1 << 20) as f64,
        elapsed.as_secs_f64(),
        ran as f64 / elapsed.as_secs_f64()
    );
    assert!(ran >= u64::from(cases));
}
