//! A synchronous program: no async code, no tokio setup. A producer thread
//! sends 100,000 messages with `send_blocking` (it waits for room instead of
//! dropping), a Reader counts them, and both stop with a deadline.
//!
//! `cargo run -p udsipc --example sync_program`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const MESSAGES: u64 = 100_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("sync.sock");

    let received = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&received);
    let reader = udsipc::Reader::builder(&path).start(move |msg: &[u8]| {
        assert_eq!(msg.len(), 64);
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(())
    })?;

    // A small queue, so the producer really waits: the naive loop over
    // `try_send` would drop most of these.
    let writer = Arc::new(
        udsipc::Writer::builder(&path)
            .max_buffered_writes(256)
            .start()?,
    );
    let producer = {
        let writer = Arc::clone(&writer);
        std::thread::spawn(
            move || -> Result<(), udsipc::WriteError<udsipc::bytes::Bytes>> {
                for i in 0..MESSAGES {
                    let mut msg = vec![0u8; 64];
                    msg[..8].copy_from_slice(&i.to_le_bytes());
                    writer.send_blocking(msg)?;
                }
                Ok(())
            },
        )
    };
    producer.join().expect("producer panicked")?;

    writer.stop_blocking(Duration::from_secs(10))?;
    reader.stop_blocking(Duration::from_secs(10))?;
    let m = writer.metrics();
    println!(
        "sent {} delivered {} dropped {}; reader received {}",
        m.sent,
        m.delivered,
        m.dropped,
        received.load(Ordering::Relaxed)
    );
    assert_eq!(m.dropped, 0);
    assert_eq!(received.load(Ordering::Relaxed), MESSAGES);
    Ok(())
}
