//! A long run at full speed with the process's resident memory sampled:
//! what grows, if anything. Ignored (it runs for minutes); it prints a
//! report and fails if the RSS after the warm-up minute keeps growing:
//!
//! ```text
//! UDSIPC_SOAK_SECS=600 cargo test --release -p udsipc --test soak -- --ignored --nocapture
//! ```
//!
//! One Writer sends 1 KiB messages with `send` (waiting for room, never
//! dropping) to a Reader in the same process, as fast as they go; RSS is
//! read from `/proc/self/status` every 10 seconds.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::rss_kib;
use udsipc::{Reader, Writer};

const SIZE: usize = 1024;
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
const WARM_UP: Duration = Duration::from_secs(60);

#[test]
#[ignore = "runs for minutes; see the module docs"]
fn a_long_run_at_full_speed_does_not_grow() {
    let secs: u64 = std::env::var("UDSIPC_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let duration = Duration::from_secs(secs);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("soak.sock");
    let received = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&received);
    let reader = Reader::builder(&path)
        .systemd(false)
        .start(move |m: &[u8]| {
            assert_eq!(m.len(), SIZE);
            count.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
        .unwrap();
    let writer = Writer::builder(&path)
        .runtime(rt.handle().clone())
        .start()
        .unwrap();
    let payload = Bytes::from(vec![0x5a; SIZE]);
    let started = Instant::now();
    let mut samples: Vec<(u64, usize, u64)> = Vec::new(); // (seconds, RSS KiB, received)
    let mut next = started;
    rt.block_on(async {
        while started.elapsed() < duration {
            for _ in 0..10_000 {
                writer.send(payload.clone()).await.unwrap();
            }
            if Instant::now() >= next {
                let at = started.elapsed().as_secs();
                samples.push((at, rss_kib(), received.load(Ordering::Relaxed)));
                let (_, rss, n) = samples.last().unwrap();
                eprintln!("{at:>5} s  RSS {rss:>7} KiB  {n:>12} messages received");
                next += SAMPLE_EVERY;
            }
        }
        writer.stop(Duration::from_secs(30)).await.unwrap();
    });
    reader.stop_blocking(Duration::from_secs(30)).unwrap();
    let m = writer.metrics();
    assert_eq!(received.load(Ordering::Relaxed), m.delivered, "{m:?}");
    let steady: Vec<usize> = samples
        .iter()
        .filter(|(at, ..)| *at >= WARM_UP.as_secs())
        .map(|(_, rss, _)| *rss)
        .collect();
    let (Some(first), Some(max)) = (steady.first(), steady.iter().max()) else {
        eprintln!("shorter than the warm-up: nothing to compare");
        return;
    };
    let total = samples.last().map_or(0, |s| s.2);
    eprintln!(
        "{secs} s, {total} messages of {SIZE} B ({:.0} MB/s): RSS after the warm-up {first} KiB, at most {max} KiB, at the end {} KiB",
        (total * SIZE as u64) as f64 / started.elapsed().as_secs_f64() / 1e6,
        steady.last().unwrap()
    );
    // Allocator noise is a few MiB at most; a leak of one byte per message
    // would be gigabytes.
    assert!(
        *max <= first + 16 * 1024,
        "RSS grew from {first} KiB to {max} KiB after the warm-up"
    );
}
