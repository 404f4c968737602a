//! The blocking forms (`send_blocking`, `send_timeout_blocking`,
//! `BufferedWriter::send_blocking` and `flush_blocking`), which run the
//! async forms' code polled once (their waits block, so they are never
//! pending), from each kind of thread, on a full queue (nobody listens):
//! where they can block they wait (a timeout ends the wait: `Timeout`,
//! the message not taken), where they cannot (a current-thread runtime's
//! own thread) they refuse at once (`BufferFull`); a stop ends every wait
//! (`Stopped`, the message handed back intact); none panics. The variant
//! is asserted, never a duration.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use udsipc::{StopError, WriteError, Writer};

/// A Writer to `path` (where nobody listens) whose one-message queue is
/// full.
fn full_writer(path: &std::path::Path, handle: Option<tokio::runtime::Handle>) -> Writer {
    let mut b = Writer::builder(path)
        .max_buffered_writes(1)
        .initial_backoff(Duration::from_millis(5))
        .max_backoff(Duration::from_millis(5));
    if let Some(h) = handle {
        b = b.runtime(h);
    }
    let w = b.start().unwrap();
    w.try_send(b"first").unwrap();
    assert!(w.try_send(b"refused").unwrap_err().is_buffer_full());
    w
}

/// Every blocking form once, each with a short timeout where it has one
/// (the others are not called where they would wait for ever): what each
/// answered.
fn blocking_forms(w: &Writer) -> [&'static str; 4] {
    let kind = |r: Result<(), WriteError<()>>| match r {
        Ok(()) => "Ok",
        Err(WriteError::BufferFull(())) => "BufferFull",
        Err(WriteError::Timeout(())) => "Timeout",
        Err(WriteError::Stopped(())) => "Stopped",
        Err(_) => "other",
    };
    let m = b"second".to_vec();
    let timed = kind(
        w.send_timeout_blocking(m.clone(), Duration::from_millis(5))
            .map_err(|e| e.map(|back| assert_eq!(back, m))),
    );
    let zero = kind(w.send_timeout_blocking(&m, Duration::ZERO));
    // A buffer of one byte: the message goes to the queue alone (through
    // the Writer's blocking send) only when it cannot wait.
    let mut b = w.buffered().with_capacity(1);
    let buffered = if timed == "BufferFull" {
        kind(b.send_blocking(&m))
    } else {
        "skipped"
    };
    let flushed = kind(b.flush_blocking());
    [timed, zero, buffered, flushed]
}

