//! A forwarder, the library's real use case, with the shutdown that loses
//! nothing: read messages from the socket (`incoming()`, a bounded stream
//! of owned messages) and forward each to a slow async sink (here a bounded
//! channel drained at 1 ms per message, standing in for an upload).
//!
//! - Backpressure: the slow sink holds back the stream, which holds back
//!   the Reader (at most `incoming_capacity` messages and
//!   `incoming_capacity_bytes` bytes queued), which holds back the socket,
//!   which fills the Writer's queue: its producer waits in `send`.
//! - Shutdown: on SIGTERM another task calls `reader.stop(..)`; the
//!   forwarder keeps draining the stream until `None`. The Reader stops
//!   taking new bytes (producers' later writes fail and are retried on their
//!   next connection), hands over everything it already read and what
//!   waits in the kernel, then ends the stream. Nothing the Reader read is
//!   lost, and nothing a Writer counted `delivered` either.
//!
//! The example sends itself SIGTERM mid-stream, then checks all of that.
//!
//! `cargo run -p udsipc --example forwarder`

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use udsipc::bytes::Bytes;

/// Messages forwarded before the example sends itself SIGTERM.
const SIGNAL_AFTER: usize = 500;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("forwarder.sock");

    // The forwarder's Reader: a bounded read-ahead (the crash window).
    let (reader, mut incoming) = udsipc::Reader::builder(&path)
        .incoming_capacity(64)
        .incoming_capacity_bytes(64 << 10)
        .incoming()?;
    let reader = Arc::new(reader);

    // SIGTERM (and Ctrl-C) stop the Reader from their own task, so the
    // forwarder below keeps draining meanwhile.
    let mut sigterm = signal(SignalKind::terminate())?;
    let stopper = {
        let reader = Arc::clone(&reader);
        tokio::spawn(async move {
            tokio::select! {
                _ = sigterm.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            reader.stop(Duration::from_secs(10)).await
        })
    };

    // The slow async sink: 1 ms per message.
    let (upstream, mut slow) = tokio::sync::mpsc::channel::<Bytes>(16);
    let sink = tokio::spawn(async move {
        let mut n = 0usize;
        while slow.recv().await.is_some() {
            tokio::time::sleep(Duration::from_millis(1)).await;
            n += 1;
        }
        n
    });

    // A producer far faster than the sink (the server, in real life).
    let writer = Arc::new(
        udsipc::Writer::builder(&path)
            .max_buffered_writes(128)
            .start()?,
    );
    let producer = {
        let writer = Arc::clone(&writer);
        tokio::spawn(async move {
            for i in 0u32.. {
                if writer.send(vec![(i % 251) as u8; 1024]).await.is_err() {
                    break;
                }
            }
        })
    };

    // The forwarder: socket -> bounded stream -> slow sink, until `None`.
    let mut forwarded = 0usize;
    while let Some(msg) = incoming.recv().await {
        // Waits while the sink is slow: that is the backpressure.
        upstream.send(msg.body).await?;
        forwarded += 1;
        if forwarded == SIGNAL_AFTER {
            // Stands in for the operator's `kill -TERM`.
            nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::SIGTERM)?;
        }
    }
    // `None`: the Reader has stopped and everything it read is forwarded.
    stopper.await??;
    drop(upstream);
    let sunk = sink.await?;

    // The producer outlived the Reader: its queued messages are the
    // Writer's to report (discarded or unconfirmed), never counted
    // delivered.
    producer.abort();
    let _ = writer.stop(Duration::from_millis(200)).await;
    let r = reader.metrics();
    let w = writer.metrics();
    println!(
        "forwarded {forwarded} messages ({sunk} sunk) after SIGTERM at {SIGNAL_AFTER}; reader read {}; writer delivered {} unconfirmed {} discarded {} dropped {} reconnects {}",
        r.received, w.delivered, w.unconfirmed, w.discarded, w.dropped, w.reconnects
    );
    assert!(forwarded >= SIGNAL_AFTER);
    assert_eq!(
        forwarded as u64, r.received,
        "everything read was forwarded"
    );
    assert_eq!(sunk, forwarded);
    assert!(w.delivered <= r.received, "nothing delivered was lost");
    assert_eq!(w.dropped, 0);
    Ok(())
}
