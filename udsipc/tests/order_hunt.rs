//! The Reader's order book against one process's many raw connections.
//!
//! Several "chains" share this test process (one `SO_PEERCRED` pid). Each
//! chain writes numbered messages over a series of connections: it writes
//! a segment on one connection (in write chunks that cut frames anywhere),
//! closes it (sometimes with the last frame cut, which the next
//! connection then sends again whole, as a Writer's retry does), and only
//! then connects anew. Everything a chain sent on an older connection was
//! sent before its newer connection existed, so the Reader must hand each
//! chain's messages over in order, each exactly once, all of them; while
//! the other chains' connections come and go beside it (listed, measured
//! and leaving the book). Handlers are slow now and then, so that bytes
//! wait in the kernel's queues when a newer connection is admitted.
//!
//! Seeded: `UDSIPC_ORDER_SEED=<seed>` replays a run's rounds (the thread
//! interleaving is the machine's), `UDSIPC_ORDER_ROUNDS` (default 4) sets
//! how many.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::hunt::*;
use common::*;
use udsipc::frame::encode_frame;

fn body(chain: u32, seq: u32, len: usize) -> Vec<u8> {
    let mut b = chain.to_le_bytes().to_vec();
    b.extend_from_slice(&seq.to_le_bytes());
    b.resize(len.max(8), (chain ^ seq) as u8);
    b
}

fn ids(b: &[u8]) -> (u32, u32) {
    (
        u32::from_le_bytes(b[..4].try_into().unwrap()),
        u32::from_le_bytes(b[4..8].try_into().unwrap()),
    )
}

fn connect(path: &std::path::Path) -> UnixStream {
    let start = Instant::now();
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return s,
            Err(e) => {
                assert!(start.elapsed() < PATIENCE, "connect: {e}");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// Writes `count` messages of `chain` over connections that end after
/// segments drawn from `rng`.
fn chain(path: std::path::PathBuf, chain: u32, count: u32, mut rng: Rng) {
    let max_len = [12u64, 100, 2000][rng.range(0, 2) as usize];
    let mut seq = 0;
    while seq < count {
        let mut s = connect(&path);
        let segment = rng.range(1, 60) as u32;
        let mut wire = Vec::new();
        let mut last_start = 0;
        let end = (seq + segment).min(count);
        for q in seq..end {
            last_start = wire.len();
            encode_frame(&body(chain, q, rng.range(8, max_len) as usize), &mut wire);
        }
        // Sometimes the last frame is cut: it is sent again, whole, on the
        // next connection.
        let cut = end > seq && end < count && rng.chance(25);
        if cut {
            let keep = last_start + rng.range(0, (wire.len() - last_start - 1) as u64) as usize;
            wire.truncate(keep);
        }
        let mut at = 0;
        while at < wire.len() {
            let n = (rng.range(1, 700) as usize).min(wire.len() - at);
            s.write_all(&wire[at..at + n]).unwrap();
            at += n;
            if rng.chance(10) {
                std::thread::sleep(Duration::from_micros(rng.range(0, 500)));
            }
        }
        if rng.chance(30) {
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
        drop(s);
        seq = if cut { end - 1 } else { end };
    }
}

fn round(seed: u64) {
    let mut rng = Rng(seed);
    let sock = temp_sock();
    let got: Arc<Mutex<Vec<(u32, u32)>>> = Arc::default();
    let slow = rng.range(0, 30);
    let handler = {
        let got = Arc::clone(&got);
        let mut hr = rng.fork();
        let hr = Mutex::new(Rng(hr.next()));
        move |m: &[u8]| -> Result<(), udsipc::HandlerError> {
            let pause = {
                let mut r = hr.lock().unwrap();
                r.chance(slow)
                    .then(|| Duration::from_micros(r.range(0, 300)))
            };
            if let Some(p) = pause {
                std::thread::sleep(p);
            }
            got.lock().unwrap().push(ids(m));
            Ok(())
        }
    };
    let errors = Errors::default();
    let reader = udsipc::Reader::builder(&sock.path)
        .systemd(false)
        .read_buffer_size(rng.range(16, 8192) as u32)
        .handler_may_block(rng.chance(50))
        .on_error(errors.reader_callback())
        .start(handler)
        .unwrap();
    let chains = rng.range(1, 5) as u32;
    let mut expected = 0u64;
    let threads: Vec<_> = (0..chains)
        .map(|c| {
            let count = rng.range(20, 250) as u32;
            expected += u64::from(count);
            let (path, r) = (sock.path.clone(), rng.fork());
            std::thread::spawn(move || chain(path, c, count, r))
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let ctx = || {
        format!(
            "seed {seed:#x} (replay: UDSIPC_ORDER_SEED={seed:#x} UDSIPC_ORDER_ROUNDS=1); \
             reader {:?}; errors {:?}",
            reader.metrics(),
            errors.list()
        )
    };
    let start = Instant::now();
    while (got.lock().unwrap().len() as u64) < expected {
        assert!(
            start.elapsed() < PATIENCE,
            "{} of {expected} messages handed over; {}",
            got.lock().unwrap().len(),
            ctx()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    // Every connection ends (the chains closed them all).
    let start = Instant::now();
    while reader.metrics().active_connections > 0 {
        assert!(
            start.elapsed() < PATIENCE,
            "connections never ended; {}",
            ctx()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    reader.stop_blocking(PATIENCE).unwrap();
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len() as u64, expected, "{}", ctx());
    let mut next: HashMap<u32, u32> = HashMap::new();
    for (i, &(c, q)) in got.iter().enumerate() {
        let want = next.entry(c).or_insert(0);
        assert_eq!(
            q,
            *want,
            "chain {c}: message {q} handed over where {want} was due (at {i}); {}",
            ctx()
        );
        *want += 1;
    }
    let m = reader.metrics();
    assert_eq!(m.received, expected, "{}", ctx());
    assert_eq!(m.unhandled, 0, "{}", ctx());
}

#[test]
fn one_process_reconnecting_chains_are_handed_over_in_order_exactly_once() {
    let seed = seed_from("UDSIPC_ORDER_SEED");
    let rounds = env_u64("UDSIPC_ORDER_ROUNDS").unwrap_or(4);
    eprintln!("order_hunt: seed {seed:#x} (UDSIPC_ORDER_SEED={seed:#x}), {rounds} rounds");
    let mut rng = Rng(seed);
    let mut round_seed = seed;
    for _ in 0..rounds {
        round(round_seed);
        round_seed = rng.next();
    }
}
