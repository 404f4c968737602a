//! Every sending API, async and blocking, from every kind of thread a
//! caller may be on, into a Writer with a tiny queue (1 to 3 slots, often a
//! small byte bound, so that producers wait all the time), while a udsipc
//! Reader restarts under it (graceful stops, a new Reader on the same
//! path) and the Writer is stopped (after, racing, with a short deadline)
//! or dropped.
//!
//! The producers' contexts: a plain thread (no runtime); a worker of a
//! multi-thread runtime (blocking forms called directly and inside
//! `block_in_place`); a `spawn_blocking` task; a current-thread runtime's
//! own thread (a blocking form cannot wait there: a full queue refuses);
//! a task on the Writer's own current-thread runtime when the Writer runs
//! on one. The APIs: `try_send`, `send`, `send_timeout` and
//! `send_timeout_blocking` (0, a few ms, huge, `Duration::MAX`),
//! `send_blocking`, borrowed and owned payloads, permits (borrowed, owned,
//! dropped unspent, held across a stop, moved across threads),
//! `BufferedWriter` (async and blocking sends and flushes, dropped
//! unflushed).
//!
//! Checked: every call returns (no hang, no panic); nothing received twice,
//! out of a producer's order or never accepted; every accepted message
//! counted once (`delivered + unconfirmed + failed + discarded`);
//! `delivered <= received <= delivered + unconfirmed`; the queue ends
//! empty; `dropped` is at least the refusals that count and at most those
//! plus the buffered refusals that may; graceful stops with a long
//! deadline are `Ok`. No timing is asserted.
//!
//! Seeded: `UDSIPC_HUNT_SEED=<seed>` replays a run's rounds (the thread
//! interleaving is the machine's), `UDSIPC_HUNT_SECS` (default 2) bounds
//! its length.

mod common;

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::hunt::*;
use common::*;
use tokio::runtime::{Handle, Runtime};
use udsipc::{Reader, StopError, WriteError, Writer, WriterMetricsHandle};

/// What the calls of one operation answered.
#[derive(Default, Debug)]
struct Told {
    accepted: Vec<u64>,
    /// `BufferFull` answers counted as dropped.
    full: u64,
    /// `BufferFull` answers that may be counted (a `BufferedWriter`'s).
    maybe_full: u64,
    stopped: bool,
}

