//! One test per case×arm of the conformance catalog (`src/cases.rs`), so a
//! failure is named after the case and the direction, e.g.
//! `framing_varint_boundaries::go_to_rust`. Each test records its result in
//! `target/conformance/results/`; `conformance-report` assembles them.
//! Without Go installed these tests fail and say how to install it.

use udsipc_conformance::cases::{CATALOG, run};

macro_rules! pair {
    ($($m:ident => $id:literal,)*) => {
        $(mod $m {
            use super::run;
            #[test] fn go_to_rust() { run($id, "Go->Rust") }
            #[test] fn rust_to_go() { run($id, "Rust->Go") }
            #[test] fn rust_to_rust() { run($id, "Rust->Rust") }
            #[test] fn go_to_go() { run($id, "Go->Go") }
            #[test] fn py_to_go() { run($id, "Py->Go") }
            #[test] fn py_to_rust() { run($id, "Py->Rust") }
            #[test] fn go_to_py() { run($id, "Go->Py") }
            #[test] fn rust_to_py() { run($id, "Rust->Py") }
            #[test] fn py_to_py() { run($id, "Py->Py") }
        })*
        const PAIR_IDS: &[&str] = &[$($id),*];
    };
}

macro_rules! raw {
    ($($m:ident => $id:literal,)*) => {
        $(mod $m {
            use super::run;
            #[test] fn raw_to_go() { run($id, "raw->Go") }
            #[test] fn raw_to_rust() { run($id, "raw->Rust") }
            #[test] fn raw_to_py() { run($id, "raw->Py") }
        })*
        const RAW_IDS: &[&str] = &[$($id),*];
    };
}

pair! {
    framing_varint_boundaries => "framing/varint-boundaries",
    framing_zero_length_writes => "framing/zero-length-writes",
    limits_exact_max => "limits/exact-max",
    limits_max_plus_one => "limits/max-plus-one",
    framing_fragmented_through_proxy => "framing/fragmented-through-proxy",
    framing_many_frames_per_write => "framing/many-frames-per-write",
    reader_handler_error_keeps_connection => "reader/handler-error-keeps-connection",
    writer_drain_on_stop => "writer/drain-on-stop",
    writer_reconnect_retry => "writer/reconnect-retry",
    reader_inactivity_timeout_then_reconnect => "reader/inactivity-timeout-then-reconnect",
    concurrency_16_writers => "concurrency/16-writers",
    reader_drain_on_stop => "reader/drain-on-stop",
    writer_drain_while_reader_down => "writer/drain-while-reader-down",
    metrics_reader_connections => "metrics/reader-connections",
    systemd_socket_activation => "systemd/socket-activation",
    writer_write_after_stop => "writer/write-after-stop",
}

raw! {
    framing_raw_zero_length_frames => "framing/raw-zero-length-frames",
    framing_non_minimal_prefix => "framing/non-minimal-prefix",
    framing_fragmented_prefix_every_byte => "framing/fragmented-prefix-every-byte",
    malformed_overflow_10th_byte => "malformed/overflow-10th-byte",
    malformed_11_byte_prefix => "malformed/11-byte-prefix",
    malformed_truncated_prefix => "malformed/truncated-prefix",
    malformed_truncated_body => "malformed/truncated-body",
    framing_clean_eof_between_frames => "framing/clean-eof-between-frames",
    limits_max_plus_one_prefix_only => "limits/max-plus-one-prefix-only",
    limits_huge_declared_length => "limits/huge-declared-length",
    lifecycle_non_socket_file_at_path => "lifecycle/non-socket-file-at-path",
    lifecycle_second_reader_on_live_socket => "lifecycle/second-reader-on-live-socket",
    reader_handler_panic => "reader/handler-panic",
}

#[test]
fn every_catalog_case_has_a_test_per_arm() {
    let mut listed: Vec<&str> = PAIR_IDS.iter().chain(RAW_IDS).copied().collect();
    let mut catalog: Vec<&str> = CATALOG.iter().map(|c| c.id).collect();
    listed.sort_unstable();
    catalog.sort_unstable();
    assert_eq!(listed, catalog);
}
