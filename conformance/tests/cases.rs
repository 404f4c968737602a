//! One test per case×arm of the conformance catalog (`src/cases.rs`), so a
//! failure is named after the case and the direction, e.g.
//! `r2_2_1_varint_boundaries::go_to_rust` (rule 2.2.1 of PROTOCOL.md). Each test records its result in
//! `target/conformance/results/`; `conformance-report` assembles them.
//! Without Go installed these tests fail and say how to install it.
//!
//! The Python peer (written from PROTOCOL.md alone) runs against the Go
//! reference in both directions and in every raw arm; its arms with the
//! Rust peer and with itself are in the full matrix of the `conform`
//! runner (`cargo run -p udsipc-conformance --bin conform`), kept out of
//! this gate for time (each Python process start costs a few hundred
//! milliseconds on a busy machine).

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
            #[test] fn go_to_py() { run($id, "Go->Py") }
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
    r5_9_slow_reader_no_reconnect => "5.9-slow-reader-no-reconnect",
    r5_10_poison_message_given_up => "5.10-poison-message-given-up",
    r6_1_abstract_name => "6.1-abstract-name",
    r6_3_relative_path => "6.3-relative-path",
    r5_1_buffer_full => "5.1-buffer-full",
    r5_2_reconnect_until_reader_appears => "5.2-reconnect-until-reader-appears",
    r5_4_cut_frame_delivered_once => "5.4-cut-frame-delivered-once",
    r2_2_1_varint_boundaries => "2.2.1-varint-boundaries",
    r2_3_2_zero_length_writes => "2.3.2-zero-length-writes",
    r2_4_1_exact_max => "2.4.1-exact-max",
    r2_4_2_max_plus_one => "2.4.2-max-plus-one",
    r2_2_6_fragmented_through_proxy => "2.2.6-fragmented-through-proxy",
    r2_5_many_frames_per_write => "2.5-many-frames-per-write",
    r4_1_handler_error_keeps_connection => "4.1-handler-error-keeps-connection",
    r5_6_writer_drain_on_stop => "5.6-writer-drain-on-stop",
    r5_3_reconnect_retry => "5.3-reconnect-retry",
    r4_2_inactivity_timeout_then_reconnect => "4.2-inactivity-timeout-then-reconnect",
    r4_4_sixteen_writers => "4.4-sixteen-writers",
    r7_4_reader_drain_on_stop => "7.4-reader-drain-on-stop",
    r5_7_drain_while_reader_down => "5.7-drain-while-reader-down",
    r4_5_reader_connections => "4.5-reader-connections",
    r8_1_socket_activation => "8.1-socket-activation",
    r5_8_write_after_stop => "5.8-write-after-stop",
}

raw! {
    r4_2_inactivity_inside_a_frame => "4.2-inactivity-inside-a-frame",
    r4_8_order_across_reconnects => "4.8-order-across-reconnects",
    r4_6_accept_errors_give_up => "4.6-accept-errors-give-up",
    r4_6_max_accept_errors_any_value => "4.6-max-accept-errors-any-value",
    r8_2_notify_ready_and_stopping => "8.2-notify-ready-and-stopping",
    r8_3_runtime_directory => "8.3-runtime-directory",
    r8_4_listen_pid_required => "8.4-listen-pid-required",
    r4_7_peer_credentials => "4.7-peer-credentials",
    r2_1_golden_vectors => "2.1-golden-vectors",
    r2_1_frame_layout => "2.1-frame-layout",
    r6_4_name_length_limit => "6.4-name-length-limit",
    r6_5_abstract_name_leaves_files_alone => "6.5-abstract-name-leaves-files-alone",
    r7_1_parent_directory_created => "7.1-parent-directory-created",
    r7_3_stop_removes_socket_file => "7.3-stop-removes-socket-file",
    r2_3_1_zero_length_frames => "2.3.1-zero-length-frames",
    r2_2_3_non_minimal_prefix => "2.2.3-non-minimal-prefix",
    r2_2_6_prefix_byte_per_write => "2.2.6-prefix-byte-per-write",
    r2_2_4_overflow_10th_byte => "2.2.4-overflow-10th-byte",
    r2_2_5_11_byte_prefix => "2.2.5-11-byte-prefix",
    r3_2_truncated_prefix => "3.2-truncated-prefix",
    r3_3_truncated_body => "3.3-truncated-body",
    r3_1_clean_eof_between_frames => "3.1-clean-eof-between-frames",
    r2_4_2_prefix_only => "2.4.2-prefix-only",
    r2_4_3_huge_declared_length => "2.4.3-huge-declared-length",
    r7_2_non_socket_file => "7.2-non-socket-file",
    r7_2_second_reader_on_live_socket => "7.2-second-reader-on-live-socket",
    r4_3_handler_panic => "4.3-handler-panic",
}

macro_rules! to_raw {
    ($($m:ident => $id:literal,)*) => {
        $(mod $m {
            use super::run;
            #[test] fn go_to_raw() { run($id, "Go->raw") }
            #[test] fn rust_to_raw() { run($id, "Rust->raw") }
            #[test] fn py_to_raw() { run($id, "Py->raw") }
        })*
        const TO_RAW_IDS: &[&str] = &[$($id),*];
    };
}

to_raw! {
    r5_5_write_timeout_is_a_stall_limit => "5.5-write-timeout-is-a-stall-limit",
    r2_2_2_writer_minimal_prefixes => "2.2.2-writer-minimal-prefixes",
}

#[test]
fn every_catalog_case_has_a_test_per_arm() {
    let mut listed: Vec<&str> = PAIR_IDS
        .iter()
        .chain(RAW_IDS)
        .chain(TO_RAW_IDS)
        .copied()
        .collect();
    let mut catalog: Vec<&str> = CATALOG.iter().map(|c| c.id).collect();
    listed.sort_unstable();
    catalog.sort_unstable();
    assert_eq!(listed, catalog);
}
