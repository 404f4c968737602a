//! `rust-peer read --socket P [--max-message-size N] [--inactivity-timeout Dms]`:
//! the Rust Reader behind the same command-line contract and JSON lines as
//! `go-peer read` (see `go-peer/read.go`), for cases that need the reader in
//! its own process (systemd socket activation: `LISTEN_FDS` is per process).
//! Stops gracefully on SIGTERM or SIGINT and prints its metrics.

use std::io::Write;
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};
use serde_json::{Value, json};

fn emit(v: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn fail(msg: &str) -> ! {
    eprintln!("rust-peer: {msg}");
    std::process::exit(1);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some("read") {
        fail("usage: rust-peer read --socket P [--max-message-size N] [--inactivity-timeout Dms]");
    }
    let mut socket = None;
    let mut max = None;
    let mut inactivity = None;
    let mut it = args[1..].iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .unwrap_or_else(|| fail(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--socket" => socket = Some(value.clone()),
            "--max-message-size" => {
                max = Some(
                    value
                        .parse::<u64>()
                        .unwrap_or_else(|e| fail(&e.to_string())),
                );
            }
            "--inactivity-timeout" => {
                let ms = value.strip_suffix("ms").unwrap_or(value);
                let ms = ms.parse::<u64>().unwrap_or_else(|e| fail(&e.to_string()));
                inactivity = Some(Duration::from_millis(ms));
            }
            other => fail(&format!("unknown flag {other}")),
        }
    }
    let socket = socket.unwrap_or_else(|| fail("--socket is required"));
    // Block the stop signals before any thread starts, so every thread
    // inherits the mask and `wait` below receives them.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    if let Err(e) = signals.thread_block() {
        fail(&format!("blocking signals: {e}"));
    }
    let mut builder = udsipc::Reader::builder(&socket).on_error(|e| {
        emit(&json!({"event": "error", "context": e.context(), "error": e.to_string()}));
    });
    if let Some(n) = max {
        builder = builder.max_message_size(n);
    }
    if let Some(d) = inactivity {
        builder = builder.inactivity_timeout(d);
    }
    let reader = builder
        .start(|msg| {
            let hex: String = msg.iter().map(|b| format!("{b:02x}")).collect();
            emit(
                &json!({"event": "message", "len": msg.len(), "hex": hex, "handler_error": false}),
            );
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
