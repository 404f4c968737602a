//! The Go reference's benchmarks, by name and shape, run against udsipc
//! (`cargo bench -p udsipc-benches --bench go_shapes`). Throughput is payload
//! bytes; allocations per message (a counting global allocator, whole
//! process) are printed after each benchmark.
//!
//! Where a Go benchmark measures something other than its name says, ours
//! keeps the name and says what it measures:
//!
//! - `ReaderWriter/*_{Small,Large}Buffer`: end to end, `Writer::send` (waits
//!   for room) to a Reader handler. The buffer is the Writer's queue
//!   capacity, 1,000 or 10,000 messages; Go raises it to `b.N + 100` whenever
//!   `b.N` is larger, so its two variants usually measure the same thing.
//! - `ReadOnly`: Go pre-fills with its Writer already running, so most of
//!   the transfer happens before its timer starts. Ours times the Reader
//!   alone: pre-encoded 1 KiB frames written by a plain socket in large
//!   writes, until the handler has seen the last one.
//! - `WriteOnly/Enqueue`: Go's `WriteOnly` times only `WriteMessage`
//!   putting a slice on its queue (no IO). Ours is the same: `try_send`
//!   into a queue with room, draining outside the timer.
//!   `WriteOnly/ToSocket` times the Writer's whole path (queue, batching,
//!   `writev`) into a socket whose reader discards bytes without parsing.
//! - `ProtocolOverhead/*`: Go's version computes received minus expected
//!   payload bytes, which is always zero; it is an end-to-end throughput run
//!   at small sizes. Ours is the same run, and prints the real wire overhead
//!   (prefix bytes per payload byte).
//! - `HandlerLatency/*`: not a latency: end-to-end time per message when
//!   the handler sleeps 0, 10 or 100 µs (sleeps overshoot on Linux, in Go
//!   too). It shows what the Reader adds on top of a slow handler. One-way
//!   latency is measured by the table runner (p50/p99 at 10,000 msgs/s).
//! - `MultipleWriters/{1,2,4,8}Writers`: end to end with N Writers (one
//!   connection each) fed round-robin from one thread, as in Go.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use udsipc::frame::{encode_frame, varint_len};
use udsipc_benches::alloc::{Counting, allocations};
use udsipc_benches::harness::{Pair, Tally};
use udsipc_benches::payload;

#[global_allocator]
static ALLOC: Counting = Counting;

const KB: usize = 1024;

fn reader_writer(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("ReaderWriter");
    for (name, size, capacity) in [
        ("SmallMessages_1KB_SmallBuffer", KB, 1_000),
        ("SmallMessages_1KB_LargeBuffer", KB, 10_000),
        ("MediumMessages_10KB_SmallBuffer", 10 * KB, 1_000),
        ("MediumMessages_10KB_LargeBuffer", 10 * KB, 10_000),
        ("LargeMessages_100KB_SmallBuffer", 100 * KB, 1_000),
        ("LargeMessages_100KB_LargeBuffer", 100 * KB, 10_000),
    ] {
        let mut pair = Pair::start(
            &dir.path().join(format!("{name}.sock")),
            1,
            capacity,
            |_| {},
        );
        let msg = payload(size);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(name, |b| {
            b.iter_custom(|iters| pair.round_trip(&msg, iters))
        });
        pair.tally.print(&format!("ReaderWriter/{name}"));
        pair.stop();
    }
    g.finish();
}

fn read_only(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("read-only.sock");
    let pair = Pair::start(&path, 0, 1, |_| {});
    let mut conn = UnixStream::connect(&path).unwrap();
    // 256 frames of 1 KiB, written again and again.
    let mut chunk = Vec::new();
    for _ in 0..256 {
        encode_frame(&payload(KB), &mut chunk);
    }
    let frame_len = chunk.len() / 256;
    let mut tally = Tally::default();
    c.benchmark_group("ReadOnly")
        .throughput(Throughput::Bytes(KB as u64))
        .bench_function("ReadOnly", |b| {
            b.iter_custom(|iters| {
                let target = pair.counter.received() + iters;
                pair.counter.expect(target);
                let before = allocations();
                let start = Instant::now();
                let mut left = iters as usize;
                while left > 0 {
                    let n = left.min(256);
                    conn.write_all(&chunk[..n * frame_len]).unwrap();
                    left -= n;
                }
                pair.counter.wait(target);
                let elapsed = start.elapsed();
                tally.add(allocations() - before, iters);
                elapsed
            })
        });
    tally.print("ReadOnly");
    drop(conn);
    pair.stop();
}

/// Bytes a discarding socket has read, and a waiter for a target.
#[derive(Default)]
struct Discarded {
    got: Mutex<u64>,
    cv: Condvar,
}

impl Discarded {
    fn wait_for(&self, want: u64) {
        let got = self.got.lock().unwrap();
        let (got, timeout) = self
            .cv
            .wait_timeout_while(got, Duration::from_secs(60), |g| *g < want)
            .unwrap();
        assert!(
            !timeout.timed_out(),
            "only {} of {want} bytes arrived",
            *got
        );
    }
}

