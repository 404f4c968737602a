//! What a Writer costs in memory.
//!
//! CI runs the deterministic part: heap bytes counted by a counting global
//! allocator for idle, connected Writers. The resident-memory figures (1,000
//! idle Writers; one busy Writer) are ignored tests that print a report:
//!
//! ```text
//! cargo test --release -p udsipc --test writer_memory -- --ignored --nocapture --test-threads 1
//! ```
//!
//! The other end of every connection is a plain listener in a child process
//! (this test binary re-run as `sink`), which reads and drops everything: the
//! growth measured is the Writers' alone. The tests in this binary take a
//! lock so they never overlap (they count the whole process).

mod common;
mod counting_alloc;

use std::io::{BufRead, Read};
use std::os::unix::net::UnixListener;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::*;
use counting_alloc::{Counting, live_bytes};
use udsipc::Writer;

#[global_allocator]
static GLOBAL: Counting = Counting;

static SERIAL: Mutex<()> = Mutex::new(());
const STOP: Duration = Duration::from_secs(30);
const KIB: usize = 1024;
const SINK_SOCK: &str = "UDSIPC_SINK_SOCK";

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Not a test on its own: the far end of the Writers in this binary. Binds
/// `UDSIPC_SINK_SOCK`, says `listening`, then reads and drops everything on
/// every connection (one thread each) until its stdin closes.
#[test]
#[ignore = "run by the tests of this binary in a child process"]
fn sink() {
    let Ok(path) = std::env::var(SINK_SOCK) else {
        return;
    };
    let listener = UnixListener::bind(&path).unwrap();
    println!("listening");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
                })
                .unwrap();
        }
    });
    let mut lines = std::io::stdin().lock().lines();
    while let Some(Ok(_)) = lines.next() {}
}

/// A sink in a child process, and the path of its socket.
fn start_sink(sock: &TempSock) -> ChildTest {
    let sink = ChildTest::spawn("sink", &[(SINK_SOCK, sock.path.display().to_string())]);
    sink.wait_for("listening", Duration::from_secs(60));
    sink
}

/// `n` Writers, each connected and with one small message delivered (its
/// connection proven, as an idle Writer in service is).
fn idle_writers(sock: &TempSock, n: usize) -> Vec<Writer> {
    let writers: Vec<Writer> = (0..n)
        .map(|_| Writer::builder(&sock.path).start().unwrap())
        .collect();
    for w in &writers {
        w.try_send(b"hello").unwrap();
    }
    eventually("every Writer's message read", || {
        writers.iter().all(|w| w.metrics().delivered == 1)
    });
    writers
}

#[test]
fn an_idle_writer_costs_a_few_kib_of_heap() {
    let _serial = serial();
    const N: usize = 100;
    let sock = temp_sock();
    let sink = start_sink(&sock);
    // One Writer first: the shared runtime and its threads are not a
    // Writer's cost.
    let first = idle_writers(&sock, 1);
    let base = live_bytes();
    let writers = idle_writers(&sock, N);
    let per = live_bytes().saturating_sub(base) / N;
    eprintln!("an idle Writer (connected, one message delivered): {per} heap bytes");
    assert!(per <= 16 * KIB, "{per} heap bytes per idle Writer");
    for w in writers.iter().chain(&first) {
        w.stop_blocking(STOP).unwrap();
    }
    sink.finish();
}

// ---------------------------------------------------------------------------
// Resident memory (ignored: report figures)
// ---------------------------------------------------------------------------

#[test]
#[ignore = "1,000 Writers; run with --ignored (see the module docs)"]
fn rss_of_a_thousand_idle_writers() {
    let _serial = serial();
    const N: usize = 1000;
    let sock = temp_sock();
    let sink = start_sink(&sock);
    let first = idle_writers(&sock, 1);
    let (rss0, heap0) = (rss_kib(), live_bytes());
    let writers = idle_writers(&sock, N);
    let (rss1, heap1) = (rss_kib(), live_bytes());
    eprintln!(
        "{N} idle Writers (baseline RSS {rss0} KiB): RSS +{} KiB = {:.2} KiB per Writer, heap {:.2} KiB per Writer",
        rss1 - rss0,
        (rss1 - rss0) as f64 / N as f64,
        (heap1 - heap0) as f64 / KIB as f64 / N as f64
    );
    for w in writers.iter().chain(&first) {
        w.stop_blocking(STOP).unwrap();
    }
    sink.finish();
}

#[test]
#[ignore = "streams for seconds; run with --ignored (see the module docs)"]
fn rss_of_a_busy_writer() {
    let _serial = serial();
    let sock = temp_sock();
    let sink = start_sink(&sock);
    let warm = idle_writers(&sock, 1);
    let runs = [(64usize, 2_000_000u64), (1024, 500_000), (64 * KIB, 20_000)];
    for bounded in [false, true] {
        for (size, count) in runs {
            let (rss0, heap0) = (rss_kib(), live_bytes());
            let mut b = Writer::builder(&sock.path);
            if bounded {
                b = b
                    .max_buffered_bytes(128 * KIB)
                    .write_buffer_size(64 * KIB as u32);
            }
            let w = b.start().unwrap();
            let payload = vec![0x5au8; size];
            let (mut peak, mut heap_peak) = (rss0, heap0);
            for i in 0..count {
                while w.try_send(&payload).is_err() {
                    std::thread::yield_now();
                }
                if i % 1_000 == 0 {
                    peak = peak.max(rss_kib());
                    heap_peak = heap_peak.max(live_bytes());
                }
            }
            w.stop_blocking(STOP).unwrap();
            let after = rss_kib();
            let how = if bounded {
                "bounded (max_buffered_bytes 64 KiB, write_buffer_size 64 KiB)"
            } else {
                "default"
            };
            eprintln!(
                "a busy Writer, {how}, {count} messages of {size} B as fast as it takes them: RSS peak +{} KiB, heap peak +{} KiB, RSS +{} KiB after its stop",
                peak - rss0,
                heap_peak.saturating_sub(heap0) / KIB,
                after.saturating_sub(rss0)
            );
        }
    }
    for w in &warm {
        w.stop_blocking(STOP).unwrap();
    }
    sink.finish();
}