impl Told {
    fn answer(&mut self, id: u64, r: Result<(), WriteError<()>>, counted: bool) {
        match r {
            Ok(()) => self.accepted.push(id),
            Err(WriteError::BufferFull(())) if counted => self.full += 1,
            Err(WriteError::BufferFull(())) => self.maybe_full += 1,
            Err(WriteError::Timeout(())) => {}
            Err(WriteError::Stopped(())) => self.stopped = true,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    fn merge(&mut self, o: Told) {
        self.accepted.extend(o.accepted);
        self.full += o.full;
        self.maybe_full += o.maybe_full;
        self.stopped |= o.stopped;
    }
}

type AsyncOp = Pin<Box<dyn Future<Output = Told> + Send>>;
type SyncOp = Box<dyn FnOnce() -> Told + Send>;

enum Op {
    Async(AsyncOp),
    Blocking(SyncOp),
}

/// A timeout drawn from `rng`: zero, a few ms, huge, or `Duration::MAX`.
fn timeout(rng: &mut Rng) -> Duration {
    match rng.next() % 5 {
        0 => Duration::ZERO,
        1 | 2 => rng.millis(0, 3),
        3 => Duration::from_secs(1 << 40),
        _ => Duration::MAX,
    }
}

/// Checks that a message handed back is the one sent.
fn back_intact<T: AsRef<[u8]>>(
    r: Result<(), WriteError<T>>,
    sent: &[u8],
) -> Result<(), WriteError<()>> {
    r.map_err(|e| e.map(|b| assert_eq!(b.as_ref(), sent, "a refused message came back changed")))
}

/// The next operation of producer `p`, numbering its messages from `*seq`.
fn next_op(p: u64, seq: &mut u32, rng: &mut Rng, w: &Arc<Writer>, max_len: u64) -> Op {
    let mut id = || {
        let id = p << 32 | u64::from(*seq);
        *seq += 1;
        id
    };
    let w = Arc::clone(w);
    let kind = rng.next() % 16;
    let len = rng.range(8, max_len) as usize;
    let pause = rng.chance(30).then(|| rng.millis(0, 2));
    let t = timeout(rng);
    match kind {
        0 => {
            let id = id();
            let m = message(id, len);
            Op::Blocking(Box::new(move || {
                let mut told = Told::default();
                told.answer(id, w.try_send(&m), true);
                told
            }))
        }
        1 => {
            let id = id();
            let m = message(id, len);
            Op::Blocking(Box::new(move || {
                let mut told = Told::default();
                let r = back_intact(w.send_blocking(m.clone()), &m);
                told.answer(id, r, true);
                told
            }))
        }
        2 => {
            let id = id();
            let m = message(id, len);
            Op::Blocking(Box::new(move || {
                let mut told = Told::default();
                told.answer(id, w.send_timeout_blocking(&m, t), true);
                told
            }))
        }
        3 => {
            let id = id();
            let m = message(id, len);
            Op::Blocking(Box::new(move || {
                let mut told = Told::default();
                let r = w.send_timeout_blocking(bytes_of(&m), t);
                told.answer(id, back_intact(r, &m), true);
                told
            }))
        }
        4 => {
            let id = id();
            let m = message(id, len);
            Op::Async(Box::pin(async move {
                let mut told = Told::default();
                told.answer(id, w.send(&m).await, false);
                told
            }))
        }
        5 => {
            let id = id();
            let m = message(id, len);
            Op::Async(Box::pin(async move {
                let mut told = Told::default();
                let r = w.send(m.clone().into_boxed_slice()).await;
                told.answer(id, back_intact(r, &m), false);
                told
            }))
        }
        6 => {
            let id = id();
            let m = message(id, len);
            Op::Async(Box::pin(async move {
                let mut told = Told::default();
                let r = w.send_timeout(bytes_of(&m), t).await;
                told.answer(id, back_intact(r, &m), false);
                told
            }))
        }
        7 => {
            let id = id();
            let m = message(id, len);
            Op::Async(Box::pin(async move {
                let mut told = Told::default();
                told.answer(id, w.send_timeout(&m, t).await, false);
                told
            }))
        }
        // A borrowed permit, held a moment (maybe across a stop), maybe
        // dropped unspent.
        8 => {
            let unspent = rng.chance(20);
            let id = if unspent { 0 } else { id() };
            let m = message(id, len);
            Op::Blocking(Box::new(move || {
                let mut told = Told::default();
                match w.try_reserve() {
                    Ok(permit) => {
                        if let Some(d) = pause {
                            std::thread::sleep(d);
                        }
                        if !unspent {
                            told.answer(id, permit.send(&m), false);
                        }
                    }
                    Err(WriteError::BufferFull(())) => {} // no message, not counted
                    Err(WriteError::Stopped(())) => told.stopped = true,
                    Err(e) => panic!("try_reserve: {e}"),
                }
                told
            }))
        }
        9 => {
            let unspent = rng.chance(20);
            let id = if unspent { 0 } else { id() };
            let m = message(id, len);
            Op::Async(Box::pin(async move {
                let mut told = Told::default();
                match w.reserve().await {
                    Ok(permit) => {
                        if let Some(d) = pause {
                            tokio::time::sleep(d).await;
                        }
                        if !unspent {
                            let r = back_intact(permit.send(bytes_of(&m)), &m);
                            told.answer(id, r, false);
                        }
                    }
                    Err(WriteError::Stopped(())) => told.stopped = true,
                    Err(e) => panic!("reserve: {e}"),
                }
                told
            }))
        }
        // An owned permit spent on another thread, or on a task.
        10 => {
            let id = id();
            let m = message(id, len);
            let on_thread = rng.chance(50);
            Op::Async(Box::pin(async move {
                let mut told = Told::default();
                match w.reserve_owned().await {
                    Ok(permit) => {
                        let r = if on_thread {
                            std::thread::spawn(move || {
                                if let Some(d) = pause {
                                    std::thread::sleep(d);
                                }
                                let r = permit.send(m.clone());
                                back_intact(r, &m)
                            })
                            .join()
                            .unwrap()
                        } else {
                            tokio::spawn(async move { back_intact(permit.send(m.clone()), &m) })
                                .await
                                .unwrap()
                        };
                        told.answer(id, r, false);
                    }
                    Err(WriteError::Stopped(())) => told.stopped = true,
                    Err(e) => panic!("reserve_owned: {e}"),
                }
                told
            }))
        }
        // A BufferedWriter, async or blocking, flushed or dropped.
        _ => {
            let cap = rng.range(1, 300) as usize;
            let n = rng.range(1, 12);
            let flush = rng.chance(60);
            let msgs: Vec<(u64, Vec<u8>)> = (0..n)
                .map(|_| {
                    let id = id();
                    (id, message(id, rng.range(8, max_len) as usize))
                })
                .collect();
            if kind < 13 {
                Op::Blocking(Box::new(move || {
                    let mut told = Told::default();
                    let mut b = w.buffered().with_capacity(cap);
                    for (id, m) in &msgs {
                        told.answer(*id, b.send_blocking(m), false);
                        if told.stopped {
                            break;
                        }
                    }
                    if flush && !told.stopped {
                        match b.flush_blocking() {
                            Ok(()) => {}
                            Err(WriteError::BufferFull(())) | Err(WriteError::Stopped(())) => {}
                            Err(e) => panic!("flush_blocking: {e}"),
                        }
                    }
                    drop(b);
                    told
                }))
            } else {
                Op::Async(Box::pin(async move {
                    let mut told = Told::default();
                    let mut b = w.buffered().with_capacity(cap);
                    for (id, m) in &msgs {
                        told.answer(*id, b.send(m).await, false);
                        if told.stopped {
                            break;
                        }
                    }
                    if flush && !told.stopped {
                        match b.flush().await {
                            Ok(()) | Err(WriteError::Stopped(())) => {}
                            Err(e) => panic!("flush: {e}"),
                        }
                    }
                    drop(b);
                    told
                }))
            }
        }
    }
}

fn bytes_of(m: &[u8]) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(m)
}

/// Where a producer runs.
#[derive(Debug, Clone, Copy)]
enum Ctx {
    /// A plain thread; async operations through `Handle::block_on`.
    Thread,
    /// A task on a worker of the multi-thread runtime.
    Worker,
    /// A `spawn_blocking` task.
    Blocking,
    /// A current-thread runtime's own thread.
    CurrentThread,
    /// A task on the Writer's own current-thread runtime.
    WriterRuntime,
}

struct Producer {
    p: u64,
    count: u32,
    rng: Rng,
    w: Arc<Writer>,
    max_len: u64,
    seq: u32,
    told: Told,
}

impl Producer {
    fn next(&mut self) -> Option<Op> {
        (self.seq < self.count && !self.told.stopped)
            .then(|| next_op(self.p, &mut self.seq, &mut self.rng, &self.w, self.max_len))
    }

