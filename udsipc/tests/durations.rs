//! Every duration option takes `Duration::MAX` to mean "never": nothing adds
//! it to a clock reading unchecked (which would panic with "overflow when
//! adding duration to instant" inside a task).

mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use common::*;
use udsipc::{Reader, StopError, Writer};

const NEVER: Duration = Duration::MAX;
const STOP: Duration = Duration::from_secs(10);

fn assert_no_panic(result: Result<(), StopError>) {
    if let Err(e @ StopError::TaskPanicked { .. }) = result {
        panic!("{e}");
    }
}

#[test]
fn reader_with_a_never_inactivity_timeout_serves_and_stops() {
    let sock = temp_sock();
    let got = Collector::new();
    let reader = Reader::builder(&sock.path)
        .systemd(false)
        .inactivity_timeout(NEVER)
        .start(got.handler())
        .unwrap();
    let mut c = UnixStream::connect(&sock.path).unwrap();
    c.write_all(&frames(&[b"one"])).unwrap();
    // Half a frame: the body waits with no deadline.
    c.write_all(&[5, b'h']).unwrap();
    assert_eq!(got.take(1), vec![b"one".to_vec()]);
    let stopped = reader.stop_blocking(Duration::from_millis(200));
    assert_no_panic(stopped);
    assert_eq!(reader.metrics().received, 1);
}

#[test]
fn writer_with_every_duration_never_delivers_and_stops() {
    let sock = temp_sock();
    let got = Collector::new();
    let reader = sock.reader(&got);
    let writer = Writer::builder(&sock.path)
        .write_timeout(NEVER)
        .dial_timeout(NEVER)
        .initial_backoff(NEVER)
        .max_backoff(NEVER)
        .linger(NEVER)
        .start()
        .unwrap();
    writer.try_send(b"hello").unwrap();
    assert_eq!(got.take(1), vec![b"hello".to_vec()]);
    assert_no_panic(writer.stop_blocking(STOP));
    reader.stop_blocking(STOP).unwrap();
}

#[test]
fn writer_backing_off_for_ever_stops_within_its_deadline() {
    let sock = temp_sock();
    let errs = Errors::default();
    let writer = Writer::builder(&sock.path)
        .initial_backoff(NEVER)
        .max_backoff(NEVER)
        .on_error(errs.writer_callback())
        .start()
        .unwrap();
    // Nobody listens: the first dial fails and the backoff is "never".
    writer.try_send(b"lost").unwrap();
    eventually("the dial failed", || !errs.list().is_empty());
    assert_no_panic(writer.stop_blocking(Duration::from_millis(200)));
}

#[test]
fn writer_stalled_with_a_never_write_timeout_stops_within_its_deadline() {
    let sock = temp_sock();
    let listener = UnixListener::bind(&sock.path).unwrap();
    let writer = Writer::builder(&sock.path)
        .write_timeout(NEVER)
        .start()
        .unwrap();
    // A peer that never reads: the socket fills and the write stalls.
    writer.try_send(vec![7u8; 4 << 20]).unwrap();
    let (mut peer, _) = listener.accept().unwrap();
    eventually("the writer filled the socket", || readable(&peer) > 0);
    assert_no_panic(writer.stop_blocking(Duration::from_millis(200)));
    let _ = peer.read(&mut [0u8; 1]);
}

/// Bytes waiting to be read on `s` (`FIONREAD`).
fn readable(s: &UnixStream) -> usize {
    use std::os::fd::AsRawFd;
    let mut n: nix::libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points to
    // a live local; the fd is open for the call.
    #[allow(unsafe_code)]
    let rc = unsafe { nix::libc::ioctl(s.as_raw_fd(), nix::libc::FIONREAD, &mut n) };
    assert_eq!(rc, 0, "FIONREAD: {}", std::io::Error::last_os_error());
    n as usize
}
