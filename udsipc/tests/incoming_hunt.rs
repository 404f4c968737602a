//! The Reader's `Incoming` stream (a bounded channel that takes frames from
//! each connection's receive buffer itself) against raw connections that
//! break the framing mid-stream: a length past `max_message_size`, or a
//! varint that never ends, after some good frames, with more good frames
//! behind it, written in chunks that cut anywhere; beside connections that
//! stay good, with a channel of a few messages and bytes and a consumer
//! that is slow now and then.
//!
//! Checked: each connection's good frames before the break are handed out,
//! in order, each once, and nothing after it; a good connection's are all
//! handed out; a broken connection is closed by the Reader; every error
//! counted; the stream ends after the stop. No timing is asserted.
//!
//! Seeded: `UDSIPC_INCOMING_SEED=<seed>`, `UDSIPC_INCOMING_ROUNDS`
//! (default 12).

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::hunt::*;
use common::*;
use udsipc::frame::encode_frame;

const MAX_MESSAGE: u64 = 1000;

fn body(conn: u32, seq: u32, len: usize) -> Vec<u8> {
    let mut b = conn.to_le_bytes().to_vec();
    b.extend_from_slice(&seq.to_le_bytes());
    b.resize(len.max(8), seq as u8);
    b
}

fn ids(b: &[u8]) -> (u32, u32) {
    (
        u32::from_le_bytes(b[..4].try_into().unwrap()),
        u32::from_le_bytes(b[4..8].try_into().unwrap()),
    )
}

/// One raw connection: `good` frames, then (if `broken`) a frame that
/// breaks the framing and more good frames behind it. Returns whether the
/// Reader closed it (a broken one must be closed).
fn client(path: std::path::PathBuf, conn: u32, good: u32, broken: bool, mut rng: Rng) -> bool {
    let mut s = UnixStream::connect(&path).unwrap();
    let mut wire = Vec::new();
    for q in 0..good {
        encode_frame(&body(conn, q, rng.range(8, 300) as usize), &mut wire);
    }
    if broken {
        if rng.chance(50) {
            // A length past the bound: 5000 as a varint.
            wire.extend_from_slice(&[0x88, 0x27]);
        } else {
            // A varint that never ends.
            wire.extend_from_slice(&[0xff; 12]);
        }
        for q in good..good + 5 {
            encode_frame(&body(conn, q, 20), &mut wire);
        }
    }
    let mut at = 0;
    while at < wire.len() {
        let n = (rng.range(1, 500) as usize).min(wire.len() - at);
        if s.write_all(&wire[at..at + n]).is_err() {
            // Closed by the Reader already (only once the framing broke).
            break;
        }
        at += n;
    }
    if !broken {
        return false;
    }
    // The Reader closes it: EOF or a reset, within the patience.
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0u8; 64];
    let start = Instant::now();
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
        if start.elapsed() > PATIENCE {
            return false;
        }
    }
}

fn round(seed: u64, rt: &tokio::runtime::Runtime) {
    let mut rng = Rng(seed);
    let sock = temp_sock();
    let errors = Errors::default();
    let (reader, mut incoming) = {
        let _guard = rt.enter();
        udsipc::Reader::builder(&sock.path)
            .systemd(false)
            .max_message_size(MAX_MESSAGE)
            .read_buffer_size(rng.range(16, 4096) as u32)
            .incoming_capacity(rng.range(1, 8) as usize)
            .incoming_capacity_bytes(rng.range(8, 4000) as usize)
            .on_error(errors.reader_callback())
            .incoming()
            .unwrap()
    };
    let conns = rng.range(1, 5) as u32;
    let mut want: HashMap<u32, u32> = HashMap::new();
    let mut broken = 0;
    let clients: Vec<_> = (0..conns)
        .map(|c| {
            let good = rng.range(0, 80) as u32;
            let bad = rng.chance(60);
            broken += u32::from(bad);
            want.insert(c, good);
            let (path, r) = (sock.path.clone(), rng.fork());
            std::thread::spawn(move || (bad, client(path, c, good, bad, r)))
        })
        .collect();
    let total: u32 = want.values().sum();
    let slow = rng.range(0, 20);
    let mut crng = rng.fork();
    let got = rt.block_on(async {
        let mut got = Vec::new();
        while got.len() < total as usize {
            match tokio::time::timeout(PATIENCE, incoming.recv()).await {
                Ok(Some(m)) => got.push(ids(&m.body)),
                Ok(None) => panic!("the stream ended early (seed {seed:#x})"),
                Err(_) => panic!(
                    "{} of {total} messages (seed {seed:#x}); {:?}",
                    got.len(),
                    errors.list()
                ),
            }
            if crng.chance(slow) {
                tokio::time::sleep(Duration::from_micros(crng.range(0, 500))).await;
            }
        }
        got
    });
    for t in clients {
        let (bad, closed) = t.join().unwrap();
        if bad {
            assert!(
                closed,
                "a broken connection was not closed (seed {seed:#x})"
            );
        }
    }
    let ctx = || {
        format!(
            "seed {seed:#x} (replay: UDSIPC_INCOMING_SEED={seed:#x} UDSIPC_INCOMING_ROUNDS=1); \
             reader {:?}; errors {:?}",
            reader.metrics(),
            errors.list()
        )
    };
    eventually("the connections to end", || {
        reader.metrics().active_connections == 0
    });
    rt.block_on(reader.stop(PATIENCE)).unwrap();
    // Nothing more: the stream ends.
    let rest = rt.block_on(async {
        let mut rest = Vec::new();
        loop {
            match tokio::time::timeout(PATIENCE, incoming.recv()).await {
                Ok(Some(m)) => rest.push(ids(&m.body)),
                Ok(None) => return rest,
                Err(_) => panic!("the stream never ended after the stop (seed {seed:#x})"),
            }
        }
    });
    assert!(rest.is_empty(), "past the breaks: {rest:?}; {}", ctx());
    let mut next: HashMap<u32, u32> = HashMap::new();
    for &(c, q) in &got {
        let n = next.entry(c).or_insert(0);
        assert_eq!(q, *n, "connection {c}: {q} where {n} was due; {}", ctx());
        *n += 1;
    }
    for (c, g) in &want {
        assert_eq!(
            next.get(c).copied().unwrap_or(0),
            *g,
            "connection {c}; {}",
            ctx()
        );
    }
    let m = reader.metrics();
    assert_eq!(m.received, u64::from(total), "{}", ctx());
    assert!(m.errors >= u64::from(broken), "{}", ctx());
    assert_eq!(m.connections, u64::from(conns), "{}", ctx());
}

