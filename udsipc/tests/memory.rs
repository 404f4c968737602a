//! What connections cost the Reader in memory.
//!
//! CI runs the deterministic part: heap bytes counted by a counting global
//! allocator (an idle connection's cost, and that a large declared length
//! makes the Reader hold what arrived plus one bounded step, not the declared
//! size). The resident-memory figures (10,000 idle connections; 100
//! connections each part-way through a 16 MiB frame) are ignored tests that
//! print a report:
//!
//! ```text
//! cargo test --release -p udsipc --test memory -- --ignored --nocapture --test-threads 1
//! ```
//!
//! RSS growth is the Reader's alone: the 10,000 clients run in a child
//! process (this test binary re-run as `client_fleet`); the 100 clients of
//! the large-frame test are plain `std` sockets in this process, which cost
//! one file descriptor each in user space (socket buffers are kernel memory,
//! which RSS does not count). The tests in this binary take a lock so they
//! never overlap (they count the whole process).

mod common;
mod counting_alloc;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::*;
use counting_alloc::{Counting, live_bytes, peak_bytes, reset_peak};
use udsipc::frame::{FrameError, GROWTH_STEP, MAX_VARINT_LEN, encode_varint};
use udsipc::{Reader, ReaderError};

#[global_allocator]
static GLOBAL: Counting = Counting;

static SERIAL: Mutex<()> = Mutex::new(());
const STOP: Duration = Duration::from_secs(30);
const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the error callback saw: the protocol violation, or any other error
/// as text (`ReaderError` is not `Clone`: it may hold an `io::Error`).
type Reported = Result<FrameError, String>;

/// A Reader whose handler only counts, that keeps idle connections open
/// and reports its errors to a channel.
fn counting_reader(sock: &TempSock, max_message_size: u64) -> (Reader, mpsc::Receiver<Reported>) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let reader = Reader::builder(&sock.path)
        .systemd(false)
        .max_message_size(max_message_size)
        .inactivity_timeout(Duration::from_secs(3600))
        .on_error(move |e| {
            let reported = match e {
                ReaderError::Protocol(f) => Ok(*f),
                other => Err(other.to_string()),
            };
            let _ = tx.lock().unwrap().send(reported);
        })
        .start(|_: &[u8]| Ok(()))
        .unwrap();
    (reader, rx)
}

/// A length prefix declaring `len` bytes.
fn prefix(len: u64) -> Vec<u8> {
    let mut buf = [0u8; MAX_VARINT_LEN];
    let n = encode_varint(len, &mut buf);
    buf[..n].to_vec()
}

#[test]
fn a_declared_16_mib_frame_holds_what_arrived_plus_one_step_not_the_declared_length() {
    let _serial = serial();
    let sock = temp_sock();
    let (reader, errors) = counting_reader(&sock, 16 << 20);
    let mut client = UnixStream::connect(&sock.path).unwrap();
    client.write_all(&frames(&[b"warm-up"])).unwrap();
    eventually("the warm-up message", || reader.metrics().received == 1);

    // Go allocates the whole declared 16 MiB from the prefix alone.
    let stages = [
        // 100 bytes fit in the connection's initial buffer: nothing grows
        // (a few KiB of slack for the runtime's own bookkeeping).
        (100, 4 * KIB),
        // 32 KiB more: one bounded step past what arrived.
        (32 * KIB, 32 * KIB + 100 + GROWTH_STEP),
    ];
    // Built before measuring: the test's own buffers are not the Reader's.
    let sends: Vec<Vec<u8>> = stages
        .iter()
        .enumerate()
        .map(|(i, &(more, _))| {
            let mut bytes = if i == 0 { prefix(16 << 20) } else { Vec::new() };
            bytes.resize(bytes.len() + more, 0xab);
            bytes
        })
        .collect();
    let base = live_bytes();
    reset_peak();
    let mut arrived = 0;
    for (&(more, most), bytes) in stages.iter().zip(&sends) {
        client.write_all(bytes).unwrap();
        arrived += more;
        eventually("the Reader has read everything sent", || {
            unread(&client) == 0
        });
        let held = peak_bytes().saturating_sub(base);
        eprintln!(
            "16 MiB declared, {arrived} bytes arrived: the Reader held {held} more heap bytes at peak"
        );
        assert!(held <= most, "held {held} bytes for {arrived} arrived");
    }
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let err = errors.recv_timeout(PATIENCE).expect("the truncated frame");
    assert_eq!(
        err,
        Ok(FrameError::TruncatedBody {
            expected: 16 << 20,
            got: arrived as u64
        })
    );
    reader.stop_blocking(STOP).unwrap();
}

