//! The Writer's races against a raw reader that ends its connections in
//! every way a reader can: after reading everything (a quiet close), with
//! bytes unread (a reset), after `shutdown(SHUT_RD)` (writes fail with
//! `EPIPE` while it still reads what it holds), or at the Writer's own
//! end; while producers race a stop (or the Writer's drop) with every way
//! in: `try_send`, `send`, the blocking forms, and permits held across the
//! stop.
//!
//! The raw reader keeps every byte it read, so the Writer's counters can
//! be checked exactly against it: nothing received twice or out of a
//! producer's order, nothing received that was not accepted,
//! `delivered <= received <= delivered + unconfirmed`, every accepted
//! message counted once (`delivered + unconfirmed + failed + discarded`),
//! a graceful stop with a long deadline `Ok`, and nothing hangs. No timing
//! is asserted.
//!
//! Seeded: `UDSIPC_HUNT_SEED=<seed>` replays a run's rounds (the thread
//! interleaving is the machine's), `UDSIPC_HUNT_SECS` (default 2) bounds
//! its length.

mod common;

use std::io::Read;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use common::hunt::*;
use common::*;
use tokio::runtime::Handle;
use udsipc::{WriteError, Writer, WriterMetricsHandle};

/// Reads what one connection brings, ends it in a way drawn from `rng`,
/// and returns the ids of the messages it read whole, in order.
fn serve(mut s: UnixStream, rng: &mut Rng) -> Vec<u64> {
    s.set_nonblocking(false).unwrap();
    let mut wire = Vec::new();
    let mut buf = [0u8; 8192];
    let mut read = |s: &mut UnixStream, wire: &mut Vec<u8>, budget: usize| {
        while wire.len() < budget {
            let room = (budget - wire.len()).min(buf.len());
            match s.read(&mut buf[..room]) {
                Ok(0) | Err(_) => return,
                Ok(n) => wire.extend_from_slice(&buf[..n]),
            }
        }
    };
    match rng.next() % 10 {
        // To the Writer's end (its stop closes the connection).
        0 => {
            s.set_read_timeout(Some(PATIENCE)).unwrap();
            read(&mut s, &mut wire, usize::MAX);
        }
        // Until idle for a moment, then close: usually everything read (a
        // quiet close), racing the Writer's next write.
        1..=4 => {
            s.set_read_timeout(Some(rng.millis(1, 6))).unwrap();
            read(&mut s, &mut wire, usize::MAX);
        }
        // A few bytes, then close: usually with bytes unread (a reset).
        5..=7 => {
            s.set_read_timeout(Some(rng.millis(1, 20))).unwrap();
            let budget = rng.range(1, 3000) as usize;
            read(&mut s, &mut wire, budget);
        }
        // A few bytes, then shut the reading side and read on what is
        // held (the Writer's writes fail with EPIPE meanwhile).
        _ => {
            s.set_read_timeout(Some(rng.millis(1, 20))).unwrap();
            let budget = rng.range(1, 3000) as usize;
            read(&mut s, &mut wire, budget);
            let _ = s.shutdown(std::net::Shutdown::Read);
            s.set_read_timeout(Some(rng.millis(1, 6))).unwrap();
            read(&mut s, &mut wire, usize::MAX);
        }
    }
    drop(s);
    let (frames, _cut) = split_frames(&wire);
    frames.iter().map(|f| id_of(f)).collect()
}

