//! The proxy's accept errors (EMFILE), a regression test of a defect: the
//! real `udsipc proxy` under a descriptor limit backs off doubling instead
//! of spinning.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The bound on every wait; generous, because CI machines stall.
const WAIT: Duration = Duration::from_secs(30);

/// What the EMFILE test hears: the upstream accepted, or a stderr line.
enum Heard {
    Upstream,
    Line(String),
}

/// Runs `udsipc proxy` with at most `limit` descriptors and connects
/// clients (held open) one at a time, each once the previous one reached
/// the upstream, until the proxy runs out of descriptors. Returns its
/// stderr lines up to the third `accept-error` event, or `None` if the
/// descriptors ran out in the upstream connect(2) instead (the limit's
/// parity decides which call meets EMFILE first).
fn accept_errors_under_limit(limit: u32) -> Option<Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let (front, back) = (dir.path().join("front.sock"), dir.path().join("back.sock"));
    let upstream = std::os::unix::net::UnixListener::bind(&back).unwrap();
    let (tx, rx) = mpsc::channel();
    let up_tx = tx.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        while let Ok((s, _)) = upstream.accept() {
            held.push(s);
            if up_tx.send(Heard::Upstream).is_err() {
                break;
            }
        }
    });
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n {limit} && exec \"$0\" proxy --listen \"$1\" --upstream \"$2\""
        ))
        .arg(env!("CARGO_BIN_EXE_udsipc"))
        .arg(&front)
        .arg(&back)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(Heard::Line(line)).is_err() {
                break;
            }
        }
    });
    let next = || rx.recv_timeout(WAIT).expect("the proxy went quiet");
    match next() {
        Heard::Line(first) => assert!(first.starts_with("proxying"), "{first}"),
        Heard::Upstream => panic!("an upstream connection before any client"),
    }
    let mut held = Vec::new();
    let mut lines = Vec::new();
    let outcome = 'clients: loop {
        assert!(
            held.len() < usize::try_from(limit).unwrap(),
            "never ran out"
        );
        held.push(std::os::unix::net::UnixStream::connect(&front).unwrap());
        loop {
            match next() {
                Heard::Upstream => continue 'clients,
                Heard::Line(line) => {
                    if line.contains(r#""fault":"upstream-unreachable""#) {
                        break 'clients None;
                    }
                    lines.push(line);
                    let errors = lines
                        .iter()
                        .filter(|l| l.contains(r#""fault":"accept-error""#))
                        .count();
                    if errors == 3 {
                        break 'clients Some(lines);
                    }
                }
            }
        }
    };
    child.kill().unwrap();
    let _ = child.wait();
    drop(held);
    outcome
}

#[test]
fn accept_errors_back_off_doubling_instead_of_spinning() {
    let lines = accept_errors_under_limit(48)
        .or_else(|| accept_errors_under_limit(49))
        .expect("neither limit made accept(2) fail");
    let errors: Vec<serde_json::Value> = lines
        .iter()
        .filter(|l| l.contains(r#""fault":"accept-error""#))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let details: Vec<&str> = errors
        .iter()
        .map(|e| e["detail"].as_str().unwrap())
        .collect();
    for (detail, pause) in details.iter().zip(["5 ms", "10 ms", "20 ms"]) {
        assert!(detail.contains("Too many open files"), "{detail}");
        assert!(
            detail.ends_with(&format!("retrying in {pause}")),
            "{details:?}"
        );
    }
}
