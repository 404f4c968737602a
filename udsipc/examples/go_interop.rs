//! Go interop, step by step: the Go reference (`github.com/Psiphon-Inc/uds-ipc`,
//! driven by `conformance/go-peer`, a small Go program of this repository)
//! and this crate exchange messages in both directions over a real socket.
//!
//! 1. Build go-peer (Go fetches the Go reference through the module proxy).
//! 2. Go Reader, Rust Writer: start `go-peer read`, wait for its `ready`
//!    line, send three messages with `udsipc::Writer`, stop go-peer with
//!    SIGTERM and read what it printed (JSON lines, bodies in hex).
//! 3. Rust Reader, Go Writer: start `udsipc::Reader`, feed `go-peer write`
//!    three hex lines on stdin, close stdin (it drains and exits).
//!
//! `cargo run -p udsipc --example go_interop` (needs `go` on PATH, or in
//! /usr/local/go/bin).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Error = Box<dyn std::error::Error>;

fn go() -> Result<PathBuf, Error> {
    for candidate in ["go", "/usr/local/go/bin/go"] {
        if Command::new(candidate)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Ok(candidate.into());
        }
    }
    Err("this example needs Go 1.24+ (`go` on PATH or /usr/local/go/bin/go)".into())
}

/// Step 1: `go build` in conformance/go-peer.
fn build_go_peer(out: &Path) -> Result<PathBuf, Error> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance/go-peer");
    let bin = out.join("go-peer");
    println!("1. building {} ...", src.display());
    let status = Command::new(go()?)
        .args(["build", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(&src)
        .status()?;
    if !status.success() {
        return Err("go build of conformance/go-peer failed (see above)".into());
    }
    Ok(bin)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn main() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let go_peer = build_go_peer(dir.path())?;
    let messages: [&[u8]; 3] = [b"hello from Rust", b"", &[0u8; 300]];

    // Step 2: Go Reader <- Rust Writer.
    let path = dir.path().join("go-reads.sock");
    let mut child = Command::new(&go_peer)
        .args(["read", "--socket"])
        .arg(&path)
        .stdout(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let ready = lines.next().ok_or("go-peer exited before ready")??;
    println!("2. go-peer: {ready}");
    let writer = udsipc::Writer::builder(&path).start()?;
    for m in messages {
        writer.send_blocking(m.to_vec())?; // the empty one is not sent, as in Go
    }
    writer.stop_blocking(Duration::from_secs(10))?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let mut got = 0;
    for line in lines {
        let line = line?;
        println!(
            "   go-peer: {}",
            if line.len() > 120 {
                &line[..120]
            } else {
                &line
            }
        );
        got += usize::from(line.contains(r#""event":"message""#));
    }
    child.wait()?;
    assert_eq!(got, 2, "Go received both non-empty messages");

    // Step 3: Rust Reader <- Go Writer.
    let path = dir.path().join("rust-reads.sock");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let reader = udsipc::Reader::builder(&path).start(move |msg: &[u8]| {
        sink.lock().unwrap().push(msg.to_vec());
        Ok(())
    })?;
    let mut child = Command::new(&go_peer)
        .args(["write", "--socket"])
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    {
        let mut stdin = child.stdin.take().expect("piped");
        for m in [&b"hello from Go"[..], &[7u8; 200_000]] {
            writeln!(stdin, "{}", hex(m))?;
        }
    } // closing stdin: go-peer drains, prints its metrics and exits
    let out = child.wait_with_output()?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("3. go-peer: {line}");
    }
    reader.stop_blocking(Duration::from_secs(10))?;
    let seen = seen.lock().unwrap();
    println!(
        "   Rust Reader received {} message(s): {:?} and {} bytes",
        seen.len(),
        String::from_utf8_lossy(&seen[0]),
        seen[1].len()
    );
    assert_eq!(seen.len(), 2);
    Ok(())
}
