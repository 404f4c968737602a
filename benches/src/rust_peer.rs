//! The Rust side of the peer contract (see [`crate::peer`]): the runner's
//! hidden `peer` subcommand runs one role with this library and prints its
//! [`Report`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::alloc::allocations;
use crate::clock::monotonic_ns;
use crate::inproc::{Done, send_unpaced};
use crate::peer::{PATIENCE, PeerArgs, Report};

/// The Rust side of the contract: runs one role with this library and
/// prints the report.
pub fn run_rust_peer(args: &PeerArgs) -> Result<(), String> {
    let report = match args.role.as_str() {
        _ if args.minimal => crate::minimal_peer::run(args)?,
        _ if args.engine != crate::peer::Engine::Udsipc => crate::engines::run(args)?,
        "reader" => rust_reader(args)?,
        "writer" => rust_writer(args)?,
        other => return Err(format!("--role must be reader or writer, not {other:?}")),
    };
    println!(
        "{}",
        serde_json::to_string(&report).map_err(|e| e.to_string())?
    );
    Ok(())
}

/// Set to `1`, the Rust reader's handler is called inline on the runtime's
/// worker (`handler_may_block(false)`): to measure what isolating a handler
/// that may block costs (an A/B of the same binary).
pub const HANDLER_INLINE_ENV: &str = "UDSIPC_BENCH_HANDLER_INLINE";

fn handler_inline() -> bool {
    std::env::var_os(HANDLER_INLINE_ENV).is_some_and(|v| v == "1")
}

/// First and last delivery times, and latencies when asked for.
#[derive(Debug, Default)]
struct Stamps {
    first: i64,
    last: i64,
    latencies: Vec<i64>,
}

fn rust_reader(args: &PeerArgs) -> Result<Report, String> {
    let count = args.count;
    let done = Done::new(count, args.size.max(if args.latency { 8 } else { 0 }));
    let stamps = Arc::new(Mutex::new(Stamps {
        latencies: Vec::with_capacity(if args.latency { count as usize } else { 0 }),
        ..Stamps::default()
    }));
    let (sink, marks, latency) = (Arc::clone(&done), Arc::clone(&stamps), args.latency);
    // Latency is steady-state too: the warm-up messages (connecting, the
    // first wake-ups of idle threads) are not counted.
    let warm = crate::warmup_messages(count);
    let reader = udsipc::Reader::builder(&args.socket)
        .systemd(false)
        .max_message_size(args.size.max(1) as u64)
        .handler_may_block(!handler_inline())
        .start(move |m: &[u8]| {
            let n = sink.received() + 1;
            if n == 1 || n == count || latency {
                let now = monotonic_ns();
                let mut s = marks.lock().unwrap();
                if n == 1 {
                    s.first = now;
                }
                if n == count {
                    s.last = now;
                }
                if latency && n > warm && m.len() >= 8 {
                    let sent = i64::from_le_bytes(m[..8].try_into().unwrap());
                    s.latencies.push(now - sent);
                }
            }
            sink.record(m.len());
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    println!("ready");
    let cpu_start = crate::cpu::self_ns();
    let arrived = done.wait(PATIENCE);
    let cpu_ns = crate::cpu::self_ns().saturating_sub(cpu_start);
    let (allocs, alloc_msgs) = done.steady_allocs();
    reader
        .stop_blocking(Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    if !arrived {
        return Err(format!(
            "only {} of {count} messages arrived",
            done.received()
        ));
    }
    let mut s = stamps.lock().unwrap();
    let latency_ns = (!s.latencies.is_empty()).then(|| {
        s.latencies.sort_unstable();
        let n = s.latencies.len();
        [s.latencies[n / 2], s.latencies[n * 99 / 100]]
    });
    Ok(Report {
        role: "reader".into(),
        msgs: done.received(),
        bytes: done.bytes()?,
        first_ns: s.first,
        last_ns: s.last,
        allocs,
        alloc_msgs,
        latency_ns,
        cpu_ns: Some(cpu_ns),
        ..Report::default()
    })
}

fn rust_writer(args: &PeerArgs) -> Result<Report, String> {
    let producer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    // Paced, the producer is a plain thread (the telemetry service's
    // shape) and the Writer runs on the library's own runtime. Unpaced, the
    // Writer runs on the producer's current-thread runtime, the shape of
    // the tokio-util column (one thread per side): on 2 cores, a third busy
    // thread (a runtime worker) left the placement of three threads to the
    // scheduler, and some runs fell to a third of the others.
    let mut builder = udsipc::Writer::builder(&args.socket);
    if args.rate.is_none() {
        builder = builder.runtime(producer.handle().clone());
    }
    let writer = builder.start().map_err(|e| e.to_string())?;
    let payload = crate::payload(args.size);
    let warm = crate::warmup_messages(args.count);
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        // Allocations count from the moment the warm-up messages have been
        // written (sends run ahead of writes by up to the queue's capacity).
        let watcher = scope.spawn(|| {
            loop {
                let sent = writer.metrics().sent;
                if sent >= warm.max(1) || done.load(Ordering::Acquire) {
                    return (allocations(), sent);
                }
                // Coarse on purpose: this thread's wake-ups are CPU the
                // writer process is charged for.
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let cpu_start = crate::cpu::self_ns();
        let start_ns = monotonic_ns();
        let sending = send_all(&writer, &producer, &payload, args);
        let stopped = producer.block_on(writer.stop(PATIENCE));
        let end_ns = monotonic_ns();
        let cpu_ns = crate::cpu::self_ns().saturating_sub(cpu_start);
        let end_allocs = allocations();
        done.store(true, Ordering::Release);
        let (mark, sent_at_mark) = watcher.join().expect("watcher thread");
        sending?;
        stopped.map_err(|e| e.to_string())?;
        let m = writer.metrics();
        Ok(Report {
            role: "writer".into(),
            msgs: m.sent,
            bytes: m.sent * args.size as u64,
            start_ns,
            end_ns,
            allocs: end_allocs.saturating_sub(mark),
            alloc_msgs: args.count.saturating_sub(sent_at_mark).max(1),
            cpu_ns: Some(cpu_ns),
            ..Report::default()
        })
    })
}
/// Sends every message: as fast as the Writer takes them, or paced at
/// `--rate` with each message's send time in its first 8 bytes.
fn send_all(
    writer: &udsipc::Writer,
    producer: &tokio::runtime::Runtime,
    payload: &bytes::Bytes,
    args: &PeerArgs,
) -> Result<(), String> {
    let Some(rate) = args.rate else {
        return producer.block_on(send_unpaced(writer, payload, args.count));
    };
    // Paced: each message carries its send time; copied by the Writer.
    let mut msg = vec![0u8; args.size.max(8)];
    let interval = Duration::from_secs_f64(1.0 / rate);
    let begin = Instant::now();
    for i in 0..args.count {
        let due = begin + interval.mul_f64(i as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        msg[..8].copy_from_slice(&monotonic_ns().to_le_bytes());
        while let Err(e) = writer.try_send(&msg) {
            if matches!(e, udsipc::WriteError::Stopped(_)) {
                return Err(e.to_string());
            }
            std::thread::yield_now();
        }
    }
    Ok(())
}
