//! Several producer threads race every way into a Writer's queue of 1 to 4
//! slots (often with a byte limit): `try_send`, the blocking and async
//! sends with and without a timeout, permits (borrowed and owned, held a
//! moment), and `BufferedWriter`s flushed or dropped; while a stop (long,
//! short or zero deadline, blocking or async) lands among producers that
//! wait for room, and a raw reader that starts late reads everything (or
//! never reads: producers wait on a full queue until the stop frees them).
//!
//! Checked: every producer call returns; every `Ok` message counted once
//! (`delivered + unconfirmed + failed + discarded`); `dropped` is exactly
//! the `BufferFull` answers of calls that count them; the queue ends
//! empty; nothing received twice, out of a producer's order or never
//! accepted; `delivered <= received <= delivered + unconfirmed`. No
//! timing is asserted.
//!
//! Seeded: `UDSIPC_QUEUE_SEED=<seed>` replays a run's rounds (the thread
//! interleaving is the machine's), `UDSIPC_QUEUE_ROUNDS` (default 30).

mod common;

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::hunt::*;
use common::*;
use tokio::runtime::Handle;
use udsipc::{WriteError, Writer, WriterMetricsHandle};

#[derive(Default)]
struct Told {
    accepted: Vec<u64>,
    /// `BufferFull` answers counted as dropped.
    full: u64,
}

fn produce(p: u64, count: u32, mut rng: Rng, w: Arc<Writer>, h: Handle) -> Told {
    let mut told = Told::default();
    let max_len = [12u64, 60, 400][rng.range(0, 2) as usize];
    let mut seq = 0;
    'outer: while seq < count {
        let id = |seq: u32| p << 32 | u64::from(seq);
        let kind = rng.next() % 8;
        if kind == 7 {
            // A BufferedWriter for a few messages, flushed or dropped.
            let cap = rng.range(1, 300) as usize;
            let g = rng.range(1, 12) as u32;
            let flush = rng.chance(60);
            let mut b = w.buffered().with_capacity(cap);
            for _ in 0..g.min(count - seq) {
                let msg = message(id(seq), rng.range(8, max_len) as usize);
                match b.send_blocking(&msg) {
                    Ok(()) => told.accepted.push(id(seq)),
                    Err(WriteError::Stopped(())) => break 'outer,
                    Err(e) => panic!("buffered send: {e}"),
                }
                seq += 1;
            }
            if flush {
                match b.flush_blocking() {
                    Ok(()) | Err(WriteError::Stopped(())) => {}
                    Err(e) => panic!("flush: {e}"),
                }
            }
            drop(b);
            continue;
        }
        let msg = message(id(seq), rng.range(8, max_len) as usize);
        let r: Result<(), WriteError<()>> = match kind {
            0 => w.try_send(&msg),
            1 => w.send_timeout_blocking(&msg, rng.millis(0, 4)),
            2 => w.send_blocking(msg).map_err(|e| e.map(drop)),
            3 => match w.try_reserve() {
                Ok(permit) => {
                    if rng.chance(30) {
                        std::thread::sleep(rng.millis(0, 2));
                    }
                    permit.send(&msg)
                }
                Err(WriteError::BufferFull(())) => {
                    seq += 1;
                    continue;
                }
                Err(e) => Err(e),
            },
            4 => match h.block_on(w.reserve_owned()) {
                Ok(permit) => {
                    if rng.chance(30) {
                        std::thread::sleep(rng.millis(0, 2));
                    }
                    permit.send(msg).map_err(|e| e.map(drop))
                }
                Err(e) => Err(e),
            },
            5 => h
                .block_on(w.send_timeout(msg, rng.millis(0, 4)))
                .map_err(|e| e.map(drop)),
            _ => h.block_on(w.send(&msg)),
        };
        match r {
            Ok(()) => told.accepted.push(id(seq)),
            Err(WriteError::BufferFull(())) => told.full += 1,
            Err(WriteError::Timeout(())) => {}
            Err(WriteError::Stopped(())) => break,
            Err(e) => panic!("producer {p}: unexpected {e}"),
        }
        seq += 1;
    }
    told
}

#[derive(Debug, Clone, Copy)]
enum Stop {
    Long,
    LongAsync,
    Short(Duration),
    Zero,
}

