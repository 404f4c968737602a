//! A Writer's first connection ends at a drawn byte of what it wrote:
//! inside a run of small messages (a `BufferedWriter`'s flush, or
//! `try_send`s the arena packs together), between two of its messages,
//! inside a single large one, on the probe byte; by a close with bytes
//! unread (a reset), a `shutdown(SHUT_RD)` (writes fail with `EPIPE`, what
//! is held is still read), or a close after a pause. The next connection
//! reads everything until the Writer's stop closes it.
//!
//! Every byte each connection read is kept, so the counters are checked
//! exactly against it: nothing received twice, out of order or not
//! accepted; `delivered <= received <= delivered + unconfirmed`; every
//! accepted message counted once (`delivered + unconfirmed + failed +
//! discarded`), with nothing failed or discarded (one bad connection, a
//! long stop); what the first connection read whole is exactly the whole
//! frames of its first `k` bytes. No timing is asserted.
//!
//! Seeded: `UDSIPC_SPLIT_SEED=<seed>` replays, `UDSIPC_SPLIT_ROUNDS`
//! (default 40) sets how many split points are tried.

mod common;

use std::io::Read;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use common::hunt::*;
use common::*;
use udsipc::Writer;

/// Reads until `budget` bytes, EOF, an error or a quiet `idle`.
fn read_some(s: &mut UnixStream, wire: &mut Vec<u8>, budget: usize, idle: Duration) {
    s.set_read_timeout(Some(idle)).unwrap();
    let mut buf = [0u8; 4096];
    while wire.len() < budget {
        let room = (budget - wire.len()).min(buf.len());
        match s.read(&mut buf[..room]) {
            Ok(0) | Err(_) => return,
            Ok(n) => wire.extend_from_slice(&buf[..n]),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Cut {
    Close,
    ShutRead,
    CloseLater,
}

fn round(seed: u64) -> udsipc::WriterMetrics {
    let mut rng = Rng(seed);
    let sock = temp_sock();
    let listener = UnixListener::bind(&sock.path).unwrap();
    // The messages: small ones (runs), now and then a large one.
    let n = rng.range(5, 60);
    let msgs: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let len = if rng.chance(10) {
                rng.range(200, 3000)
            } else {
                rng.range(8, 40)
            };
            message(i, len as usize)
        })
        .collect();
    let total = frames(&msgs.iter().map(|m| &m[..]).collect::<Vec<_>>()).len();
    let k = rng.range(1, total as u64) as usize;
    let cut = match rng.next() % 3 {
        0 => Cut::Close,
        1 => Cut::ShutRead,
        _ => Cut::CloseLater,
    };
    let reader = std::thread::spawn(move || {
        // The first connection: `k` bytes, then its end.
        let (mut s, _) = listener.accept().unwrap();
        let mut first = Vec::new();
        read_some(&mut s, &mut first, k, Duration::from_millis(300));
        match cut {
            Cut::Close => {}
            Cut::ShutRead => {
                let _ = s.shutdown(std::net::Shutdown::Read);
                read_some(&mut s, &mut first, usize::MAX, Duration::from_millis(5));
            }
            Cut::CloseLater => std::thread::sleep(Duration::from_millis(3)),
        }
        drop(s);
        // The others: everything, to the Writer's end.
        listener.set_nonblocking(true).unwrap();
        let mut rest = Vec::new();
        let start = Instant::now();
        loop {
            match listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    let mut wire = Vec::new();
                    read_some(&mut s, &mut wire, usize::MAX, PATIENCE);
                    let (f, _) = split_frames(&wire);
                    rest.extend(f.iter().map(|f| id_of(f)));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if start.elapsed() > PATIENCE {
                        break;
                    }
                    std::thread::sleep(Duration::from_micros(300));
                    // The test drops the listener's path when done.
                    if !std::path::Path::new(&sock_path_of(&listener)).exists() {
                        break;
                    }
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
        (first, rest)
    });
    let errors = Errors::default();
    let w = Writer::builder(&sock.path)
        .max_buffered_writes(rng.range(64, 200) as usize)
        .initial_backoff(Duration::from_millis(1))
        .max_backoff(Duration::from_millis(2))
        .max_attempts(5)
        .write_buffer_size(rng.range(1, 8) as u32 * 1024)
        .on_error(errors.writer_callback())
        .start()
        .unwrap();
    // Sent in groups: a BufferedWriter's run, try_sends, blocking sends.
    let mut i = 0;
    while i < msgs.len() {
        let g = (rng.range(1, 20) as usize).min(msgs.len() - i);
        match rng.next() % 3 {
            0 => {
                let mut b = w.buffered().with_capacity(rng.range(64, 4096) as usize);
                for m in &msgs[i..i + g] {
                    b.send_blocking(m).unwrap();
                }
                b.flush_blocking().unwrap();
            }
            1 => {
                for m in &msgs[i..i + g] {
                    w.try_send(m).unwrap();
                }
            }
            _ => {
                for m in &msgs[i..i + g] {
                    w.send_blocking(m.clone()).unwrap();
                }
            }
        }
        i += g;
        if rng.chance(30) {
            std::thread::sleep(Duration::from_micros(rng.range(0, 2000)));
        }
    }
    let ctx = |w: &Writer| {
        format!(
            "seed {seed:#x} (replay: UDSIPC_SPLIT_SEED={seed:#x} UDSIPC_SPLIT_ROUNDS=1), \
             {n} messages, {total} bytes, cut at {k} by {cut:?}; writer {:?}; errors {:?}",
            w.metrics(),
            errors.list()
        )
    };
    let stopped = w.stop_blocking(PATIENCE);
    assert!(stopped.is_ok(), "{stopped:?}; {}", ctx(&w));
    let m = w.metrics();
    let ctx = ctx(&w);
    drop(w);
    let path = sock.path.clone();
    std::fs::remove_file(&path).unwrap();
    let (first, rest) = reader.join().unwrap();
    let (first_frames, _) = split_frames(&first);
    let first_ids: Vec<u64> = first_frames.iter().map(|f| id_of(f)).collect();
    if !matches!(cut, Cut::ShutRead) {
        let (want, _) = split_frames(&first[..first.len().min(k)]);
        assert_eq!(first_frames.len(), want.len(), "{ctx}");
    }
    let received: Vec<u64> = first_ids.iter().chain(rest.iter()).copied().collect();
    let mut seen = std::collections::HashSet::new();
    let mut last = None;
    for &id in &received {
        assert!(id < n, "{id} received, never sent; {ctx}");
        assert!(seen.insert(id), "{id} received twice; {ctx}");
        if let Some(prev) = last {
            assert!(prev < id, "{prev} then {id}: out of order; {ctx}");
        }
        last = Some(id);
    }
    let got = received.len() as u64;
    assert_eq!(m.sent, n, "{ctx}");
    assert_eq!(m.queue_depth, 0, "{ctx}");
    assert_eq!((m.failed, m.discarded, m.dropped), (0, 0, 0), "{ctx}");
    assert_eq!(
        m.delivered + m.unconfirmed,
        n,
        "every message counted once; {ctx}"
    );
    assert!(m.delivered <= got, "delivered > received {got}; {ctx}");
    assert!(
        got <= m.delivered + m.unconfirmed,
        "received {got} > delivered + unconfirmed; {ctx}"
    );
    // A message written after the first connection's end reaches the
    // second one whole: only those the first one held can be missing.
    let missing = n - got;
    assert!(
        missing <= m.unconfirmed,
        "{missing} missing, {} unconfirmed; {ctx}",
        m.unconfirmed
    );
    m
}

fn sock_path_of(l: &UnixListener) -> std::path::PathBuf {
    l.local_addr().unwrap().as_pathname().unwrap().to_path_buf()
}

#[test]
fn a_first_connection_cut_at_any_byte_loses_duplicates_or_miscounts_nothing() {
    let seed = seed_from("UDSIPC_SPLIT_SEED");
    let rounds = env_u64("UDSIPC_SPLIT_ROUNDS").unwrap_or(40);
    eprintln!("writer_split_hunt: seed {seed:#x} (UDSIPC_SPLIT_SEED={seed:#x}), {rounds} rounds");
    let mut rng = Rng(seed);
    let mut round_seed = seed;
    let (mut retried, mut unconfirmed, mut reconnected) = (0, 0, 0);
    for _ in 0..rounds {
        let m = round(round_seed);
        retried += u64::from(m.retried > 0);
        unconfirmed += u64::from(m.unconfirmed > 0);
        reconnected += u64::from(m.reconnects > 0);
        round_seed = rng.next();
    }
    eprintln!(
        "writer_split_hunt: {rounds} rounds, {reconnected} reconnected, \
         {retried} retried, {unconfirmed} with messages unconfirmed"
    );
}