/// Accepts connections one at a time until `done`.
fn raw_reader(listener: UnixListener, done: Arc<AtomicBool>, mut rng: Rng) -> Vec<u64> {
    listener.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    loop {
        match listener.accept() {
            Ok((s, _)) => got.extend(serve(s, &mut rng)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if done.load(Relaxed) {
                    return got;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

#[derive(Default)]
struct Told {
    accepted: Vec<u64>,
    /// `BufferFull` answers to a message (counted as dropped).
    full: u64,
}

/// Sends `count` messages through APIs drawn from `rng` until the Writer
/// stops.
fn produce(p: u64, count: u32, mut rng: Rng, w: Arc<Writer>, handle: Handle) -> Told {
    let mut told = Told::default();
    let max_len = [16u64, 64, 300, 3000][rng.range(0, 3) as usize];
    for seq in 0..count {
        let id = p << 32 | u64::from(seq);
        let m = message(id, rng.range(8, max_len) as usize);
        let r: Result<(), WriteError<()>> = match rng.next() % 9 {
            0 => w.try_send(&m),
            1 => w.try_send(m).map_err(|e| e.map(drop)),
            2 => handle.block_on(w.send(&m)),
            3 => w.send_blocking(m).map_err(|e| e.map(drop)),
            4 => w.send_timeout_blocking(&m, rng.millis(0, 3)),
            5 => handle
                .block_on(w.send_timeout(m, rng.millis(0, 3)))
                .map_err(|e| e.map(drop)),
            // A permit held for a moment (maybe across the stop).
            6 => match w.try_reserve() {
                Ok(permit) => {
                    if rng.chance(30) {
                        std::thread::sleep(rng.millis(0, 2));
                    }
                    permit.send(&m)
                }
                Err(WriteError::BufferFull(())) => continue, // no message, no drop
                Err(e) => Err(e),
            },
            7 => match handle.block_on(w.reserve()) {
                Ok(permit) => {
                    if rng.chance(30) {
                        std::thread::sleep(rng.millis(0, 2));
                    }
                    permit.send(m).map_err(|e| e.map(drop))
                }
                Err(e) => Err(e),
            },
            _ => match handle.block_on(w.reserve_owned()) {
                Ok(permit) => std::thread::spawn(move || permit.send(m).map_err(|e| e.map(drop)))
                    .join()
                    .unwrap(),
                Err(e) => Err(e),
            },
        };
        match r {
            Ok(()) => told.accepted.push(id),
            Err(WriteError::BufferFull(())) => told.full += 1,
            Err(WriteError::Timeout(())) => {}
            Err(WriteError::Stopped(())) => break,
            Err(e) => panic!("producer {p}: unexpected {e}"),
        }
        if rng.chance(20) {
            // Idle now and then: the next message is written by its
            // producer itself, on a connection the reader may be closing.
            std::thread::sleep(rng.millis(0, 2));
        }
    }
    told
}

#[derive(Debug, Clone, Copy)]
enum End {
    /// `stop(PATIENCE)` after the producers: must be `Ok`.
    StopAfter,
    /// `stop(PATIENCE)` while they send: must be `Ok`.
    StopRacing,
    /// `stop` with a tiny deadline while they send.
    StopShort(Duration),
    /// The handle dropped while they send (the last one lingers).
    Drop,
}

fn round(seed: u64, rt: &tokio::runtime::Runtime) {
    let mut rng = Rng(seed);
    let sock = temp_sock();
    let listener = UnixListener::bind(&sock.path).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (done, rng) = (Arc::clone(&done), rng.fork());
        std::thread::spawn(move || raw_reader(listener, done, rng))
    };
    let mut b = Writer::builder(&sock.path)
        .runtime(rt.handle().clone())
        .max_buffered_writes(rng.range(1, 8) as usize)
        .initial_backoff(Duration::from_millis(1))
        .max_backoff(rng.millis(1, 4))
        .max_attempts(rng.range(1, 4) as u32)
        .write_buffer_size(rng.range(1, 16) as u32 * 1024)
        .linger(rng.millis(0, 20));
    if rng.chance(30) {
        b = b.max_buffered_bytes(rng.range(100, 4000) as usize);
    }
    let w = Arc::new(b.start().unwrap());
    let metrics: WriterMetricsHandle = w.metrics_handle();
    let end = match rng.next() % 4 {
        0 => End::StopAfter,
        1 => End::StopRacing,
        2 => End::StopShort(rng.millis(0, 5)),
        _ => End::Drop,
    };
    let ctx = |m: &WriterMetricsHandle| {
        format!(
            "round seed {seed:#x} ({end:?}), replay: UDSIPC_HUNT_SEED={seed:#x} UDSIPC_HUNT_SECS=0; writer {:?}",
            m.get()
        )
    };
    let producers: Vec<_> = (0..rng.range(1, 3))
        .map(|p| {
            let (w, mut rng, h) = (Arc::clone(&w), rng.fork(), rt.handle().clone());
            let count = rng.range(20, 300) as u32;
            std::thread::spawn(move || produce(p, count, rng, w, h))
        })
        .collect();
    let stopper = {
        let w = Arc::clone(&w);
        let h = rt.handle().clone();
        let pause = rng.millis(0, 30);
        std::thread::spawn(move || match end {
            End::StopAfter => None,
            End::StopRacing => {
                std::thread::sleep(pause);
                Some(h.block_on(w.stop(PATIENCE)))
            }
            End::StopShort(d) => {
                std::thread::sleep(pause);
                Some(w.stop_blocking(d))
            }
            End::Drop => {
                std::thread::sleep(pause);
                drop(w);
                None
            }
        })
    };
    let told: Vec<Told> = producers
        .into_iter()
        .map(|t| join_within(t, "a producer", &|| ctx(&metrics)))
        .collect();
    let stopped = join_within(stopper, "the stopper", &|| ctx(&metrics));
    match (end, stopped) {
        (End::StopRacing, Some(r)) => {
            assert!(r.is_ok(), "a long stop failed: {r:?}; {}", ctx(&metrics))
        }
        (End::StopShort(_), Some(r)) => match r {
            Ok(()) | Err(udsipc::StopError::DeadlineExceeded { .. }) => {}
            Err(e) => panic!("unexpected stop error {e}; {}", ctx(&metrics)),
        },
        _ => {}
    }
    if let End::StopAfter = end {
        let r = w.stop_blocking(PATIENCE);
        assert!(r.is_ok(), "a long stop failed: {r:?}; {}", ctx(&metrics));
    }
    drop(w);
    let start = Instant::now();
    while !metrics.is_finished() {
        assert!(
            start.elapsed() < PATIENCE,
            "the Writer never finished; {}",
            ctx(&metrics)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    done.store(true, Relaxed);
    let received = join_within(reader, "the reader", &|| ctx(&metrics));
    let m = metrics.get();
    let ctx = ctx(&metrics);
    let accepted: Vec<u64> = told
        .iter()
        .flat_map(|t| t.accepted.iter().copied())
        .collect();
    let accepted_set: std::collections::HashSet<u64> = accepted.iter().copied().collect();
    let full: u64 = told.iter().map(|t| t.full).sum();
    check_received(&received, &accepted_set, &ctx);
    assert_eq!(m.dropped, full, "{ctx}");
    check_counts(&m, accepted.len() as u64, received.len() as u64, &ctx);
}

#[test]
fn writer_races_against_a_raw_reader_lose_duplicate_or_miscount_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let seed = seed_from("UDSIPC_HUNT_SEED");
    let secs = env_u64("UDSIPC_HUNT_SECS").unwrap_or(2);
    eprintln!("writer_hunt: seed {seed:#x} (UDSIPC_HUNT_SEED={seed:#x}), {secs} s");
    let start = Instant::now();
    let mut rng = Rng(seed);
    let mut rounds = 0;
    // One round at least; the first round's seed is the run's seed.
    let mut round_seed = seed;
    loop {
        round(round_seed, &rt);
        rounds += 1;
        if start.elapsed() >= Duration::from_secs(secs) {
            break;
        }
        round_seed = rng.next();
    }
    eprintln!("writer_hunt: {rounds} rounds");
}

/// A reader that reads every byte of a drain and closes at once: whether
/// the Writer saw the reads first or the hang-up (a quiet close, which now
/// settles the messages through the connection's end), every message is
/// delivered, nothing is unconfirmed or reported, and the stop is `Ok`.
#[test]
fn a_reader_that_reads_a_drain_whole_and_closes_at_once_is_a_quiet_end() {
    for round in 0..10u64 {
        let sock = temp_sock();
        let listener = UnixListener::bind(&sock.path).unwrap();
        let errors = Errors::default();
        let w = Writer::builder(&sock.path)
            .max_buffered_writes(100)
            .initial_backoff(Duration::from_millis(1))
            .max_backoff(Duration::from_millis(1))
            .on_error(errors.writer_callback())
            .start()
            .unwrap();
        let msgs: Vec<Vec<u8>> = (0..50)
            .map(|i| message(i, 8 + (i as usize * 37) % 500))
            .collect();
        let total: usize = frames(&msgs.iter().map(|m| &m[..]).collect::<Vec<_>>()).len();
        let (mut s, _) = listener.accept().unwrap();
        for m in &msgs {
            w.try_send(m).unwrap();
        }
        let w = Arc::new(w);
        let stopping = {
            let w = Arc::clone(&w);
            std::thread::spawn(move || w.stop_blocking(PATIENCE))
        };
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut wire = vec![0u8; total];
        s.read_exact(&mut wire).unwrap();
        drop(s);
        let stopped = stopping.join().unwrap();
        let m = w.metrics();
        assert!(stopped.is_ok(), "round {round}: {stopped:?} {m:?}");
        assert_eq!(
            (m.delivered, m.unconfirmed, m.failed),
            (50, 0, 0),
            "round {round}: {m:?}"
        );
        assert_eq!(errors.list(), Vec::<String>::new(), "round {round}");
        let (got, _) = split_frames(&wire);
        assert_eq!(got, msgs);
    }
}