    fn run_sync(mut self, h: &Handle) -> Told {
        while let Some(op) = self.next() {
            let told = match op {
                Op::Async(f) => h.block_on(f),
                Op::Blocking(f) => f(),
            };
            self.told.merge(told);
        }
        self.told
    }

    async fn run_async(mut self, block_in_place: bool) -> Told {
        while let Some(op) = self.next() {
            let told = match op {
                Op::Async(f) => f.await,
                Op::Blocking(f) if block_in_place && self.rng.chance(50) => {
                    tokio::task::block_in_place(f)
                }
                Op::Blocking(f) => f(),
            };
            self.told.merge(told);
        }
        self.told
    }
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

/// A Reader that appends every message's id to `got`: a handler (that
/// may block, or not) or an `Incoming` stream of a few messages drained
/// by a thread of its own.
fn start_reader(
    path: &std::path::Path,
    rng: &mut Rng,
    rt: &Handle,
    got: &Arc<Mutex<Vec<u64>>>,
) -> (Reader, Option<std::thread::JoinHandle<()>>) {
    let b = Reader::builder(path).runtime(rt.clone());
    let slow = rng.chance(30);
    if rng.chance(40) {
        let (reader, mut incoming) = b
            .incoming_capacity(rng.range(1, 4) as usize)
            .incoming_capacity_bytes(rng.range(1, 600) as usize)
            .incoming()
            .unwrap();
        let got = Arc::clone(got);
        let rt = rt.clone();
        let mut rng = rng.fork();
        let t = std::thread::spawn(move || {
            while let Some(m) = rt.block_on(incoming.recv()) {
                got.lock().unwrap().push(id_of(&m.body));
                if slow && rng.chance(10) {
                    std::thread::sleep(Duration::from_micros(300));
                }
            }
        });
        (reader, Some(t))
    } else {
        let got = Arc::clone(got);
        let may_block = rng.chance(50);
        let reader = b
            .handler_may_block(may_block)
            .start(move |m: &[u8]| {
                got.lock().unwrap().push(id_of(m));
                if slow && may_block {
                    std::thread::sleep(Duration::from_micros(300));
                }
                Ok(())
            })
            .unwrap();
        (reader, None)
    }
}

/// A current-thread runtime driven by a thread of its own until dropped.
struct Driven {
    handle: Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Runtime>>,
}

impl Driven {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = rt.handle().clone();
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                let _ = rx.await;
            });
            rt
        });
        Self {
            handle,
            stop: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        // Dropped here, on a thread outside any runtime.
        drop(self.thread.take().unwrap().join());
    }
}

