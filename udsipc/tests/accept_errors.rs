//! Running out of file descriptors must not stop the Reader for good: while
//! `accept` fails with EMFILE the Reader sheds load (accepts and closes, counted
//! as rejected) and keeps accepting once descriptors are free again. Alone in
//! its own test binary because it lowers the process's file-descriptor limit.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::*;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use udsipc::Reader;

#[test]
fn fd_exhaustion_sheds_connections_then_accepts_again() {
    let sock = temp_sock();
    let errs = Errors::default();
    let got = Collector::new();
    let reader = Reader::builder(&sock.path)
        .systemd(false)
        .max_accept_errors(2)
        .on_error(errs.reader_callback())
        .start(got.handler())
        .unwrap();
    // Open descriptors up to the limit, so the Reader's accept gets EMFILE.
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let client = UnixStream::connect(&sock.path).unwrap();
    // Accepted before the descriptors run out (or it would be shed too).
    eventually("the first client is accepted", || {
        reader.metrics().connections == 1
    });
    let mut hog = Vec::new();
    let lowered = 64 + count_open_fds();
    setrlimit(Resource::RLIMIT_NOFILE, lowered, hard).unwrap();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        hog.push(f);
    }
    // Free exactly one descriptor for our own end of each next connection:
    // every one of them meets a Reader that has none left.
    let mut shed = Vec::new();
    for _ in 0..5 {
        hog.pop();
        let mut extra = UnixStream::connect(&sock.path).unwrap();
        extra.set_read_timeout(Some(PATIENCE)).unwrap();
        // Shed: accepted and closed unread, so our end reads EOF.
        let mut buf = [0u8; 1];
        assert_eq!(
            extra.read(&mut buf).unwrap(),
            0,
            "a shed connection sees EOF"
        );
        shed.push(extra);
    }
    eventually("five shed connections are counted", || {
        reader.metrics().rejected_connections == 5
    });
    drop(hog);
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
    // Never given up: a writer arriving after the exhaustion is served.
    let mut late = UnixStream::connect(&sock.path).unwrap();
    late.write_all(&frames(&[b"after"])).unwrap();
    assert_eq!(got.take(1), vec![b"after".to_vec()]);
    let list = errs.list();
    assert!(
        !list
            .iter()
            .any(|e| e.starts_with("too many consecutive failures")),
        "{list:?}"
    );
    assert!(
        list.iter()
            .all(|e| e.starts_with("connection rejected") && e.contains("file descriptors")),
        "{list:?}"
    );
    // Shedding is not counted as a message error.
    assert_eq!(reader.metrics().errors, 0);
    drop((client, late, shed));
    reader.stop_blocking(Duration::from_secs(10)).unwrap();
}

fn count_open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(64)
}
