//! `udsipc peer`: udsipc's Reader and Writer behind the conformance
//! suite's peer contract (`conformance/PEERS.md`), the same one `go-peer`
//! and the Python peer speak:
//!
//! ```text
//! udsipc peer hello
//! udsipc peer read --socket NAME [--max-message-size N] [--inactivity-timeout Dms]
//!                  [--fail-on HEX] [--panic-on HEX] [--allow-uid UID]
//!                  [--max-accept-errors N] [--pause-on HEX --pause-ms D]
//! udsipc peer write --socket NAME [--max-backoff Dms] [--max-buffered-writes N]
//!                   [--write-timeout Dms]
//! ```
//!
//! The suite uses it where a reader must be a process of its own (systemd
//! socket activation: `LISTEN_FDS` is per process) and when `conform` is
//! given it as a command (`--peer rust="udsipc peer"`). Unknown roles and
//! flags exit 127; a failure exits 1. This module owns the contract's
//! parsing and output, nothing of the other subcommands.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};
use serde_json::{Value, json};

fn emit(v: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn fail(msg: &str) -> ! {
    eprintln!("udsipc peer: {msg}");
    std::process::exit(1);
}

fn unsupported(msg: &str) -> ! {
    eprintln!("udsipc peer: {msg}");
    std::process::exit(127);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    if s.len() % 2 != 0 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        fail(&format!("not hex: {s:?}"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("checked hex digits"))
        .collect()
}

/// `--flag value` pairs; a flag outside `known` is unsupported (127).
fn flags(args: &[String], known: &[&str]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if !known.contains(&flag.as_str()) {
            unsupported(&format!("unsupported flag {flag}"));
        }
        let value = it
            .next()
            .unwrap_or_else(|| fail(&format!("{flag} needs a value")));
        out.insert(flag.clone(), value.clone());
    }
    out
}

fn millis(v: &str) -> Duration {
    let ms = v.strip_suffix("ms").unwrap_or(v);
    Duration::from_millis(ms.parse().unwrap_or_else(|e| fail(&format!("{v}: {e}"))))
}

fn number<T: std::str::FromStr>(v: &str) -> T
where
    T::Err: std::fmt::Display,
{
    v.parse().unwrap_or_else(|e| fail(&format!("{v}: {e}")))
}

/// Runs one role of the contract with `args` (what follows `udsipc peer`).
pub(crate) fn run(args: &[String]) -> std::process::ExitCode {
    match args.first().map(String::as_str) {
        Some("hello") => emit(&json!({
            "event": "hello", "name": "rust", "profile": "spec", "roles": ["read", "write"],
            "capabilities": [
                "abstract-names", "peer-credentials", "notify", "socket-activation", "shutdown-read",
            ],
        })),
        Some("read") => read(&args[1..]),
        Some("write") => write(&args[1..]),
        _ => unsupported(
            "usage: udsipc peer hello | read --socket NAME ... | write --socket NAME ...",
        ),
    }
    std::process::ExitCode::SUCCESS
}

fn read(args: &[String]) {
    let f = flags(
        args,
        &[
            "--socket",
            "--max-message-size",
            "--inactivity-timeout",
            "--fail-on",
            "--panic-on",
            "--allow-uid",
            "--max-accept-errors",
            "--pause-on",
            "--pause-ms",
        ],
    );
    let socket = f
        .get("--socket")
        .unwrap_or_else(|| fail("--socket is required"));
    // Block the stop signals before any thread starts, so every thread
    // inherits the mask and `wait` below receives them.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    if let Err(e) = signals.thread_block() {
        fail(&format!("blocking signals: {e}"));
    }
    let mut builder = udsipc::Reader::builder(socket).on_error(|e| {
        emit(&json!({"event": "error", "context": e.context(), "error": e.to_string()}));
    });
    if let Some(n) = f.get("--max-message-size") {
        builder = builder.max_message_size(number(n));
    }
    if let Some(d) = f.get("--inactivity-timeout") {
        builder = builder.inactivity_timeout(millis(d));
    }
    if let Some(n) = f.get("--max-accept-errors") {
        builder = builder.max_accept_errors(number(n));
    }
    if let Some(uid) = f.get("--allow-uid") {
        builder = builder.allow_uid(number(uid));
    }
    let fail_on = f.get("--fail-on").map(|h| unhex(h));
    let panic_on = f.get("--panic-on").map(|h| unhex(h));
    let pause_on = f.get("--pause-on").map(|h| unhex(h));
    let pause = millis(f.get("--pause-ms").map_or("0", String::as_str));
    let reader = builder
        .start(move |msg| {
            let refused = fail_on.as_deref() == Some(msg);
            emit(&json!({
                "event": "message", "len": msg.len(), "hex": hex(msg), "handler_error": refused,
            }));
            if refused {
                return Err("rejected by --fail-on".into());
            }
            if panic_on.as_deref() == Some(msg) {
                panic!("udsipc peer: --panic-on message");
            }
            if pause_on.as_deref() == Some(msg) {
                std::thread::sleep(pause);
            }
            Ok(())
        })
        .unwrap_or_else(|e| fail(&format!("start: {e}")));
    emit(&json!({"event": "ready", "socket_activated": reader.is_socket_activated()}));
    let _ = signals.wait();
    let stop_error = match reader.stop_blocking(Duration::from_secs(10)) {
        Ok(()) => String::new(),
        Err(e) => e.to_string(),
    };
    let m = reader.metrics();
    emit(&json!({
        "event": "metrics", "received": m.received, "connections": m.connections,
        "errors": m.errors, "stop_error": stop_error,
    }));
}