fn round(seed: u64, rt: &Runtime) -> [u64; 5] {
    let mut rng = Rng(seed);
    let sock = temp_sock();
    let got = Arc::new(Mutex::new(Vec::new()));
    let (mut reader, mut drain) = start_reader(&sock.path, &mut rng, rt.handle(), &got);
    // The Writer on the multi-thread runtime, or on a current-thread one
    // driven by a thread of its own.
    let driven = rng.chance(30).then(Driven::new);
    let wh = driven.as_ref().map_or(rt.handle(), |d| &d.handle).clone();
    let mut b = Writer::builder(&sock.path)
        .runtime(wh.clone())
        .max_buffered_writes(rng.range(1, 3) as usize)
        .initial_backoff(Duration::from_millis(1))
        .max_backoff(rng.millis(1, 4))
        .max_attempts(rng.range(2, 30) as u32)
        .write_buffer_size(rng.range(1, 16) as u32 * 1024)
        .linger(rng.millis(0, 20));
    if rng.chance(50) {
        b = b.max_buffered_bytes(rng.range(30, 1500) as usize);
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
    let producers: Vec<_> = (0..rng.range(2, 4))
        .map(|p| {
            let ctx = match rng.next() % 5 {
                0 => Ctx::Thread,
                1 => Ctx::Worker,
                2 => Ctx::Blocking,
                3 => Ctx::CurrentThread,
                _ if driven.is_some() => Ctx::WriterRuntime,
                _ => Ctx::Worker,
            };
            let prod = Producer {
                p,
                count: rng.range(10, 150) as u32,
                rng: rng.fork(),
                w: Arc::clone(&w),
                max_len: [12u64, 60, 400][rng.range(0, 2) as usize],
                seq: 0,
                told: Told::default(),
            };
            let h = rt.handle().clone();
            let wh = wh.clone();
            let t = std::thread::spawn(move || match ctx {
                Ctx::Thread => prod.run_sync(&h),
                Ctx::Worker => h.block_on(h.spawn(prod.run_async(true))).unwrap(),
                Ctx::Blocking => {
                    let h2 = h.clone();
                    h.block_on(h.spawn_blocking(move || prod.run_sync(&h2)))
                        .unwrap()
                }
                Ctx::CurrentThread => tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(prod.run_async(false)),
                Ctx::WriterRuntime => {
                    let (tx, rx) = std::sync::mpsc::channel();
                    wh.spawn(async move {
                        let _ = tx.send(prod.run_async(false).await);
                    });
                    rx.recv()
                        .expect("the producer task ended without an answer")
                }
            });
            (ctx, t)
        })
        .collect();
    let contexts: Vec<Ctx> = producers.iter().map(|(c, _)| *c).collect();
    let ctx = |m: &WriterMetricsHandle| format!("{} {contexts:?}", ctx(m));
    // Reader restarts while the producers run.
    let restarts = rng.range(0, 3);
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
    for _ in 0..restarts {
        std::thread::sleep(rng.millis(0, 15));
        let r = reader.stop_blocking(PATIENCE);
        assert!(
            r.is_ok(),
            "a reader's long stop failed: {r:?}; {}",
            ctx(&metrics)
        );
        if let Some(t) = drain.take() {
            join_within(t, "a drain", &|| ctx(&metrics));
        }
        std::thread::sleep(rng.millis(0, 5));
        (reader, drain) = start_reader(&sock.path, &mut rng, rt.handle(), &got);
    }
    let told: Vec<Told> = producers
        .into_iter()
        .map(|(_, t)| join_within(t, "a producer", &|| ctx(&metrics)))
        .collect();
    let stopped = join_within(stopper, "the stopper", &|| ctx(&metrics));
    match (end, stopped) {
        (End::StopRacing, Some(r)) => {
            assert!(r.is_ok(), "a long stop failed: {r:?}; {}", ctx(&metrics))
        }
        (End::StopShort(_), Some(r)) => match r {
            Ok(()) | Err(StopError::DeadlineExceeded { .. }) => {}
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
    drop(driven);
    let r = reader.stop_blocking(PATIENCE);
    assert!(
        r.is_ok(),
        "the reader's long stop failed: {r:?}; {}",
        ctx(&metrics)
    );
    if let Some(t) = drain.take() {
        join_within(t, "a drain", &|| ctx(&metrics));
    }
    let received = std::mem::take(&mut *got.lock().unwrap());
    let m = metrics.get();
    let ctx = ctx(&metrics);
    let accepted: Vec<u64> = told
        .iter()
        .flat_map(|t| t.accepted.iter().copied())
        .collect();
    let accepted_set: HashSet<u64> = accepted.iter().copied().collect();
    assert_eq!(
        accepted_set.len(),
        accepted.len(),
        "an id accepted twice; {ctx}"
    );
    let full: u64 = told.iter().map(|t| t.full).sum();
    let maybe_full: u64 = told.iter().map(|t| t.maybe_full).sum();
    check_received(&received, &accepted_set, &ctx);
    let n = accepted.len() as u64;
    let got = received.len() as u64;
    check_counts(&m, n, got, &ctx);
    assert!(
        full <= m.dropped && m.dropped <= full + maybe_full,
        "dropped {} for {full} counted and {maybe_full} maybe; {ctx}",
        m.dropped
    );
    [n, got, m.dropped, m.failed + m.discarded, m.unconfirmed]
}

#[test]
fn every_sending_api_from_every_context_loses_duplicates_or_miscounts_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let seed = seed_from("UDSIPC_HUNT_SEED");
    let secs = env_u64("UDSIPC_HUNT_SECS").unwrap_or(2);
    eprintln!("api_hunt: seed {seed:#x} (UDSIPC_HUNT_SEED={seed:#x}), {secs} s");
    let start = Instant::now();
    let mut rng = Rng(seed);
    let mut rounds = 0;
    let mut round_seed = seed;
    let mut totals = [0u64; 5];
    loop {
        let r = round(round_seed, &rt);
        totals.iter_mut().zip(r).for_each(|(t, r)| *t += r);
        rounds += 1;
        if start.elapsed() >= Duration::from_secs(secs) {
            break;
        }
        round_seed = rng.next();
    }
    let [accepted, received, dropped, lost, unconfirmed] = totals;
    eprintln!(
        "api_hunt: {rounds} rounds; {accepted} accepted, {received} received, \
         {dropped} dropped, {lost} failed or discarded, {unconfirmed} unconfirmed"
    );
}
