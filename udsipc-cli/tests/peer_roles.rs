//! The one Rust peer program: the hidden roles the conformance suite and the
//! bench runner spawn (`udsipc peer ...`, `udsipc bench peer ...`), kept out
//! of `--help`, and how `udsipc bench` reports a failure.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_udsipc");

fn udsipc(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("running udsipc")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn peer_hello_answers_the_conformance_contract() {
    let out = udsipc(&["peer", "hello"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let hello: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(hello["event"], "hello");
    assert_eq!(hello["name"], "rust");
    assert_eq!(hello["roles"], serde_json::json!(["read", "write"]));
}

#[test]
fn peer_role_or_flag_it_does_not_know_exits_127() {
    for args in [
        &["peer"][..],
        &["peer", "relay"],
        &["peer", "read", "--socket", "s", "--no-such-flag", "1"],
        &["peer", "--help"],
    ] {
        let out = udsipc(args);
        assert_eq!(out.status.code(), Some(127), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn peer_read_without_a_socket_exits_1() {
    let out = udsipc(&["peer", "read"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--socket is required"),
        "{}",
        stderr(&out)
    );
}

/// Built without the default feature `bench`, the binary has no `bench`
/// (and links no bench code, nor its counting allocator).
#[cfg(not(feature = "bench"))]
#[test]
fn without_the_bench_feature_there_is_no_bench_command() {
    let out = udsipc(&["bench", "--smoke"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!stdout(&udsipc(&["--help"])).contains("  bench "));
}

#[cfg(feature = "bench")]
#[test]
fn help_lists_bench_and_hides_the_peer_roles() {
    let out = udsipc(&["--help"]);
    let help = stdout(&out);
    assert!(help.contains("  bench "), "{help}");
    assert!(!help.contains("  peer "), "{help}");
    let bench = stdout(&udsipc(&["bench", "--help"]));
    for flag in [
        "--quick", "--smoke", "--json", "--svg", "--column", "--no-go",
    ] {
        assert!(bench.contains(flag), "{flag} in {bench}");
    }
    assert!(!bench.contains("  peer "), "{bench}");
}

#[cfg(feature = "bench")]
#[test]
fn bench_peer_with_an_unknown_role_fails_with_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("s.sock");
    let out = udsipc(&[
        "bench",
        "peer",
        "--role",
        "relay",
        "--socket",
        socket.to_str().unwrap(),
        "--count",
        "1",
        "--size",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        r#"error: --role must be reader or writer, not "relay""#
    );
}

#[cfg(feature = "bench")]
#[test]
fn bench_that_cannot_write_its_json_exits_1_with_an_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("missing-dir/table.json");
    let out = udsipc(&[
        "bench",
        "--smoke",
        "--no-go",
        "--size",
        "64",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains("table.json"),
        "{err}"
    );
}

/// The minimal peers (the latency floor across processes): a paced writer
/// process to a reader process, every message counted, latency reported.
#[cfg(feature = "bench")]
#[test]
fn the_minimal_peers_measure_one_way_latency_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("floor.sock");
    let socket = socket.to_str().unwrap();
    let common = [
        "--minimal",
        "--socket",
        socket,
        "--count",
        "200",
        "--size",
        "64",
    ];
    let mut reader = Command::new(BIN)
        .args(["bench", "peer", "--role", "reader", "--latency"])
        .args(common)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(reader.stdout.take().unwrap()));
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let writer = udsipc(
        &[
            &["bench", "peer", "--role", "writer", "--rate", "10000"][..],
            &common,
        ]
        .concat(),
    );
    assert!(writer.status.success(), "{}", stderr(&writer));
    let report: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert!(reader.wait().unwrap().success());
    assert_eq!(report["msgs"], 200);
    assert_eq!(report["bytes"], 200 * 64);
    let [p50, p99] =
        [&report["latency_ns"][0], &report["latency_ns"][1]].map(|v| v.as_i64().unwrap());
    assert!(0 < p50 && p50 <= p99, "{report}");
    // Too small to carry the send time: a clear error.
    let out = udsipc(&[
        "bench",
        "peer",
        "--minimal",
        "--role",
        "writer",
        "--socket",
        socket,
        "--count",
        "1",
        "--size",
        "4",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--size must be at least 8"),
        "{}",
        stderr(&out)
    );
}
