//! The measurements deliver everything they time (no speed assertions).
//! The runner's command line (`udsipc bench`) is tested in
//! `udsipc-cli/tests/bench.rs`.

use udsipc_benches::baseline::{tokio_util_framed, udsipc_codec_framed};
use udsipc_benches::inproc::rust_in_process;
use udsipc_benches::limits::{Waiting, raw_limit};
use udsipc_benches::{median, size_label};

#[test]
fn in_process_transfer_delivers_every_message_and_byte() {
    let dir = tempfile::tempdir().unwrap();
    for size in [1usize, 64, 5000, 300_000] {
        let m = rust_in_process(&dir.path().join(format!("{size}.sock")), size, 200).unwrap();
        assert_eq!(m.messages, 200);
        assert_eq!(m.bytes, 200 * size as u64);
        assert!(m.mb_per_sec() > 0.0);
    }
}

#[test]
fn tokio_util_baseline_delivers_every_frame() {
    for size in [1usize, 1000, 300_000] {
        let m = tokio_util_framed(size, 100).unwrap();
        assert_eq!(m.bytes, 100 * size as u64);
    }
}

#[test]
fn udsipc_codec_column_delivers_every_frame() {
    for size in [1usize, 1000, 300_000] {
        let m = udsipc_codec_framed(size, 100).unwrap();
        assert_eq!(m.messages, 100);
        assert_eq!(m.bytes, 100 * size as u64);
    }
}

#[test]
fn raw_limit_moves_every_byte_both_ways() {
    for how in [Waiting::Blocking, Waiting::Epoll] {
        let m = raw_limit(3 << 20, how).unwrap();
        assert_eq!(m.bytes, 3 << 20);
    }
}

#[test]
fn median_of_odd_and_even_counts() {
    assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
    assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
}

#[test]
fn sizes_are_labelled_in_binary_units() {
    assert_eq!(size_label(64), "64 B");
    assert_eq!(size_label(10 * 1024), "10 KiB");
    assert_eq!(size_label(1 << 20), "1 MiB");
    assert_eq!(size_label(1500), "1500 B");
}
