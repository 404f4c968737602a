//! The fault matrix: for each fault (and two combinations), a udsipc Writer
//! sends 100,000 ledger messages of mixed sizes through the FaultProxy to a
//! udsipc Reader. Every delivered message must be intact, delivered once,
//! and in order within its connection; every loss must be explained by a
//! connection the proxy cut, and fit in the bytes in flight at the cut;
//! the Writer must reconnect after every cut.
//!
//! Each scenario prints its row of the table and writes it to
//! `target/tmp/fault-matrix/<scenario>.md`:
//!
//! ```text
//! cargo nextest run -p udsipc-testkit --test fault_matrix --no-capture
//! cat target/tmp/fault-matrix/*.md
//! ```
//!
//! The soak variant (1,000,000 messages per scenario) is ignored:
//! `UDSIPC_MATRIX_MESSAGES=1000000 cargo test --release -p udsipc-testkit --test fault_matrix -- --include-ignored`
//! runs every scenario at that size.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use rstest::rstest;
use udsipc::{Reader, Writer};
use udsipc_testkit::ledger::{Ledger, LedgerReport};
use udsipc_testkit::proxy::FaultProxy;
use udsipc_testkit::proxy::spec::FaultSpec;

const MESSAGES: u64 = 100_000;
/// The largest message of the mix; its framed size bounds one corrupted
/// message's loss.
const MAX_MESSAGE: usize = 8_000;
const PATIENCE: Duration = Duration::from_secs(120);

fn message_len(rng: &mut SmallRng) -> usize {
    match rng.random_range(0..100) {
        0..80 => rng.random_range(16..=200),
        80..95 => rng.random_range(201..=2_000),
        _ => rng.random_range(2_001..=MAX_MESSAGE),
    }
}

#[derive(Debug)]
struct Row {
    report: LedgerReport,
    writer: udsipc::WriterMetrics,
    cuts: u64,
    in_flight: u64,
    corrupt_events: u64,
    connections: u64,
    elapsed: Duration,
}

async fn run(name: &str, specs: &[&str], messages: u64) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let (front, back) = (dir.path().join("front.sock"), dir.path().join("back.sock"));
    let ledger = Arc::new(Ledger::new());

    let handler_ledger = Arc::clone(&ledger);
    let reader = Reader::builder(&back)
        .systemd(false)
        .max_message_size(1 << 20)
        // Longer than the stall (a frame must complete within it), short
        // enough that connections the proxy leaves half open (reset) end.
        .inactivity_timeout(Duration::from_secs(5))
        .start_with_info(move |body, conn| {
            handler_ledger.delivered(body, conn.id);
            Ok(())
        })
        .unwrap();

    let mut builder = FaultProxy::builder(&front, &back).seed(0x5eed);
    for spec in specs {
        builder = spec.parse::<FaultSpec>().unwrap().apply(builder);
    }
    let proxy = builder.start().await.unwrap();

    let writer = Writer::builder(&front)
        .max_buffered_writes(1_000)
        .write_timeout(Duration::from_secs(1))
        .initial_backoff(Duration::from_millis(5))
        .max_backoff(Duration::from_millis(50))
        .start()
        .unwrap();

    let started = Instant::now();
    let mut rng = SmallRng::seed_from_u64(0x1ed9e5);
    for _ in 0..messages {
        let (id, body) = ledger.message(message_len(&mut rng));
        if writer.send(Bytes::from(body)).await.is_err() {
            ledger.failed(id);
        }
    }
    // Graceful stop: everything queued is written before the Writer closes.
    writer.stop(PATIENCE).await.expect("the writer drains");
    // Then everything in flight reaches the Reader, and every connection ends.
    let deadline = Instant::now() + PATIENCE;
    while proxy.stats().active > 0 || reader.metrics().active_connections > 0 {
        assert!(Instant::now() < deadline, "{name}: connections never ended");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    reader.stop(PATIENCE).await.unwrap();
    proxy.stop().await;

    let events = proxy.events();
    Row {
        report: ledger.report(),
        writer: writer.metrics(),
        cuts: events.iter().filter(|e| e.closed_connection).count() as u64,
        in_flight: events.iter().map(|e| e.in_flight_bytes).sum(),
        corrupt_events: events.iter().filter(|e| e.fault == "corrupt-body").count() as u64,
        connections: proxy.stats().connections,
        elapsed,
    }
}

fn table_row(name: &str, row: &Row) -> String {
    let r = &row.report;
    format!(
        "| {name} | {} | {} | {} | {} | {} ({} B, bound {} B) | {} | {} | {} | {} | {:.1} s |",
        r.sent,
        r.delivered,
        r.dropped,
        r.failed,
        r.lost,
        r.lost_bytes,
        row.in_flight,
        r.corrupted,
        row.cuts,
        row.writer.reconnects,
        row.connections,
        row.elapsed.as_secs_f64()
    )
}

