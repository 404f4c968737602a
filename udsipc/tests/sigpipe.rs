//! A write to a closed peer must be an EPIPE error, not a SIGPIPE that kills
//! the host process: C programs embedding the library keep the default
//! disposition. Alone in its own test binary because it restores that
//! default for the whole process.

mod common;

use std::os::unix::net::UnixListener;
use std::time::Duration;

use common::*;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

#[test]
fn writing_to_a_closed_peer_does_not_raise_sigpipe() {
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: installs the default disposition (no handler function), in a
    // test process of its own; nothing here depends on SIGPIPE being ignored.
    #[allow(unsafe_code)]
    unsafe {
        sigaction(Signal::SIGPIPE, &default).unwrap();
    }
    let sock = temp_sock();
    let listener = UnixListener::bind(&sock.path).unwrap();
    let errs = Errors::default();
    let w = udsipc::Writer::builder(&sock.path)
        .initial_backoff(Duration::from_millis(10))
        .on_error(errs.writer_callback())
        .start()
        .unwrap();
    let (conn, _) = listener.accept().unwrap();
    // The peer stops reading without hanging up (no hang-up for the Writer
    // to notice first): the Writer's next write meets EPIPE.
    conn.shutdown(std::net::Shutdown::Read).unwrap();
    w.try_send(b"into a closed peer").unwrap();
    // Had SIGPIPE been raised, this process would be dead by now.
    eventually("the EPIPE failure", || {
        errs.list().iter().any(|e| e.contains("Broken pipe"))
    });
    drop(conn);
    let (mut next, _) = listener.accept().unwrap();
    let reading = std::thread::spawn(move || read_to_end(&mut next));
    w.stop_blocking(Duration::from_secs(10)).unwrap();
    let (got, _) = split_frames(&reading.join().unwrap());
    assert_eq!(got, [b"into a closed peer".to_vec()]);
}
