//! The order book without its `epoll` set: when the set cannot be made (no
//! descriptor left), every older connection of the process is measured at
//! an admission instead. Forced here by lowering `RLIMIT_NOFILE` so that the
//! newer connection is accepted with the last descriptor the process may
//! open (alone in its test binary: the limit is the process's).
//!
//! The Reader runs on a current-thread runtime the test drives only once
//! both connections wait in the listener's backlog: A (written and closed
//! first) has never been read when B is admitted, so A is not on its
//! group's list and only a measure of its kernel queue (the set's answer,
//! or the fallback's measure of every member) holds B back. Every message
//! of A must be handed over before any of B's. Run with and without the
//! set. The accept loop takes both from the backlog in one go (a ready
//! listener does not yield), before A's task first runs, so B's admission
//! finds A open, unread and unlisted, with no descriptor left for the set.
//! (Checked under `strace -f -e trace=epoll_create1`: the set's
//! `epoll_create1` fails with `EMFILE` in the starved rounds and succeeds
//! in the others.)

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use udsipc::frame::encode_frame;

/// The `RLIMIT_NOFILE` that leaves `room` descriptors to open (the limit
/// bounds their numbers, and a new one takes the lowest free number).
fn limit_leaving(room: usize) -> u64 {
    let open: std::collections::HashSet<u64> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            // Not the listing's own descriptor (closed again after it).
            let target = std::fs::read_link(e.path()).ok()?;
            if target.starts_with("/proc") && target.ends_with("fd") {
                return None;
            }
            e.file_name().to_str()?.parse().ok()
        })
        .collect();
    let mut free = (0u64..).filter(|fd| !open.contains(fd));
    free.nth(room - 1).unwrap() + 1
}

fn burst(tag: u8, n: u32) -> Vec<u8> {
    let mut wire = Vec::new();
    for i in 0..n {
        let mut b = vec![tag];
        b.extend_from_slice(&i.to_le_bytes());
        b.resize(40, tag);
        encode_frame(&b, &mut wire);
    }
    wire
}

fn round(n: u32, starve: bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sock = temp_sock();
    let got: Arc<Mutex<Vec<(u8, u32)>>> = Arc::default();
    let reader = {
        let got = Arc::clone(&got);
        udsipc::Reader::builder(&sock.path)
            .systemd(false)
            .runtime(rt.handle().clone())
            .start(move |m: &[u8]| {
                let id = (m[0], u32::from_le_bytes(m[1..5].try_into().unwrap()));
                got.lock().unwrap().push(id);
                Ok(())
            })
            .unwrap()
    };
    // Both wait in the backlog, A written whole and closed before B exists.
    let mut a = UnixStream::connect(&sock.path).unwrap();
    a.write_all(&burst(b'A', n)).unwrap();
    drop(a);
    let mut b = UnixStream::connect(&sock.path).unwrap();
    b.write_all(&burst(b'B', n)).unwrap();
    drop(b);
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if starve {
        // Room for the two accepted ends and nothing more.
        setrlimit(Resource::RLIMIT_NOFILE, limit_leaving(2), hard).unwrap();
    }
    rt.block_on(async {
        let start = Instant::now();
        while reader.metrics().connections < 2 && start.elapsed() < PATIENCE {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
        let start = Instant::now();
        while got.lock().unwrap().len() < 2 * n as usize && start.elapsed() < PATIENCE {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 2 * n as usize, "{:?}", reader.metrics());
    let first_b = got.iter().position(|(t, _)| *t == b'B').unwrap();
    let last_a = got.iter().rposition(|(t, _)| *t == b'A').unwrap();
    assert!(
        last_a < first_b,
        "A's message {:?} after B's {:?} (set starved: {starve})",
        got[last_a],
        got[first_b]
    );
    for tag in [b'A', b'B'] {
        let seq: Vec<u32> = got.iter().filter(|(t, _)| *t == tag).map(|x| x.1).collect();
        assert_eq!(seq, (0..n).collect::<Vec<_>>());
    }
    rt.block_on(reader.stop(PATIENCE)).unwrap();
}

#[test]
fn an_older_connection_never_read_holds_a_newer_one_back_with_and_without_a_set() {
    for n in [1, 50, 400] {
        round(n, true);
        round(n, false);
    }
}
