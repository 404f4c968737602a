//! The accept loop gives up after `max_accept_errors` consecutive failures
//! (Go: TestReaderAcceptErrorHandling). Alone in its own test binary because
//! it lowers the process's file-descriptor limit to make `accept` fail.

mod common;

use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::*;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use udsipc::Reader;

#[test]
fn accept_loop_gives_up_after_max_consecutive_errors() {
    let sock = temp_sock();
    let errs = Errors::default();
    let reader = Reader::builder(&sock.path)
        .systemd(false)
        .max_accept_errors(2)
        .on_error(errs.reader_callback())
        .start(|_: &[u8]| Ok(()))
        .unwrap();
    // Open descriptors up to the limit, so the Reader's accept gets EMFILE.
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let client = UnixStream::connect(&sock.path).unwrap();
    let mut hog = Vec::new();
    let lowered = 64 + count_open_fds();
    setrlimit(Resource::RLIMIT_NOFILE, lowered, hard).unwrap();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        hog.push(f);
    }
    // Free exactly one descriptor for our own end of the next connection.
    hog.pop();
    let extra = UnixStream::connect(&sock.path).unwrap();
    eventually("the accept loop gives up", || !errs.list().is_empty());
    drop(hog);
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
    let list = errs.list();
    assert!(
        list[0].starts_with("too many consecutive failures in accept loop"),
        "{list:?}"
    );
    assert!(list[0].contains("3 times"), "{list:?}");
    // Giving up is not counted as a message error (as in Go).
    assert_eq!(reader.metrics().errors, 0);
    // The listener is closed: new connections are refused.
    assert!(UnixStream::connect(&sock.path).is_err());
    drop((client, extra));
    reader.stop_blocking(Duration::from_secs(10)).unwrap();
}

fn count_open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(64)
}