fn write(args: &[String]) {
    let f = flags(
        args,
        &[
            "--socket",
            "--max-backoff",
            "--max-buffered-writes",
            "--write-timeout",
        ],
    );
    let socket = f
        .get("--socket")
        .unwrap_or_else(|| fail("--socket is required"));
    let mut builder = udsipc::Writer::builder(socket).on_error(|e| {
        emit(&json!({"event": "error", "context": e.context(), "error": e.to_string()}));
    });
    if let Some(d) = f.get("--max-backoff") {
        builder = builder.max_backoff(millis(d));
    }
    if let Some(n) = f.get("--max-buffered-writes") {
        builder = builder.max_buffered_writes(number(n));
    }
    if let Some(d) = f.get("--write-timeout") {
        builder = builder.write_timeout(millis(d));
    }
    let writer = builder
        .start()
        .unwrap_or_else(|e| fail(&format!("start: {e}")));
    emit(&json!({"event": "ready"}));
    let metrics = |last: bool, stop_error: &str| {
        let m = writer.metrics();
        emit(&json!({
            "event": "metrics", "sent": m.sent, "dropped": m.dropped, "failed": m.failed,
            "queue": m.queue_depth, "final": last, "stop_error": stop_error,
        }));
    };
    let stop = || match writer.stop_blocking(Duration::from_secs(30)) {
        Ok(()) => String::new(),
        Err(e) => e.to_string(),
    };
    let mut stopped = false;
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap_or_else(|e| fail(&format!("reading stdin: {e}")));
        if line == "metrics" {
            metrics(false, "");
        } else if line == "stop" {
            emit(&json!({"event": "stopped", "stop_error": stop()}));
            stopped = true;
        } else if let Some(h) = line.strip_prefix("try ") {
            let error = writer
                .try_send(&unhex(h))
                .map_or_else(|e| e.to_string(), |()| String::new());
            emit(&json!({"event": "write", "error": error}));
        } else if stopped {
            let error = writer
                .try_send(&unhex(&line))
                .map_or_else(|e| e.to_string(), |()| String::new());
            emit(&json!({"event": "write", "error": error}));
        } else {
            let msg = unhex(&line);
            loop {
                match writer.try_send(&msg) {
                    Ok(()) => break,
                    Err(udsipc::WriteError::BufferFull(_)) => {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => fail(&format!("try_send: {e}")),
                }
            }
        }
    }
    let stop_error = if stopped { String::new() } else { stop() };
    metrics(true, &stop_error);
}
