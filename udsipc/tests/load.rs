//! Many concurrent Writers into one Reader, with a ledger: every message
//! carries its writer's id, its sequence number and a checksum, and the
//! Reader's handler checks each one off. Nothing may be lost, duplicated,
//! reordered within a writer or corrupted, and every connection is served.
//!
//! The writers are real `udsipc::Writer`s in a child process (this test
//! binary re-run as `writer_fleet`), so the figures printed are the Reader
//! process's own. CI runs 50 writers x 200 messages; the full load is
//! ignored:
//!
//! ```text
//! cargo test --release -p udsipc --test load -- --ignored --nocapture
//! ```

mod common;

use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use common::*;
use udsipc::{Reader, Writer};

const SOCK: &str = "UDSIPC_LOAD_SOCK";
const WRITERS: &str = "UDSIPC_LOAD_WRITERS";
const MESSAGES: &str = "UDSIPC_LOAD_MESSAGES";
const STOP: Duration = Duration::from_secs(60);

/// FNV-1a, 64 bits: enough to catch any corruption a test can cause.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `writer id (4) | seq (4) | filler (0..=199) | checksum of all before (8)`.
fn message(writer: u32, seq: u32) -> Vec<u8> {
    let filler = ((writer as usize).wrapping_mul(31) + seq as usize * 7) % 200;
    let mut m = Vec::with_capacity(16 + filler);
    m.extend_from_slice(&writer.to_le_bytes());
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend((0..filler).map(|i| (i as u32 ^ seq ^ writer) as u8));
    let sum = checksum(&m);
    m.extend_from_slice(&sum.to_le_bytes());
    m
}

/// Checks a message; `Some((writer, seq))` when intact.
fn parse(m: &[u8]) -> Option<(u32, u32)> {
    let (body, sum) = m.split_at_checked(m.len().checked_sub(8)?)?;
    if body.len() < 8 || checksum(body).to_le_bytes() != sum {
        return None;
    }
    let writer = u32::from_le_bytes(body[..4].try_into().ok()?);
    let seq = u32::from_le_bytes(body[4..8].try_into().ok()?);
    (message(writer, seq) == m).then_some((writer, seq))
}

/// What the Reader's handler saw.
struct Ledger {
    /// Per writer, the next sequence number expected.
    next: Vec<AtomicU32>,
    /// One bit per (writer, seq).
    seen: Vec<AtomicU64>,
    messages: u32,
    corrupt: AtomicU64,
    duplicated: AtomicU64,
    out_of_order: AtomicU64,
}

