//! An async forwarder with backpressure, the library's real use case: read
//! messages from the socket (`incoming()`, a bounded stream of owned
//! messages) and forward each to a slow async sink (here a bounded channel
//! drained at 1 ms per message, standing in for an upload). The slow sink
//! holds back the Reader, which holds back the socket, which fills the
//! Writer's queue, and its producer waits in `send`: nothing is lost and
//! nothing reconnects.
//!
//! `cargo run -p udsipc --example forwarder`

use std::time::Duration;

use udsipc::bytes::Bytes;

const MESSAGES: usize = 2_000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("forwarder.sock");

    // The slow async sink: 1 ms per message.
    let (upstream, mut slow) = tokio::sync::mpsc::channel::<Bytes>(16);
    let consumer = tokio::spawn(async move {
        let mut n = 0usize;
        while let Some(msg) = slow.recv().await {
            tokio::time::sleep(Duration::from_millis(1)).await;
            n += msg.len();
        }
        n
    });

    // The forwarder: socket -> bounded stream -> slow sink.
    let (reader, mut incoming) = udsipc::Reader::builder(&path)
        .incoming_capacity(64)
        .incoming()?;
    let forwarder = tokio::spawn(async move {
        let mut forwarded = 0usize;
        while let Some(msg) = incoming.recv().await {
            // Waits while the sink is slow: that is the backpressure.
            if upstream.send(msg.body).await.is_err() {
                break;
            }
            forwarded += 1;
            if forwarded == MESSAGES {
                break;
            }
        }
        forwarded
    });

    // A producer far faster than the sink, with a small queue.
    let writer = udsipc::Writer::builder(&path)
        .max_buffered_writes(128)
        .start()?;
    for i in 0..MESSAGES {
        writer.send(vec![(i % 251) as u8; 1024]).await?;
    }
    writer.stop(Duration::from_secs(30)).await?;

    let forwarded = forwarder.await?;
    let bytes = consumer.await?;
    reader.stop(Duration::from_secs(5)).await?;
    let m = writer.metrics();
    println!(
        "forwarded {forwarded} messages ({bytes} bytes); writer dropped {} reconnects {} backpressure episodes {}",
        m.dropped, m.reconnects, m.backpressure
    );
    assert_eq!(forwarded, MESSAGES);
    assert_eq!(m.dropped, 0);
    Ok(())
}