/// A socket at `path` whose one connection is read without pause and
/// discarded.
fn discarding_sink(path: &std::path::Path) -> Arc<Discarded> {
    let listener = UnixListener::bind(path).unwrap();
    let counter = Arc::new(Discarded::default());
    let sink = Arc::clone(&counter);
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 256 * KB];
        while let Ok(n @ 1..) = conn.read(&mut buf) {
            *sink.got.lock().unwrap() += n as u64;
            sink.cv.notify_all();
        }
    });
    counter
}

fn write_only(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let msg = payload(KB);
    let mut g = c.benchmark_group("WriteOnly");
    g.throughput(Throughput::Bytes(KB as u64));

    // Go's shape: only the enqueueing is timed.
    const CAPACITY: u64 = 1 << 20;
    let pair = Pair::start(
        &dir.path().join("enqueue.sock"),
        1,
        CAPACITY as usize,
        |_| {},
    );
    let mut tally = Tally::default();
    g.bench_function("Enqueue", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(CAPACITY);
                let target = pair.counter.received() + n;
                pair.counter.expect(target);
                let before = allocations();
                let start = Instant::now();
                for _ in 0..n {
                    pair.writers[0].try_send(msg.clone()).unwrap();
                }
                timed += start.elapsed();
                tally.add(allocations() - before, n);
                pair.counter.wait(target);
                left -= n;
            }
            timed
        })
    });
    tally.print("WriteOnly/Enqueue");
    pair.stop();

    // The Writer's whole path into a socket that only discards.
    let path = dir.path().join("to-socket.sock");
    let sink = discarding_sink(&path);
    let writer = udsipc::Writer::builder(&path).start().unwrap();
    let producer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let frame_len = (varint_len(KB as u64) + KB) as u64;
    let mut sent = 0u64;
    let mut tally = Tally::default();
    g.bench_function("ToSocket", |b| {
        b.iter_custom(|iters| {
            let before = allocations();
            let start = Instant::now();
            producer.block_on(async {
                for _ in 0..iters {
                    writer.send(msg.clone()).await.unwrap();
                }
            });
            sent += iters;
            sink.wait_for(sent * frame_len);
            let elapsed = start.elapsed();
            tally.add(allocations() - before, iters);
            elapsed
        })
    });
    tally.print("WriteOnly/ToSocket");
    g.finish();
    writer.stop_blocking(Duration::from_secs(10)).unwrap();
}

fn protocol_overhead(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("ProtocolOverhead");
    for (name, size) in [
        ("1Byte", 1),
        ("100Bytes", 100),
        ("1KB", KB),
        ("10KB", 10 * KB),
    ] {
        let mut pair = Pair::start(&dir.path().join(format!("{name}.sock")), 1, 10_000, |_| {});
        let msg = payload(size);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(name, |b| {
            b.iter_custom(|iters| pair.round_trip(&msg, iters))
        });
        eprintln!(
            "ProtocolOverhead/{name}: wire overhead {:.2}% ({} prefix byte(s) per {size} B message)",
            varint_len(size as u64) as f64 * 100.0 / size as f64,
            varint_len(size as u64)
        );
        pair.tally.print(&format!("ProtocolOverhead/{name}"));
        pair.stop();
    }
    g.finish();
}

fn handler_latency(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("HandlerLatency");
    g.sample_size(10).measurement_time(Duration::from_secs(2));
    for (name, delay) in [
        ("NoDelay_1KB", Duration::ZERO),
        ("10us_1KB", Duration::from_micros(10)),
        ("100us_1KB", Duration::from_micros(100)),
    ] {
        let mut pair = Pair::start(
            &dir.path().join(format!("{name}.sock")),
            1,
            10_000,
            move |_| {
                if !delay.is_zero() {
                    std::thread::sleep(delay);
                }
            },
        );
        let msg = payload(KB);
        g.throughput(Throughput::Bytes(KB as u64));
        g.bench_function(name, |b| {
            b.iter_custom(|iters| pair.round_trip(&msg, iters))
        });
        pair.tally.print(&format!("HandlerLatency/{name}"));
        pair.stop();
    }
    g.finish();
}

fn multiple_writers(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("MultipleWriters");
    for writers in [1usize, 2, 4, 8] {
        let name = format!("{writers}Writers");
        let mut pair = Pair::start(
            &dir.path().join(format!("{name}.sock")),
            writers,
            10_000,
            |_| {},
        );
        let msg = payload(KB);
        g.throughput(Throughput::Bytes(KB as u64));
        g.bench_function(&name, |b| {
            b.iter_custom(|iters| pair.round_trip(&msg, iters))
        });
        pair.tally.print(&format!("MultipleWriters/{name}"));
        pair.stop();
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
}

criterion_group! {
    name = go_shapes;
    config = config();
    targets = reader_writer, read_only, write_only, protocol_overhead, handler_latency, multiple_writers
}
criterion_main!(go_shapes);
