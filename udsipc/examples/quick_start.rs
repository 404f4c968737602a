//! The README's quick start, as a program CI compiles and runs
//! (`cargo run -p udsipc --example quick_start`). Keep the two in step:
//! `tests/readme.rs` checks the README shows exactly this file's `main`.

use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("udsipc-quick-start-{}", std::process::id()));
    let path = dir.join("app.sock"); // the Reader creates the directory (0750)

    let reader = udsipc::Reader::builder(&path)
        .max_message_size(1 << 20)
        .inactivity_timeout(Duration::from_secs(30))
        .on_error(|e| eprintln!("reader: {}: {e}", e.context()))
        .start(|msg: &[u8]| {
            // `msg` borrows the connection's buffer: copy it to keep it.
            println!("received {} bytes", msg.len());
            Ok(())
        })?; // binds, accepts (and tells systemd READY=1 when run by it)

    let writer = udsipc::Writer::builder(&path)
        .max_buffered_writes(50_000)
        .start()?; // connects in the background
    writer.try_send(b"hello")?; // never blocks; Err(BufferFull) when full
    writer.try_send(udsipc::bytes::Bytes::from_static(b"x"))?; // owned: no copy
    writer.send_blocking(vec![0u8; 1000])?; // waits for room instead of dropping
    // inside async code: writer.send(bytes).await? or writer.reserve().await?.send(bytes)

    writer.stop_blocking(Duration::from_secs(5))?; // until the reader has read everything
    let m = writer.metrics(); // sent, delivered, dropped, failed, queue_depth, ...
    println!(
        "writer: sent {} delivered {} dropped {}",
        m.sent, m.delivered, m.dropped
    );
    reader.stop_blocking(Duration::from_secs(5))?; // drain connections; removes the socket
    println!("reader: received {}", reader.metrics().received);
    let _ = std::fs::remove_dir(&dir);
    Ok(())
}