#[test]
fn a_broken_frame_mid_stream_ends_only_its_connection_after_its_good_frames() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let seed = seed_from("UDSIPC_INCOMING_SEED");
    let rounds = env_u64("UDSIPC_INCOMING_ROUNDS").unwrap_or(12);
    eprintln!("incoming_hunt: seed {seed:#x} (UDSIPC_INCOMING_SEED={seed:#x}), {rounds} rounds");
    let mut rng = Rng(seed);
    let mut round_seed = seed;
    for _ in 0..rounds {
        round(round_seed, &rt);
        round_seed = rng.next();
    }
}

/// A stop with a short deadline while the consumer stopped taking
/// messages from a full channel, over connections that stay open: the
/// stop returns, what was read whole is handed out (a forced stop pushes
/// past the bounds, so nothing read is left unhandled), each connection's
/// messages are a gapless prefix in order, and the stream ends.
#[test]
fn a_short_stop_over_a_full_channel_hands_out_a_gapless_prefix_and_ends() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rng = Rng(env_u64("UDSIPC_INCOMING_SEED").unwrap_or(0x5eed));
    for round in 0..8 {
        let sock = temp_sock();
        let (reader, mut incoming) = {
            let _guard = rt.enter();
            udsipc::Reader::builder(&sock.path)
                .systemd(false)
                .read_buffer_size(rng.range(16, 4096) as u32)
                .incoming_capacity(rng.range(1, 6) as usize)
                .incoming_capacity_bytes(rng.range(8, 2000) as usize)
                .incoming()
                .unwrap()
        };
        let conns: Vec<UnixStream> = (0..rng.range(1, 4) as u32)
            .map(|c| {
                let mut s = UnixStream::connect(&sock.path).unwrap();
                let mut wire = Vec::new();
                for q in 0..rng.range(5, 200) as u32 {
                    encode_frame(&body(c, q, rng.range(8, 200) as usize), &mut wire);
                }
                s.write_all(&wire).unwrap();
                s
            })
            .collect();
        let taken = rng.range(0, 5) as usize;
        let mut got = Vec::new();
        rt.block_on(async {
            for _ in 0..taken {
                match tokio::time::timeout(PATIENCE, incoming.recv()).await {
                    Ok(Some(m)) => got.push(ids(&m.body)),
                    other => panic!(
                        "round {round}: no message: {:?}",
                        other.map(|m| m.is_some())
                    ),
                }
            }
        });
        let deadline = Duration::from_millis(rng.range(0, 5));
        let stopped = rt.block_on(reader.stop(deadline));
        assert!(
            matches!(
                stopped,
                Ok(()) | Err(udsipc::StopError::ConnectionsCut { .. })
            ),
            "round {round}: {stopped:?}"
        );
        rt.block_on(async {
            loop {
                match tokio::time::timeout(PATIENCE, incoming.recv()).await {
                    Ok(Some(m)) => got.push(ids(&m.body)),
                    Ok(None) => break,
                    Err(_) => panic!("round {round}: the stream never ended"),
                }
            }
        });
        drop(conns);
        let m = reader.metrics();
        assert_eq!(m.received, got.len() as u64, "round {round}: {m:?}");
        assert_eq!(m.unhandled, 0, "round {round}: {m:?}");
        let mut next: HashMap<u32, u32> = HashMap::new();
        for &(c, q) in &got {
            let n = next.entry(c).or_insert(0);
            assert_eq!(q, *n, "round {round}: connection {c}");
            *n += 1;
        }
    }
}
