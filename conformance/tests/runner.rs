//! The `conform` runner as a user runs it: peers given as commands
//! (`udsipc peer`, the Python peer, a peer that supports nothing), filters,
//! and its three outputs.

use std::path::PathBuf;
use std::process::{Command, Output};

fn conform(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_conform"))
        .args(args)
        .current_dir(udsipc_conformance::crate_dir())
        .output()
        .expect("running conform")
}

/// Runs `conform` like [`conform`], but kills it if it has not ended
/// within `limit` (a hung runner fails the test instead of hanging it).
fn conform_within(args: &[&str], limit: std::time::Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_conform"))
        .args(args)
        .current_dir(udsipc_conformance::crate_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running conform");
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().expect("try_wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait");
            panic!(
                "conform did not end within {limit:?}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().expect("wait")
}

/// A peer script: `hello` answers with `hello_line`, every role prints
/// `ready` and then runs `role_body` (shell).
fn script_peer(dir: &tempfile::TempDir, name: &str, hello_line: &str, role_body: &str) -> String {
    let script = dir.path().join(format!("{name}.sh"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = hello ] && {{ echo '{hello_line}'; exit 0; }}\n\
             echo '{{\"event\":\"ready\"}}'\n{role_body}\n"
        ),
    )
    .unwrap();
    format!("{name}=sh {}", script.display())
}

fn rust_peer() -> String {
    let udsipc = udsipc_conformance::peer::rust_peer().expect("the udsipc binary");
    format!("rust={} peer", udsipc.display())
}

fn py_peer() -> String {
    let py = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    format!("py={py} -S py-peer/udsipc_peer.py")
}

fn out_file(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join(name);
    (dir, p)
}

#[test]
fn list_prints_every_case_with_its_level_sorted_by_rule() {
    let out = conform(&["--list"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), udsipc_conformance::cases::CATALOG.len());
    assert!(lines[0].starts_with("2.1-"), "{}", lines[0]);
    assert!(
        lines
            .iter()
            .all(|l| l.contains("\tMUST\t") || l.contains("\tSHOULD\t"))
    );
}

#[test]
fn section_filter_runs_rust_and_python_command_peers_in_every_arm() {
    let (_dir, json) = out_file("r.json");
    let (_dir2, xml) = out_file("r.xml");
    let out = conform(&[
        "--peer",
        &rust_peer(),
        "--peer",
        &py_peer(),
        "--section",
        "2.3",
        "--json",
        json.to_str().unwrap(),
        "--junit",
        xml.to_str().unwrap(),
    ]);
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{md}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 2.3.1 is raw (2 readers), 2.3.2 a pair case (2×2).
    assert!(md.contains("| **rust** | 1/1 | 1/1 |"), "{md}");
    assert!(md.contains("| **raw** | 1/1 | 1/1 |"), "{md}");
    assert!(md.contains("## 2 Framing"), "{md}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["results"].as_array().unwrap().len(), 6);
    assert_eq!(v["peers"][0]["profile"], "spec");
    let junit = std::fs::read_to_string(&xml).unwrap();
    assert_eq!(junit.matches("<testcase ").count(), 6);
    assert!(junit.contains("failures=\"0\""));
}

#[test]
fn a_peer_answering_127_is_unsupported_not_failed_unless_strict() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("nothing.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 127\n").unwrap();
    let peer = format!("none=sh {}", script.display());
    let out = conform(&["--peer", &peer, "--case", "2.3.1-zero-length-frames"]);
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{md}");
    assert!(md.contains("unsupported"), "{md}");
    let strict = conform(&[
        "--peer",
        &peer,
        "--case",
        "2.3.1-zero-length-frames",
        "--strict",
    ]);
    assert_eq!(strict.status.code(), Some(1));
}

#[test]
fn a_peer_that_breaks_the_rules_fails_its_case() {
    // A reader that says ready, then delivers nothing and never closes.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("deaf.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n[ \"$1\" = hello ] && { echo '{\"event\":\"hello\",\"profile\":\"spec\"}'; exit 0; }\n\
         echo '{\"event\":\"ready\"}'\nexec sleep 60\n",
    )
    .unwrap();
    let peer = format!("deaf=sh {}", script.display());
    let out = conform(&["--peer", &peer, "--case", "7.3-stop-removes-socket-file"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("**FAIL**"));
}

#[test]
fn bad_usage_exits_2() {
    assert_eq!(conform(&["--peer", "noequals"]).status.code(), Some(2));
    assert_eq!(conform(&["--case", "9.9-nothing"]).status.code(), Some(2));
}

#[test]
fn builtin_peers_are_named_go_rust_py() {
    let out = conform(&[
        "--peer",
        "rust",
        "--peer",
        "py",
        "--case",
        "2.1-frame-layout",
    ]);
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{md}");
    assert!(md.contains("| **raw** | 1/1 | 1/1 |"), "{md}");
}

#[test]
fn a_writer_that_never_connects_fails_its_cases_and_the_run_still_reports() {
    // Reads its stdin, never connects: every blocking step of the
    // writer->raw cases (the accept above all) must have a deadline.
    let dir = tempfile::tempdir().unwrap();
    let peer = script_peer(
        &dir,
        "mute",
        r#"{"event":"hello","name":"mute","profile":"spec"}"#,
        "exec cat >/dev/null",
    );
    let (_d, md) = out_file("m.md");
    let out = conform_within(
        &[
            "--peer",
            &peer,
            "--case",
            "2.2.2-writer-minimal-prefixes",
            "--case",
            "5.5-write-timeout-is-a-stall-limit",
            "--markdown",
            md.to_str().unwrap(),
        ],
        std::time::Duration::from_secs(150),
    );
    assert_eq!(out.status.code(), Some(1));
    let report = std::fs::read_to_string(&md).expect("a report");
    assert_eq!(report.matches("to connect").count(), 2, "{report}");
}

#[test]
fn peer_stderr_is_tagged_with_the_case_and_arm() {
    let dir = tempfile::tempdir().unwrap();
    // The diagnostic comes before `ready`: the case may end (and kill the
    // peer) as soon as it is ready, and a line printed after that would be
    // lost to the race, not to the tagging under test.
    let script = dir.path().join("noisy.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n[ \"$1\" = hello ] && { echo '{\"event\":\"hello\",\"name\":\"noisy\",\"profile\":\"spec\"}'; exit 0; }\n\
         echo 'noisy-diagnostic' >&2\necho '{\"event\":\"ready\"}'\nexit 3\n",
    )
    .unwrap();
    let peer = format!("noisy=sh {}", script.display());
    let out = conform_within(
        &["--peer", &peer, "--case", "2.1-frame-layout"],
        std::time::Duration::from_secs(150),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("[2.1-frame-layout raw->noisy] noisy read: noisy-diagnostic"),
        "{stderr}"
    );
}

#[test]
fn answers_are_matched_by_kind_so_extra_json_lines_are_ignored() {
    // The Python peer, its writer's every line preceded by an event the
    // suite does not know: answers are found by kind, not position.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("chatty.sh");
    let py = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let body = r#"#!/bin/sh
if [ "$1" = write ]; then
    PY -S py-peer/udsipc_peer.py "$@" | sed -u 'i {"event":"note"}'
    exit 0
fi
exec PY -S py-peer/udsipc_peer.py "$@"
"#;
    std::fs::write(&script, body.replace("PY", &py)).unwrap();
    let peer = format!("chatty=sh {}", script.display());
    let out = conform_within(
        &[
            "--peer",
            &peer,
            "--case",
            "5.8-write-after-stop",
            "--case",
            "5.1-buffer-full",
        ],
        std::time::Duration::from_secs(150),
    );
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{md}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn hello_capabilities_drive_skips_with_the_reason() {
    // A peer without abstract names: 6.1 is skipped before it is started
    // (its roles would leave a file behind).
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("started");
    let peer = script_peer(
        &dir,
        "noabs",
        r#"{"event":"hello","name":"noabs","profile":"spec","capabilities":["peer-credentials"]}"#,
        &format!("touch {}; exit 1", marker.display()),
    );
    let (_d, json) = out_file("r.json");
    let out = conform_within(
        &[
            "--peer",
            &peer,
            "--case",
            "6.1-abstract-name",
            "--json",
            json.to_str().unwrap(),
        ],
        std::time::Duration::from_secs(150),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let r = &v["results"][0];
    assert_eq!(r["unsupported"], true, "{r}");
    assert!(
        r["detail"]
            .as_str()
            .unwrap()
            .contains("does not list `abstract-names`"),
        "{r}"
    );
    assert!(!marker.exists(), "the peer was started");
}

#[test]
fn the_built_in_peers_hello_lists_every_capability() {
    let py = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let go = udsipc_conformance::gopeer::go_peer().expect("go-peer");
    let rust = udsipc_conformance::peer::rust_peer().expect("udsipc");
    let peers: [Vec<std::ffi::OsString>; 3] = [
        vec![go.into()],
        vec![rust.into(), "peer".into()],
        vec![
            py.into(),
            "-S".into(),
            udsipc_conformance::crate_dir()
                .join("py-peer/udsipc_peer.py")
                .into(),
        ],
    ];
    for argv in peers {
        let out = Command::new(&argv[0])
            .args(&argv[1..])
            .arg("hello")
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for (cap, _) in udsipc_conformance::capability::ALL {
            assert!(
                v["capabilities"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|c| c == cap)),
                "{argv:?}: {v}"
            );
        }
    }
}

#[test]
fn a_reader_that_sheds_silently_passes_4_6() {
    // udsipc peer with its "connection rejected" lines filtered out: it
    // sheds without a word, which rule 4.6 allows (a MAY).
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("silent.sh");
    let udsipc = udsipc_conformance::peer::rust_peer().expect("the udsipc binary");
    let body = r#"#!/bin/bash
[ "$1" = hello ] && exec UDSIPC peer hello
exec UDSIPC peer "$@" > >(exec grep --line-buffered -v '"connection rejected"')
"#;
    std::fs::write(&script, body.replace("UDSIPC", &udsipc.to_string_lossy())).unwrap();
    let peer = format!("silent=bash {}", script.display());
    let out = conform_within(
        &["--peer", &peer, "--case", "4.6-accept-errors-give-up"],
        std::time::Duration::from_secs(150),
    );
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{md}");
    assert!(md.contains("shed connections silently"), "{md}");
}