fn record(name: &str, row: &Row) {
    let line = table_row(name, row);
    eprintln!(
        "| fault | sent | delivered | dropped | failed | lost in flight | corrupted | cuts | reconnects | connections | time |"
    );
    eprintln!("{line}");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fault-matrix");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(format!("{name}.md")), format!("{line}\n"));
}

/// Whether the proxy cuts connections in this scenario (so loss is allowed,
/// within the bound).
fn cuts_connections(specs: &[&str]) -> bool {
    specs.iter().any(|s| {
        ["drop-", "refuse", "reset", "corrupt-prefix"]
            .iter()
            .any(|k| s.starts_with(k))
    })
}

fn check(name: &str, specs: &[&str], row: &Row) {
    let r = &row.report;
    assert_eq!(r.duplicated, 0, "{name}: duplicated: {r}");
    assert_eq!(r.reordered, 0, "{name}: reordered within a connection: {r}");
    assert_eq!(r.dropped, 0, "{name}: send() waits for room: {r}");
    assert_eq!(r.failed, 0, "{name}: nothing was handed back: {r}");
    assert_eq!(r.delivered_though_reported, 0, "{name}: {r}");
    // Corruption is caught by the ledger, once per corrupt-body event; a
    // corrupted message counts as lost too (its intact copy never came).
    assert_eq!(r.corrupted, row.corrupt_events, "{name}: corrupted: {r}");
    let lost_to_cuts = r.lost - r.corrupted;
    let corrupt_bytes = r.corrupted * (MAX_MESSAGE as u64 + 2);
    if cuts_connections(specs) {
        assert!(row.cuts > 0, "{name}: the fault never cut a connection");
    }
    if specs.is_empty() {
        assert!(r.is_perfect(), "{name}: graceful stop with no fault: {r}");
    }
    if row.cuts > 0 {
        assert!(
            r.lost_bytes <= row.in_flight + corrupt_bytes,
            "{name}: lost {} B, more than the {} B in flight at the {} cuts: {r}",
            r.lost_bytes,
            row.in_flight,
            row.cuts
        );
        // The Writer came back after every cut (the last cut may come after
        // its last message, with nothing left to reconnect for).
        assert!(
            row.writer.reconnects + 1 >= row.cuts.min(row.connections),
            "{name}: {} reconnects after {} cuts",
            row.writer.reconnects,
            row.cuts
        );
    } else {
        assert_eq!(lost_to_cuts, 0, "{name}: lost with no connection cut: {r}");
    }
    assert_eq!(r.sent, r.delivered + r.lost, "{name}: {r}");
    // The Writer accounts for every accepted message exactly once. (Through
    // the proxy, `delivered` means read by the proxy: what the proxy loses
    // at a cut is the ledger's loss, not the Writer's.)
    let w = &row.writer;
    assert_eq!(
        w.delivered + w.unconfirmed + w.failed + w.discarded,
        r.sent,
        "{name}: writer accounting {w:?}"
    );
    assert_eq!((w.failed, w.discarded), (0, 0), "{name}: {w:?}");
}

#[rstest]
#[case::no_fault("no-fault", &[])]
#[case::fragment("fragment", &["fragment:1-300"])]
#[case::drop_bytes("drop-after-bytes", &["drop-after-bytes:3000000"])]
#[case::drop_frames("drop-after-frames", &["drop-after-frames:9000"])]
#[case::stall("stall", &["stall:200:2500"])]
#[case::latency("latency", &["latency:3"])]
#[case::bandwidth("bandwidth", &["bandwidth:40000000"])]
#[case::corrupt_body("corrupt-body", &["corrupt-body:500"])]
#[case::corrupt_prefix("corrupt-prefix", &["corrupt-prefix:20000"])]
#[case::corrupt_prefix_overflow("corrupt-prefix-overflow", &["corrupt-prefix:30000:overflow"])]
#[case::corrupt_prefix_truncated("corrupt-prefix-truncated", &["corrupt-prefix:30000:truncated"])]
#[case::refuse("refuse", &["refuse:300:400"])]
#[case::reset("reset", &["reset:15000"])]
#[case::fragment_and_drop("fragment+drop", &["fragment:1-64", "drop-after-frames:12000"])]
#[case::latency_bandwidth_reset("latency+bandwidth+reset", &["latency:2", "bandwidth:60000000", "reset:20000"])]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_matrix(#[case] name: &str, #[case] specs: &[&str]) {
    let row = run(name, specs, MESSAGES).await;
    record(name, &row);
    check(name, specs, &row);
}

#[rstest]
#[case::drop_frames("soak-drop-after-frames", &["drop-after-frames:9000"])]
#[case::fragment_and_drop("soak-fragment+drop", &["fragment:1-64", "drop-after-frames:12000"])]
#[case::refuse_and_reset("soak-refuse+reset", &["refuse:2000:500", "reset:50000"])]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: a million messages per scenario; see the module docs"]
async fn fault_matrix_soak(#[case] name: &str, #[case] specs: &[&str]) {
    let messages = std::env::var("UDSIPC_MATRIX_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let row = run(name, specs, messages).await;
    record(name, &row);
    check(name, specs, &row);
}