impl Ledger {
    fn new(writers: u32, messages: u32) -> Self {
        let bits = writers as usize * messages as usize;
        Self {
            next: (0..writers).map(|_| AtomicU32::new(0)).collect(),
            seen: (0..bits.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            messages,
            corrupt: AtomicU64::new(0),
            duplicated: AtomicU64::new(0),
            out_of_order: AtomicU64::new(0),
        }
    }

    fn check_off(&self, m: &[u8]) {
        let Some((w, seq)) =
            parse(m).filter(|&(w, seq)| (w as usize) < self.next.len() && seq < self.messages)
        else {
            self.corrupt.fetch_add(1, Relaxed);
            return;
        };
        let bit = w as usize * self.messages as usize + seq as usize;
        let mask = 1u64 << (bit % 64);
        if self.seen[bit / 64].fetch_or(mask, Relaxed) & mask != 0 {
            self.duplicated.fetch_add(1, Relaxed);
        }
        if self.next[w as usize].swap(seq + 1, Relaxed) != seq {
            self.out_of_order.fetch_add(1, Relaxed);
        }
    }

    fn missing(&self) -> u64 {
        let total = self.next.len() as u64 * u64::from(self.messages);
        let seen: u64 = self
            .seen
            .iter()
            .map(|b| u64::from(b.load(Relaxed).count_ones()))
            .sum();
        total - seen
    }
}

/// Not a test on its own: the writer process. Starts `UDSIPC_LOAD_WRITERS`
/// Writers, says `ready`; on `go` each writes `UDSIPC_LOAD_MESSAGES`
/// messages (interleaved across writers); when stdin closes, stops them all
/// (draining) and prints their summed metrics.
#[test]
#[ignore = "run by the load tests in a child process"]
fn writer_fleet() {
    let (Ok(path), Ok(w), Ok(m)) = (
        std::env::var(SOCK),
        std::env::var(WRITERS),
        std::env::var(MESSAGES),
    ) else {
        return;
    };
    let (w, m): (u32, u32) = (w.parse().unwrap(), m.parse().unwrap());
    let writers: Vec<Writer> = (0..w)
        .map(|_| {
            Writer::builder(&path)
                .max_buffered_writes(m as usize + 1)
                .start()
                .unwrap()
        })
        .collect();
    println!("ready");
    let mut lines = std::io::stdin().lock().lines();
    while let Some(Ok(line)) = lines.next() {
        if line == "go" {
            for seq in 0..m {
                for (id, writer) in writers.iter().enumerate() {
                    writer.try_send(&message(id as u32, seq)).unwrap();
                }
            }
            println!("written");
        }
    }
    let (mut sent, mut dropped, mut failed, mut discarded, mut reconnects) = (0, 0, 0, 0, 0);
    for writer in &writers {
        writer.stop_blocking(STOP).unwrap();
        let s = writer.metrics();
        sent += s.sent;
        dropped += s.dropped;
        failed += s.failed;
        discarded += s.discarded;
        reconnects += s.reconnects;
    }
    println!(
        "stats {sent} {dropped} {failed} {discarded} {reconnects} {}",
        vm_hwm_kib()
    );
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The figures of one run.
struct Run {
    elapsed: Duration,
    reader_hwm_kib: u64,
    writers_hwm_kib: u64,
    failed: u64,
    reconnects: u64,
}

/// Runs `writers` x `messages` through one Reader and asserts the ledger.
fn load(writers: u32, messages: u32, patience: Duration) -> Run {
    let sock = temp_sock();
    let ledger = Arc::new(Ledger::new(writers, messages));
    let errs = Errors::default();
    let handler_ledger = Arc::clone(&ledger);
    let reader = Reader::builder(&sock.path)
        .systemd(false)
        .on_error(errs.reader_callback())
        .start(move |m: &[u8]| {
            handler_ledger.check_off(m);
            Ok(())
        })
        .unwrap();
    let mut fleet = ChildTest::spawn(
        "writer_fleet",
        &[
            (SOCK, sock.path.display().to_string()),
            (WRITERS, writers.to_string()),
            (MESSAGES, messages.to_string()),
        ],
    );
    fleet.wait_for("ready", patience);
    let total = u64::from(writers) * u64::from(messages);
    let started = Instant::now();
    fleet.say("go");
    fleet.wait_for("written", patience);
    while reader.metrics().received < total {
        assert!(
            started.elapsed() < patience,
            "{} of {total} messages after {patience:?}",
            reader.metrics().received
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = started.elapsed();
    drop(fleet.stdin.take());
    let stats = fleet.wait_for("stats", patience);
    let status = fleet.child.wait().unwrap();
    assert!(status.success(), "writer fleet: {status}");
    let s: Vec<u64> = stats
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    let (sent, dropped, failed, discarded, reconnects, writers_hwm_kib) =
        (s[0], s[1], s[2], s[3], s[4], s[5]);
    reader.stop_blocking(STOP).unwrap();

    let m = reader.metrics();
    assert_eq!(ledger.corrupt.load(Relaxed), 0, "corrupt messages");
    assert_eq!(ledger.duplicated.load(Relaxed), 0, "duplicated messages");
    assert_eq!(ledger.out_of_order.load(Relaxed), 0, "reordered messages");
    assert_eq!(ledger.missing(), 0, "lost messages");
    assert_eq!((m.received, m.errors), (total, 0), "{:?}", errs.list());
    assert_eq!((sent, dropped, discarded), (total, 0, 0));
    assert!(
        m.connections >= u64::from(writers),
        "every writer connected and was served: {m:?}"
    );
    Run {
        elapsed,
        reader_hwm_kib: vm_hwm_kib(),
        writers_hwm_kib,
        failed,
        reconnects,
    }
}

fn report(writers: u32, messages: u32, run: &Run) {
    let total = f64::from(writers) * f64::from(messages);
    eprintln!(
        "{writers} writers x {messages} messages: all {total} delivered intact in {:.2} s \
         ({:.0} msg/s); peak RSS reader {} KiB, writers {} KiB; failed writes retried {}, reconnects {}",
        run.elapsed.as_secs_f64(),
        total / run.elapsed.as_secs_f64(),
        run.reader_hwm_kib,
        run.writers_hwm_kib,
        run.failed,
        run.reconnects
    );
}

#[test]
fn fifty_writers_deliver_every_message_once_intact_and_in_order() {
    let run = load(50, 200, PATIENCE * 3);
    report(50, 200, &run);
}

#[test]
#[ignore = "a million messages over 1,000 connections; run with --ignored (see the module docs)"]
fn a_thousand_writers_deliver_a_million_messages_once_intact_and_in_order() {
    let run = load(1000, 1000, Duration::from_secs(600));
    report(1000, 1000, &run);
}

#[test]
fn the_ledger_catches_corruption_loss_duplicates_and_reordering() {
    let ledger = Ledger::new(2, 3);
    for seq in [0, 2, 2] {
        ledger.check_off(&message(1, seq));
    }
    let mut bad = message(0, 0);
    bad[9] ^= 1;
    ledger.check_off(&bad);
    assert_eq!(ledger.corrupt.load(Relaxed), 1);
    assert_eq!(ledger.duplicated.load(Relaxed), 1);
    assert_eq!(ledger.out_of_order.load(Relaxed), 2);
    assert_eq!(ledger.missing(), 4);
}