#[test]
fn a_buffer_enlarged_by_a_large_frame_shrinks_back_once_idle() {
    let _serial = serial();
    let sock = temp_sock();
    let (reader, _errors) = counting_reader(&sock, 16 << 20);
    let mut client = UnixStream::connect(&sock.path).unwrap();
    client.write_all(&frames(&[b"warm-up"])).unwrap();
    eventually("the warm-up message", || reader.metrics().received == 1);
    let big = frames(&[&vec![0x33; 2 * MIB]]);
    let base = live_bytes();
    reset_peak();
    client.write_all(&big).unwrap();
    eventually("the 2 MiB message", || reader.metrics().received == 2);
    let grown = peak_bytes().saturating_sub(base);
    assert!(grown >= MIB, "the buffer grew to hold the frame: {grown}");
    // The connection stays open and idle: its buffer is given back.
    eventually("the enlarged buffer is given back", || {
        live_bytes() <= base + 4 * KIB
    });
    drop(client);
    reader.stop_blocking(STOP).unwrap();
}

#[test]
fn an_idle_connection_costs_a_few_kib_of_heap() {
    let _serial = serial();
    const N: usize = 200;
    let sock = temp_sock();
    let (reader, _errors) = counting_reader(&sock, 1 << 20);
    let mut clients = Vec::with_capacity(N);
    let hello = frames(&[b"hello"]);
    let base = live_bytes();
    for _ in 0..N {
        let mut c = UnixStream::connect(&sock.path).unwrap();
        c.write_all(&hello).unwrap();
        clients.push(c);
    }
    eventually("a message from every client", || {
        reader.metrics().received == N as u64
    });
    let per = live_bytes().saturating_sub(base) / N;
    eprintln!("an idle connection (after one small message): {per} heap bytes");
    assert!(per <= 16 * KIB, "{per} heap bytes per idle connection");
    drop(clients);
    reader.stop_blocking(STOP).unwrap();
}

/// A connection that has been idle for a while holds no receive buffer:
/// 200 connections that never sent, then the same after one message each,
/// once their buffers were released ([`udsipc::frame::SHRINK_AFTER`]).
#[test]
fn an_idle_connection_releases_its_buffer() {
    let _serial = serial();
    const N: usize = 200;
    let sock = temp_sock();
    let (reader, _errors) = counting_reader(&sock, 1 << 20);
    let base = live_bytes();
    let mut clients: Vec<_> = (0..N)
        .map(|_| UnixStream::connect(&sock.path).unwrap())
        .collect();
    eventually("every connection accepted", || {
        reader.metrics().active_connections == N as u64
    });
    let silent = live_bytes().saturating_sub(base) / N;
    eprintln!("a connection that never sent: {silent} heap bytes");
    assert!(
        silent < udsipc::frame::INITIAL_BUFFER,
        "{silent} heap bytes: a buffer was allocated before any byte came"
    );
    let hello = frames(&[b"hello"]);
    for c in &mut clients {
        c.write_all(&hello).unwrap();
    }
    eventually("a message from every client", || {
        reader.metrics().received == N as u64
    });
    // Back to what a silent connection holds, give or take 1 KiB.
    eventually("every buffer released once idle", || {
        live_bytes().saturating_sub(base) / N <= silent + KIB
    });
    let idle = live_bytes().saturating_sub(base) / N;
    eprintln!("a connection idle after one message: {idle} heap bytes");
    drop(clients);
    reader.stop_blocking(STOP).unwrap();
}