fn round(seed: u64, rt: &tokio::runtime::Runtime) {
    let mut rng = Rng(seed);
    let sock = temp_sock();
    let listener = UnixListener::bind(&sock.path).unwrap();
    // Sometimes the reader never reads (its listener's backlog takes the
    // connection): producers stay blocked on a full queue until the stop.
    let absent = rng.chance(20);
    let late = rng.millis(0, 25);
    // Reads every connection to its end, one after another, from `late`.
    let reader = std::thread::spawn(move || {
        if absent {
            let path = listener.local_addr().unwrap();
            let path = path.as_pathname().unwrap();
            let start = Instant::now();
            while path.exists() && start.elapsed() < PATIENCE {
                std::thread::sleep(Duration::from_millis(1));
            }
            return Vec::new();
        }
        std::thread::sleep(late);
        listener.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let start = Instant::now();
        loop {
            match listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(PATIENCE)).unwrap();
                    let mut wire = Vec::new();
                    let _ = s.read_to_end(&mut wire);
                    let (f, _) = split_frames(&wire);
                    got.extend(f.iter().map(|f| id_of(f)));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let path = listener.local_addr().unwrap();
                    if !path.as_pathname().unwrap().exists() || start.elapsed() > PATIENCE {
                        return got;
                    }
                    std::thread::sleep(Duration::from_micros(300));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    });
    let mut b = Writer::builder(&sock.path)
        .runtime(rt.handle().clone())
        .max_buffered_writes(rng.range(1, 4) as usize)
        .initial_backoff(Duration::from_millis(1))
        .max_backoff(Duration::from_millis(2))
        .write_buffer_size(rng.range(1, 4) as u32 * 1024);
    if rng.chance(60) {
        b = b.max_buffered_bytes(rng.range(20, 600) as usize);
    }
    let w = Arc::new(b.start().unwrap());
    let metrics: WriterMetricsHandle = w.metrics_handle();
    let stop = match rng.next() % 4 {
        _ if absent && rng.chance(50) => Stop::Zero,
        _ if absent => Stop::Short(rng.millis(1, 5)),
        0 => Stop::Long,
        1 => Stop::LongAsync,
        2 => Stop::Short(rng.millis(1, 5)),
        _ => Stop::Zero,
    };
    let ctx = |m: &WriterMetricsHandle| {
        format!(
            "seed {seed:#x} ({stop:?}, reader absent: {absent}; replay: UDSIPC_QUEUE_SEED={seed:#x} UDSIPC_QUEUE_ROUNDS=1); \
             writer {:?}",
            m.get()
        )
    };
    let producers: Vec<_> = (0..rng.range(2, 4))
        .map(|p| {
            let (w, mut r, h) = (Arc::clone(&w), rng.fork(), rt.handle().clone());
            let count = r.range(10, 150) as u32;
            std::thread::spawn(move || produce(p, count, r, w, h))
        })
        .collect();
    let pause = rng.millis(0, 30);
    let stopper = {
        let (w, h) = (Arc::clone(&w), rt.handle().clone());
        std::thread::spawn(move || {
            std::thread::sleep(pause);
            match stop {
                Stop::Long => w.stop_blocking(PATIENCE),
                Stop::LongAsync => h.block_on(w.stop(PATIENCE)),
                Stop::Short(d) => w.stop_blocking(d),
                Stop::Zero => w.stop_blocking(Duration::ZERO),
            }
        })
    };
    let told: Vec<Told> = producers
        .into_iter()
        .map(|t| join_within(t, "a producer", &|| ctx(&metrics)))
        .collect();
    let stopped = join_within(stopper, "the stop", &|| ctx(&metrics));
    match (stop, &stopped) {
        (Stop::Long | Stop::LongAsync, r) => {
            assert!(r.is_ok(), "a long stop failed: {r:?}; {}", ctx(&metrics))
        }
        (_, Ok(()) | Err(udsipc::StopError::DeadlineExceeded { .. })) => {}
        (_, Err(e)) => panic!("unexpected stop error {e}; {}", ctx(&metrics)),
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
    std::fs::remove_file(&sock.path).unwrap();
    let received = join_within(reader, "the reader", &|| ctx(&metrics));
    let m = metrics.get();
    let ctx = ctx(&metrics);
    let accepted: std::collections::HashSet<u64> = told
        .iter()
        .flat_map(|t| t.accepted.iter().copied())
        .collect();
    let full: u64 = told.iter().map(|t| t.full).sum();
    check_received(&received, &accepted, &ctx);
    assert_eq!(m.dropped, full, "{ctx}");
    check_counts(&m, accepted.len() as u64, received.len() as u64, &ctx);
}

#[test]
fn producers_racing_a_stop_into_a_tiny_queue_count_everything_once() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let seed = seed_from("UDSIPC_QUEUE_SEED");
    let rounds = env_u64("UDSIPC_QUEUE_ROUNDS").unwrap_or(30);
    eprintln!("writer_queue_hunt: seed {seed:#x} (UDSIPC_QUEUE_SEED={seed:#x}), {rounds} rounds");
    let mut rng = Rng(seed);
    let mut round_seed = seed;
    for _ in 0..rounds {
        round(round_seed, &rt);
        round_seed = rng.next();
    }
}
