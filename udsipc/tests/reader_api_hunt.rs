//! A Reader under many Writers of this one process (so its order book
//! groups them all), its `Incoming` stream tiny (1 to 3 messages, a few
//! hundred bytes) or a handler, often a `max_connections` below the number
//! of Writers (the others are refused and retry), a consumer that is slow
//! now and then or drops `Incoming` half-way; and a graceful stop that
//! lands while Writers are still connecting (their connections wait in the
//! listen backlog, which the stop accepts and drains) or after they
//! stopped.
//!
//! Checked: every stop returns (no hang, no panic); nothing received twice,
//! out of a Writer's order or never accepted; with a consumer that drains
//! to the end, a long graceful stop is `Ok` and each Writer's
//! `delivered <= received <= delivered + unconfirmed`; every accepted
//! message counted once by its Writer. No timing is asserted.
//!
//! Seeded: `UDSIPC_HUNT_SEED=<seed>` replays a run's rounds (the thread
//! interleaving is the machine's), `UDSIPC_HUNT_SECS` (default 2) bounds
//! its length.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::hunt::*;
use common::*;
use tokio::runtime::Runtime;
use udsipc::{Reader, StopError, WriteError, Writer};

/// Writer `p`: sends `count` messages, then stops (a long deadline while
/// the Reader runs, a short one once it may be gone); what it accepted,
/// and its counters.
fn writer(
    p: u64,
    w: Arc<Writer>,
    mut rng: Rng,
    reader_gone: Arc<std::sync::atomic::AtomicBool>,
) -> (Vec<u64>, udsipc::WriterMetrics, Result<(), StopError>) {
    let mut accepted = Vec::new();
    let count = rng.range(1, 120);
    let max_len = [12u64, 100, 700][rng.range(0, 2) as usize];
    for seq in 0..count {
        let id = p << 32 | seq;
        let m = message(id, rng.range(8, max_len) as usize);
        let r = match rng.next() % 3 {
            0 => w.try_send(&m),
            1 => w.send_timeout_blocking(&m, rng.millis(0, 3)),
            _ => w.send_blocking(&m),
        };
        match r {
            Ok(()) => accepted.push(id),
            Err(WriteError::BufferFull(())) | Err(WriteError::Timeout(())) => {}
            // Stopped by the round once the Reader is gone for good (a
            // Writer keeps its messages while nobody listens).
            Err(WriteError::Stopped(())) => break,
            Err(e) => panic!("writer {p}: {e}"),
        }
        if rng.chance(10) {
            std::thread::sleep(rng.millis(0, 2));
        }
    }
    // (A long stop while the Reader is stopping for good would wait out
    // its deadline: a Writer keeps what it holds while nobody listens.)
    let deadline = if reader_gone.load(std::sync::atomic::Ordering::SeqCst) {
        rng.millis(0, 30)
    } else {
        PATIENCE
    };
    let began = Instant::now();
    let stopped = w.stop_blocking(deadline);
    if began.elapsed() > Duration::from_secs(1) {
        eprintln!(
            "writer {p}: stop({deadline:?}) took {:?}: {stopped:?} {:?}",
            began.elapsed(),
            w.metrics()
        );
    }
    (accepted, w.metrics(), stopped)
}

