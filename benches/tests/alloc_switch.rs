//! The `udsipc` binary's allocator counts nothing until a bench starts it,
//! so its other commands do not pay for counting.

use udsipc_benches::alloc::{CountingWhenStarted, allocations, start_counting};

#[global_allocator]
static ALLOC: CountingWhenStarted = CountingWhenStarted;

#[test]
fn nothing_is_counted_until_counting_starts() {
    let before: Vec<Vec<u8>> = (0..100).map(|i| vec![0; i + 1]).collect();
    assert_eq!(allocations(), 0);
    drop(before);
    start_counting();
    let after: Vec<Vec<u8>> = (0..100).map(|i| vec![0; i + 1]).collect();
    assert!(allocations() >= 100, "{}", allocations());
    drop(after);
}
