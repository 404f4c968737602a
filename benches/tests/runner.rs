//! The measurements deliver everything they time (no speed assertions).

use udsipc_benches::{median, raw_socket_limit, rust_in_process};

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
fn raw_limit_moves_every_byte() {
    let m = raw_socket_limit(3 << 20).unwrap();
    assert_eq!(m.bytes, 3 << 20);
}

#[test]
fn median_of_odd_and_even_counts() {
    assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
    assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
}

#[test]
fn smoke_run_of_the_binary_prints_a_table() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_udsipc-benches"))
        .arg("--smoke")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert_eq!(table.lines().count(), 2 + 5, "{table}");
    assert!(table.contains("| 1 KiB |"), "{table}");
}