#[test]
fn on_a_plain_thread_they_wait() {
    let sock = temp_sock();
    let w = full_writer(&sock.path, None);
    assert_eq!(blocking_forms(&w), ["Timeout", "Timeout", "skipped", "Ok"]);
    assert_eq!(w.metrics().dropped, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_multi_thread_worker_they_wait() {
    let sock = temp_sock();
    let w = full_writer(&sock.path, None);
    assert_eq!(blocking_forms(&w), ["Timeout", "Timeout", "skipped", "Ok"]);
    let w = Arc::new(w);
    let w2 = Arc::clone(&w);
    let inside = tokio::task::block_in_place(move || blocking_forms(&w2));
    assert_eq!(inside, ["Timeout", "Timeout", "skipped", "Ok"]);
    let w2 = Arc::clone(&w);
    let pooled = tokio::task::spawn_blocking(move || blocking_forms(&w2))
        .await
        .unwrap();
    assert_eq!(pooled, ["Timeout", "Timeout", "skipped", "Ok"]);
    assert_eq!(w.metrics().dropped, 1);
}

#[tokio::test(flavor = "current_thread")]
async fn on_a_current_thread_runtimes_own_thread_they_refuse() {
    let sock = temp_sock();
    let w = full_writer(&sock.path, None);
    assert_eq!(
        blocking_forms(&w),
        ["BufferFull", "BufferFull", "BufferFull", "Ok"]
    );
    // Each refusal of a message counted as dropped (the one-byte buffer
    // sent its message alone, through the Writer's blocking send).
    assert_eq!(w.metrics().dropped, 1 + 3);
    // Nothing lost: a forced stop discards "first" alone.
    let _ = w.stop(Duration::ZERO).await;
    let m = w.metrics();
    assert_eq!((m.discarded, m.queue_depth), (1, 0), "{m:?}");
}

/// From the blocking pool of a current-thread runtime the calling thread
/// is not the runtime's: it could block while the runtime's own thread
/// runs the wait (as the docs say: only "on a current-thread runtime's
/// own thread" it cannot). It refuses instead.
#[tokio::test(flavor = "current_thread")]
#[ignore = "reproduces a bug: refuses (BufferFull) where it could wait; run with --ignored"]
async fn in_spawn_blocking_of_a_current_thread_runtime_they_wait() {
    let sock = temp_sock();
    let w = Arc::new(full_writer(&sock.path, None));
    let w2 = Arc::clone(&w);
    let pooled = tokio::task::spawn_blocking(move || blocking_forms(&w2))
        .await
        .unwrap();
    assert_eq!(pooled, ["Timeout", "Timeout", "skipped", "Ok"]);
}

#[test]
fn a_stop_ends_a_wait_without_end_and_hands_the_message_back() {
    let sock = temp_sock();
    let w = Arc::new(full_writer(&sock.path, None));
    let waiting: Vec<_> = (0..3u8)
        .map(|i| {
            let w = Arc::clone(&w);
            std::thread::spawn(move || {
                let m = vec![i; 40];
                let r = match i {
                    0 => w.send_blocking(m.clone()),
                    1 => w.send_timeout_blocking(m.clone(), Duration::MAX),
                    _ => w.send_timeout_blocking(m.clone(), Duration::from_secs(1 << 40)),
                };
                match r {
                    Err(WriteError::Stopped(back)) => assert_eq!(back, m),
                    other => panic!("{i}: {other:?}"),
                }
            })
        })
        .collect();
    // Whether they are waiting yet or not, they end `Stopped`.
    std::thread::sleep(Duration::from_millis(20));
    match w.stop_blocking(Duration::from_millis(20)) {
        Ok(()) | Err(StopError::DeadlineExceeded { .. }) => {}
        Err(e) => panic!("{e}"),
    }
    for t in waiting {
        t.join().unwrap();
    }
}

/// "Never panics": on a current-thread runtime's thread that entered a
/// multi-thread runtime (`Handle::enter`, e.g. to build things on it), the
/// current runtime is the multi-thread one, and waiting there is handed to
/// `block_in_place`, which panics outside that runtime's workers ("can call
/// blocking only when running on the multi-threaded runtime").
#[test]
#[ignore = "reproduces a bug: block_in_place panics in runtime::block_on; run with --ignored"]
fn on_a_current_thread_runtime_that_entered_a_multi_thread_one_none_panics() {
    let mt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let ct = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sock = temp_sock();
    let w = full_writer(&sock.path, Some(mt.handle().clone()));
    let answered = ct.block_on(async {
        let _entered = mt.handle().enter();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| blocking_forms(&w)))
    });
    let answered = answered.expect("a blocking form panicked");
    assert!(
        answered == ["Timeout", "Timeout", "skipped", "Ok"]
            || answered == ["BufferFull", "BufferFull", "BufferFull", "Ok"],
        "{answered:?}"
    );
}

/// The Writer's runtime (a current-thread one driven by a thread of its
/// own) shut down under producers blocked in every blocking form: each
/// ends `Stopped` (the message back, intact), none hangs or panics.
#[test]
fn a_runtime_shut_down_under_blocked_sends_ends_them_stopped() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = rt.handle().clone();
    let driver = std::thread::spawn(move || {
        rt.block_on(async move {
            let _ = stop_rx.await;
        });
        rt
    });
    let sock = temp_sock();
    let w = Arc::new(full_writer(&sock.path, Some(handle)));
    let waiting: Vec<_> = (0..4u8)
        .map(|i| {
            let w = Arc::clone(&w);
            std::thread::spawn(move || {
                let m = vec![i; 40];
                match i {
                    0 => match w.send_blocking(m.clone()) {
                        Err(WriteError::Stopped(back)) => assert_eq!(back, m),
                        other => panic!("{i}: {other:?}"),
                    },
                    1 => match w.send_timeout_blocking(m.clone(), Duration::MAX) {
                        Err(WriteError::Stopped(back)) => assert_eq!(back, m),
                        other => panic!("{i}: {other:?}"),
                    },
                    2 => {
                        let mut b = w.buffered().with_capacity(1);
                        let r = b.send_blocking(&m);
                        assert!(matches!(r, Err(WriteError::Stopped(()))), "{i}: {r:?}");
                    }
                    _ => {
                        let mut b = w.buffered().with_capacity(100);
                        b.send_blocking(&m).unwrap();
                        let r = b.flush_blocking();
                        assert!(matches!(r, Err(WriteError::Stopped(()))), "{i}: {r:?}");
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    stop_tx.send(()).unwrap();
    // Dropped on a thread outside any runtime: its tasks, the waits among
    // them, are dropped.
    drop(driver.join().unwrap());
    for t in waiting {
        let start = std::time::Instant::now();
        while !t.is_finished() {
            assert!(start.elapsed() < PATIENCE, "a blocked send hung");
            std::thread::sleep(Duration::from_millis(1));
        }
        t.join().unwrap();
    }
}