// ---------------------------------------------------------------------------
// Resident memory (ignored: report figures)
// ---------------------------------------------------------------------------

/// Raises the open-file limit to at least `want` (the hard limit too, when
/// allowed: root).
fn raise_nofile(want: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft >= want {
        return;
    }
    let hard = if hard < want {
        setrlimit(Resource::RLIMIT_NOFILE, want, want)
            .map(|()| want)
            .unwrap_or(hard)
    } else {
        hard
    };
    setrlimit(Resource::RLIMIT_NOFILE, want.min(hard), hard).unwrap();
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        soft >= want,
        "need {want} open files, the limit is {soft} (raise `ulimit -n` or run as root)"
    );
}

const FLEET_SOCK: &str = "UDSIPC_FLEET_SOCK";
const FLEET_SIZE: &str = "UDSIPC_FLEET_SIZE";

/// Not a test on its own: the client process of
/// `rss_of_ten_thousand_idle_connections`. Connects `UDSIPC_FLEET_SIZE`
/// times, says `connected`; on a `send` line sends one 64-byte frame on each
/// connection and says `sent`; exits when its stdin closes.
#[test]
#[ignore = "run by rss_of_ten_thousand_idle_connections in a child process"]
fn client_fleet() {
    use std::io::BufRead;
    let (Ok(path), Ok(n)) = (std::env::var(FLEET_SOCK), std::env::var(FLEET_SIZE)) else {
        return;
    };
    let n: usize = n.parse().unwrap();
    raise_nofile(n as u64 + 64);
    let mut clients: Vec<UnixStream> = (0..n)
        .map(|_| UnixStream::connect(&path).unwrap())
        .collect();
    println!("connected");
    let mut lines = std::io::stdin().lock().lines();
    while let Some(Ok(line)) = lines.next() {
        if line == "send" {
            let hello = frames(&[&[0x5a; 64]]);
            for c in &mut clients {
                c.write_all(&hello).unwrap();
            }
            println!("sent");
        }
    }
}

#[test]
#[ignore = "10,000 connections; run with --ignored (see the module docs)"]
fn rss_of_ten_thousand_idle_connections() {
    let _serial = serial();
    const N: usize = 10_000;
    // The clients live in a child process: here only the Reader's side.
    raise_nofile(N as u64 + 1024);
    let sock = temp_sock();
    let (reader, _errors) = counting_reader(&sock, 10 << 20);
    let (rss0, heap0) = (rss_kib(), live_bytes());

    let mut fleet = ChildTest::spawn(
        "client_fleet",
        &[
            (FLEET_SOCK, sock.path.display().to_string()),
            (FLEET_SIZE, N.to_string()),
        ],
    );
    fleet.wait_for("connected", Duration::from_secs(120));
    eventually("every connection accepted", || {
        reader.metrics().active_connections == N as u64
    });
    let (rss1, heap1) = (rss_kib(), live_bytes());

    fleet.say("send");
    fleet.wait_for("sent", Duration::from_secs(120));
    eventually("a message from every client", || {
        reader.metrics().received == N as u64
    });
    let (rss2, heap2) = (rss_kib(), live_bytes());

    let per = |rss: usize, heap: usize| {
        (
            (rss - rss0) as f64 / N as f64,
            (heap - heap0) as f64 / KIB as f64 / N as f64,
        )
    };
    let (connected_rss, connected_heap) = per(rss1, heap1);
    let (idle_rss, idle_heap) = per(rss2, heap2);
    eprintln!("Reader with {N} idle connections (baseline RSS {rss0} KiB):");
    eprintln!(
        "  connected, nothing sent:   RSS +{} KiB = {connected_rss:.2} KiB/conn, heap {connected_heap:.2} KiB/conn",
        rss1 - rss0
    );
    eprintln!(
        "  idle after one 64 B frame: RSS +{} KiB = {idle_rss:.2} KiB/conn, heap {idle_heap:.2} KiB/conn",
        rss2 - rss0
    );
    assert!(
        idle_rss <= 16.0,
        "{idle_rss:.2} KiB per idle connection (goal 16)"
    );
    // Idle for a while: every receive buffer released (heap; freed memory
    // stays in the process for reuse, so RSS need not fall).
    eventually("every buffer released once idle", || {
        live_bytes().saturating_sub(heap0) / N <= heap1.saturating_sub(heap0) / N + KIB
    });
    let (rss3, heap3) = (rss_kib(), live_bytes());
    let (released_rss, released_heap) = per(rss3, heap3);
    eprintln!(
        "  idle, buffers released:   RSS +{} KiB = {released_rss:.2} KiB/conn, heap {released_heap:.2} KiB/conn",
        rss3 - rss0
    );
    fleet.finish();
    eventually("every connection closed", || {
        reader.metrics().active_connections == 0
    });
    reader.stop_blocking(STOP).unwrap();
}

