//! A Writer's stop in every setting a user can reach: no panic, a typed
//! error or a stop that works, and a bound whatever the callback does.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use udsipc::{StopError, Writer};

/// A Writer to `path` on a runtime of its own (one worker), to shut down.
fn writer_on_its_own_runtime(path: &std::path::Path) -> (tokio::runtime::Runtime, Writer) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let w = Writer::builder(path)
        .runtime(rt.handle().clone())
        .start()
        .unwrap();
    (rt, w)
}

#[test]
fn stop_blocking_after_the_runtime_was_shut_down_is_runtime_gone() {
    let sock = temp_sock();
    let (rt, w) = writer_on_its_own_runtime(&sock.path);
    w.try_send(b"lost with the runtime").unwrap();
    drop(rt);
    let err = w.stop_blocking(Duration::from_secs(1)).unwrap_err();
    assert!(matches!(err, StopError::RuntimeGone), "{err}");
    // Nothing was lost silently: the queue was counted out.
    let m = w.metrics();
    assert_eq!((m.discarded, m.queue_depth), (1, 0), "{m:?}");
}

/// A runtime shut down while a run of small messages is read in part: the
/// messages read count as delivered, the rest as unconfirmed: every one
/// is accounted for (the task's end published only `discarded` and
/// `unconfirmed`, so those read went uncounted).
#[test]
fn a_runtime_shut_down_under_a_run_read_in_part_accounts_for_every_message() {
    use std::io::Read;
    let sock = temp_sock();
    let listener = std::os::unix::net::UnixListener::bind(&sock.path).unwrap();
    let (rt, w) = writer_on_its_own_runtime(&sock.path);
    w.try_send(&[1u8; 100]).unwrap();
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    // The head message: its first byte alone (the probe), then the rest.
    let mut head = [0u8; 101];
    s.read_exact(&mut head).unwrap();
    eventually("the head is confirmed", || w.metrics().delivered == 1);
    for _ in 0..999 {
        w.try_send(&[2u8; 100]).unwrap();
    }
    eventually("the rest is written", || w.metrics().sent == 1_000);
    let mut half = vec![0u8; 500 * 101];
    s.read_exact(&mut half).unwrap();
    // Time for the writer to sample what was read (it samples on a timer).
    std::thread::sleep(Duration::from_millis(200));
    drop(rt);
    let m = w.metrics();
    assert_eq!(m.delivered + m.unconfirmed + m.discarded, 1_000, "{m:?}");
    assert!(m.delivered >= 1, "{m:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn stop_blocking_on_a_current_thread_runtime_is_would_deadlock_and_stop_await_works() {
    let sock = temp_sock();
    let c = Collector::new();
    let reader = sock.reader(&c);
    let w = Writer::builder(&sock.path).start().unwrap();
    w.try_send(b"x").unwrap();
    let err = w.stop_blocking(Duration::from_secs(5)).unwrap_err();
    assert!(matches!(err, StopError::WouldDeadlock), "{err}");
    w.stop(PATIENCE).await.unwrap();
    assert_eq!(w.metrics().delivered, 1);
    reader.stop(PATIENCE).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_blocking_from_inside_a_multi_thread_runtime_works() {
    let sock = temp_sock();
    let c = Collector::new();
    let reader = sock.reader(&c);
    let w = Writer::builder(&sock.path).start().unwrap();
    w.try_send(b"x").unwrap();
    w.stop_blocking(PATIENCE).unwrap();
    assert_eq!(w.metrics().delivered, 1);
    reader.stop(PATIENCE).await.unwrap();
}

#[test]
fn stop_returns_without_waiting_for_an_error_callback_that_blocks() {
    let sock = temp_sock(); // nobody listens: the callback gets connect errors
    let entered = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let (e, f) = (Arc::clone(&entered), Arc::clone(&finished));
    let w = Writer::builder(&sock.path)
        .on_error(move |_| {
            e.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_secs(15));
            f.store(true, Ordering::SeqCst);
        })
        .start()
        .unwrap();
    w.try_send(b"stuck").unwrap();
    eventually("the callback blocks", || entered.load(Ordering::SeqCst));
    let err = w.stop_blocking(Duration::from_millis(100)).unwrap_err();
    assert!(matches!(err, StopError::DeadlineExceeded { .. }), "{err}");
    assert!(
        !finished.load(Ordering::SeqCst),
        "the stop waited for the blocked callback"
    );
}