fn round(seed: u64, rt: &Runtime) -> [u64; 3] {
    let mut rng = Rng(seed);
    let sock = temp_sock();
    let got: Arc<Mutex<Vec<u64>>> = Arc::default();
    let mut b = Reader::builder(&sock.path).runtime(rt.handle().clone());
    let writers = rng.range(1, 8);
    let max_connections = rng.chance(50).then(|| rng.range(1, 4) as usize);
    if let Some(n) = max_connections {
        b = b.max_connections(n);
    }
    // The consumer drops `Incoming` after this many messages.
    let drop_after = rng.chance(15).then(|| rng.range(0, 50) as usize);
    let slow = rng.chance(40);
    let incoming = rng.chance(70);
    let (reader, drain) = if incoming {
        let (reader, mut incoming) = b
            .incoming_capacity(rng.range(1, 3) as usize)
            .incoming_capacity_bytes(rng.range(1, 800) as usize)
            .incoming()
            .unwrap();
        let (got, h, mut rng) = (Arc::clone(&got), rt.handle().clone(), rng.fork());
        let t = std::thread::spawn(move || {
            let mut n = 0;
            loop {
                if drop_after == Some(n) {
                    drop(incoming);
                    return;
                }
                let Some(m) = h.block_on(incoming.recv()) else {
                    return;
                };
                got.lock().unwrap().push(id_of(&m.body));
                n += 1;
                if slow && rng.chance(5) {
                    std::thread::sleep(rng.millis(0, 2));
                }
            }
        });
        (reader, Some(t))
    } else {
        let got = Arc::clone(&got);
        let reader = b
            .start(move |m: &[u8]| {
                got.lock().unwrap().push(id_of(m));
                Ok(())
            })
            .unwrap();
        (reader, None)
    };
    let dropped_consumer = drop_after.is_some() && drain.is_some();
    // The Reader stops early (Writers still connecting and sending), or
    // after every Writer stopped.
    let early = rng.chance(40).then(|| rng.millis(0, 10));
    let reader_gone = Arc::new(std::sync::atomic::AtomicBool::new(early.is_some()));
    let ws: Vec<Arc<Writer>> = (0..writers)
        .map(|_| {
            let w = Writer::builder(&sock.path)
                .max_buffered_writes(rng.range(1, 4) as usize)
                .initial_backoff(Duration::from_millis(1))
                .max_backoff(rng.millis(1, 3))
                .max_attempts(rng.range(3, 40) as u32)
                .start()
                .unwrap();
            Arc::new(w)
        })
        .collect();
    let threads: Vec<_> = (0..writers)
        .map(|p| {
            let (w, rng, gone) = (
                Arc::clone(&ws[p as usize]),
                rng.fork(),
                Arc::clone(&reader_gone),
            );
            std::thread::spawn(move || writer(p, w, rng, gone))
        })
        .collect();
    let ctx = || {
        format!(
            "round seed {seed:#x} ({writers} writers, max_connections {max_connections:?}, \
             incoming {incoming}, drop_after {drop_after:?}, early stop {early:?}), \
             replay: UDSIPC_HUNT_SEED={seed:#x} UDSIPC_HUNT_SECS=0; reader {:?}",
            reader.metrics()
        )
    };
    let stop_reader = |reader: &Reader| {
        reader_gone.store(true, std::sync::atomic::Ordering::SeqCst);
        let began = Instant::now();
        let r = reader.stop_blocking(PATIENCE);
        if began.elapsed() > Duration::from_secs(1) {
            eprintln!("the reader's stop took {:?}: {r:?}", began.elapsed());
        }
        r
    };
    let mut stopped = None;
    if let Some(pause) = early {
        std::thread::sleep(pause);
        stopped = Some(stop_reader(&reader));
        // Nobody listens anymore: the Writers would keep what they hold
        // (and their producers wait) for ever; stopped, they give it up.
        let stops: Vec<_> = ws
            .iter()
            .map(|w| {
                let (w, d) = (Arc::clone(w), rng.millis(0, 20));
                std::thread::spawn(move || w.stop_blocking(d))
            })
            .collect();
        for t in stops {
            let r = join_within(t, "a Writer's stop", &ctx);
            assert!(
                matches!(r, Ok(()) | Err(StopError::DeadlineExceeded { .. })),
                "{r:?}; {}",
                ctx()
            );
        }
    }
    let results: Vec<_> = threads
        .into_iter()
        .map(|t| join_within(t, "a writer", &ctx))
        .collect();
    let stopped = stopped.unwrap_or_else(|| stop_reader(&reader));
    if let Some(t) = drain {
        join_within(t, "the consumer", &ctx);
    }
    if !dropped_consumer {
        assert!(
            stopped.is_ok(),
            "a long graceful stop: {stopped:?}; {}",
            ctx()
        );
    }
    let _ = &reader;
    let received = std::mem::take(&mut *got.lock().unwrap());
    let accepted: HashSet<u64> = results
        .iter()
        .flat_map(|(a, _, _)| a.iter().copied())
        .collect();
    check_received(&received, &accepted, &ctx());
    let mut per_writer: HashMap<u64, u64> = HashMap::new();
    for &id in &received {
        *per_writer.entry(id >> 32).or_default() += 1;
    }
    for (p, (acc, m, stop)) in results.iter().enumerate() {
        let p = p as u64;
        let got = per_writer.get(&p).copied().unwrap_or(0);
        let ctx = format!("writer {p} {m:?} stop {stop:?}; {}", ctx());
        match stop {
            Ok(()) | Err(StopError::DeadlineExceeded { .. }) => {}
            Err(e) => panic!("writer stop: {e}; {ctx}"),
        }
        assert_eq!(m.queue_depth, 0, "{ctx}");
        assert_eq!(
            m.delivered + m.unconfirmed + m.failed + m.discarded,
            acc.len() as u64,
            "every accepted message counted once; {ctx}"
        );
        assert!(
            got <= m.delivered + m.unconfirmed,
            "received {got} > delivered + unconfirmed; {ctx}"
        );
        if !dropped_consumer {
            assert!(m.delivered <= got, "delivered > received {got}; {ctx}");
        }
    }
    [
        accepted.len() as u64,
        received.len() as u64,
        u64::from(early.is_some()),
    ]
}

#[test]
fn many_writers_into_a_tiny_incoming_across_a_graceful_stop_lose_or_reorder_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let seed = seed_from("UDSIPC_HUNT_SEED");
    let secs = env_u64("UDSIPC_HUNT_SECS").unwrap_or(2);
    eprintln!("reader_api_hunt: seed {seed:#x} (UDSIPC_HUNT_SEED={seed:#x}), {secs} s");
    let start = Instant::now();
    let mut rng = Rng(seed);
    let (mut rounds, mut totals) = (0, [0u64; 3]);
    let mut round_seed = seed;
    loop {
        let began = Instant::now();
        let r = round(round_seed, &rt);
        if began.elapsed() > Duration::from_secs(1) {
            eprintln!(
                "reader_api_hunt: round {round_seed:#x} took {:?}",
                began.elapsed()
            );
        }
        totals.iter_mut().zip(r).for_each(|(t, r)| *t += r);
        rounds += 1;
        if start.elapsed() >= Duration::from_secs(secs) {
            break;
        }
        round_seed = rng.next();
    }
    let [accepted, received, early] = totals;
    eprintln!(
        "reader_api_hunt: {rounds} rounds ({early} with an early stop); \
         {accepted} accepted, {received} received"
    );
}