#[test]
#[ignore = "holds hundreds of MiB; run with --ignored (see the module docs)"]
fn rss_of_a_hundred_connections_part_way_through_16_mib_frames() {
    let _serial = serial();
    const N: usize = 100;
    const DECLARED: usize = 16 * MIB;
    raise_nofile(2 * N as u64 + 1024);
    let sock = temp_sock();
    let (reader, errors) = counting_reader(&sock, DECLARED as u64);
    let mut clients = Vec::with_capacity(N);
    let (rss0, heap0) = (rss_kib(), live_bytes());
    for _ in 0..N {
        let mut c = UnixStream::connect(&sock.path).unwrap();
        c.write_all(&prefix(DECLARED as u64)).unwrap();
        clients.push(c);
    }
    eventually("every connection accepted", || {
        reader.metrics().active_connections == N as u64
    });
    eprintln!(
        "Reader with {N} connections, each declaring a {} MiB frame (baseline RSS {rss0} KiB):",
        DECLARED / MIB
    );
    eprintln!(
        "  {:>14} {:>14} {:>14} {:>14} {:>10}",
        "arrived/conn", "arrived total", "RSS growth", "heap growth", "RSS/arrived"
    );
    let chunk = vec![0x42u8; 64 * KIB];
    let mut arrived = 0;
    for target in [0, 100, 64 * KIB, MIB, 4 * MIB, 8 * MIB] {
        for c in &mut clients {
            let mut left = target - arrived;
            while left > 0 {
                let n = left.min(chunk.len());
                c.write_all(&chunk[..n]).unwrap();
                left -= n;
            }
        }
        arrived = target;
        eventually("the Reader has read everything sent", || {
            clients.iter().all(|c| unread(c) == 0)
        });
        let rss = rss_kib().saturating_sub(rss0) * KIB;
        let heap = live_bytes().saturating_sub(heap0);
        let total = arrived * N;
        eprintln!(
            "  {:>11} KiB {:>10} KiB {:>10} KiB {:>10} KiB {:>10}",
            arrived / KIB,
            total / KIB,
            rss / KIB,
            heap / KIB,
            if total > 0 {
                format!("{:.2}", rss as f64 / total as f64)
            } else {
                "-".to_owned()
            }
        );
        // Bounded by what arrived (the buffer at most doubles it, plus one
        // growth step), never by the 1,600 MiB declared.
        assert!(
            rss <= 2 * total + N * (GROWTH_STEP + 32 * KIB),
            "RSS grew {rss} bytes for {total} arrived"
        );
    }
    eprintln!(
        "  peak RSS (VmHWM) {} KiB; declared in total: {} MiB",
        status_kib("VmHWM"),
        N * DECLARED / MIB
    );
    assert!(errors.try_recv().is_err(), "no connection failed");
    drop(clients);
    reader.stop_blocking(STOP).unwrap();
}
