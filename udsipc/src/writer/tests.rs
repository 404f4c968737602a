//! Tests of the Writer's task that need a hook inside the crate: a message
//! that makes the task panic, to prove a panicked task surfaces at stop; a
//! gate before its dial; the count of wake-ups producers ask of it.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::Writer;
use super::queue::Item;
use crate::error::StopError;

/// The body that makes the writer task panic (test builds only).
const PANIC_BODY: &[u8] = b"\xffudsipc test: panic in the writer task";

/// Whether a message taken from the queue is [`PANIC_BODY`].
pub(crate) fn panic_requested(pending: &VecDeque<Item>) -> bool {
    pending.iter().any(|i| i.bytes.ends_with(PANIC_BODY))
}

/// Panics if a message taken from the queue is [`PANIC_BODY`].
pub(crate) fn maybe_panic(pending: &VecDeque<Item>) {
    if panic_requested(pending) {
        panic!("writer task panic requested by a test");
    }
}

/// A dial held until a test releases it: (socket path, release).
static DIAL_GATE: Mutex<Option<(PathBuf, Arc<Notify>)>> = Mutex::new(None);

/// Holds the writer task just before it dials `path`, if a test gated it.
pub(crate) async fn dial_gate(path: &Path) {
    let gate = DIAL_GATE.lock().unwrap().clone();
    if let Some((gated, release)) = gate {
        if gated == path {
            release.notified().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicked_writer_task_surfaces_as_task_panicked_at_stop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    // A peer that reads: the task proves the connection with the first
    // message's first byte and only then takes the next message (the one
    // that panics). Unread, the probe would hold it back for good.
    // (Detached: the panicked task's socket stays open while the Writer's
    // shared state lives.)
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let _ = std::io::copy(&mut conn, &mut std::io::sink());
    });
    let w = Writer::builder(&path).start().unwrap();
    w.try_send(b"before").unwrap();
    w.try_send(PANIC_BODY).unwrap();
    let handle = w.metrics_handle();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !handle.is_finished() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the task never ended"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let err = w.stop(Duration::from_secs(5)).await.unwrap_err();
    match err {
        StopError::TaskPanicked { task, message } => {
            assert_eq!(task, "writer");
            assert!(message.contains("panic requested by a test"), "{message}");
        }
        other => panic!("expected TaskPanicked, got {other}"),
    }
    // Nothing was lost silently: what the task held is counted.
    let m = w.metrics();
    assert_eq!(m.delivered + m.discarded + m.unconfirmed, 2, "{m:?}");
    assert_eq!(m.queue_depth, 0);
}

/// Two signals in a row in `udsipc send` (CI caught `discarded` 107 of
/// 10,000 queued): the stop began and was cancelled while the task was
/// dialing, so the task saw the force there, without the drain before it,
/// and discarded only what it had already taken; the rest of the closed
/// queue went uncounted.
#[test]
fn a_stop_cancelled_while_the_task_dials_counts_the_whole_queue_as_discarded() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nobody.sock");
    let release = Arc::new(Notify::new());
    *DIAL_GATE.lock().unwrap() = Some((path.clone(), Arc::clone(&release)));
    rt.block_on(async {
        let w = Writer::builder(&path).start().unwrap();
        // The task runs on this one thread: it finds the queue empty and
        // stops at the gate before its dial.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        for i in 0..100u32 {
            w.try_send(&i.to_be_bytes()).unwrap();
        }
        // One poll begins the stop (queue closed, drain); dropping it
        // forces. Then the dial goes on and sees the force.
        let stop = tokio::time::timeout(Duration::ZERO, w.stop(Duration::from_secs(3600)));
        assert!(stop.await.is_err(), "the stop cannot finish in one poll");
        release.notify_one();
        let handle = w.metrics_handle();
        while !handle.is_finished() {
            tokio::task::yield_now().await;
        }
        let m = w.metrics();
        assert_eq!((m.discarded, m.queue_depth, m.sent), (100, 0, 0), "{m:?}");
    });
    *DIAL_GATE.lock().unwrap() = None;
}

/// At 10,000 messages a second each message finds the queue empty and is
/// written by its producer; waking the task after each one too cost a
/// thread wake-up per message (on 2 cores, right when the reader needs
/// one). Now the task is woken only when the write left it something to
/// do (a timer its wait lacks, an error): not for a second direct write
/// whose delivery check the task's timer already covers.
/// A current-thread runtime this test polls only when it chooses, and a
/// listener at `w.sock` in a new directory.
fn runtime_and_listener() -> (
    tokio::runtime::Runtime,
    tempfile::TempDir,
    std::os::unix::net::UnixListener,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let listener = std::os::unix::net::UnixListener::bind(dir.path().join("w.sock")).unwrap();
    (rt, dir, listener)
}

/// A paced producer whose sleep overshot sends messages close together:
/// on an idle connection each is written by the producer's own thread, not
/// left to the task (whose wake-up was the p99 of the latency bench). The
/// task's runtime is not polled meanwhile, so only the producer can write.
#[test]
fn messages_close_together_on_an_idle_connection_are_written_by_the_producer() {
    let (rt, dir, listener) = runtime_and_listener();
    let path = dir.path().join("w.sock");
    let reading = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut first = vec![0u8; 6];
        std::io::Read::read_exact(&mut s, &mut first).unwrap();
        let mut rest = vec![0u8; 6];
        std::io::Read::read_exact(&mut s, &mut rest).map(|()| rest)
    });
    let w = Writer::builder(&path)
        .runtime(rt.handle().clone())
        .start()
        .unwrap();
    // The first message goes through the task: it dials and proves the
    // connection.
    w.try_send(b"first").unwrap();
    rt.block_on(async {
        while w.metrics().delivered < 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::task::yield_now().await;
    });
    for m in [&b"a"[..], b"b", b"c"] {
        w.try_send(m).unwrap();
    }
    let rest = reading.join().unwrap();
    assert_eq!(
        rest.unwrap(),
        b"\x01a\x01b\x01c",
        "all three written at once"
    );
    rt.block_on(w.stop(Duration::from_secs(10))).unwrap();
    assert_eq!(w.metrics().sent, 4);
}

#[test]
fn a_direct_write_wakes_the_task_only_for_what_its_wait_lacks() {
    let (rt, dir, listener) = runtime_and_listener();
    let path = dir.path().join("w.sock");
    // The reader reads the first message, then nothing until told: the
    // later ones stay unread, so each write needs the delivery check (a
    // reader quick enough to read one between its write and the check
    // would need none, and the test would depend on who runs first).
    let (go, wait_go) = std::sync::mpsc::channel::<()>();
    let reading = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut all = vec![0u8; 6];
        std::io::Read::read_exact(&mut s, &mut all).unwrap();
        wait_go.recv().unwrap();
        std::io::Read::read_to_end(&mut s, &mut all).unwrap();
        all
    });
    let w = Writer::builder(&path)
        .runtime(rt.handle().clone())
        .start()
        .unwrap();
    let settle = |n: u64| {
        rt.block_on(async {
            while w.metrics().delivered < n {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            // The task is waiting again.
            tokio::task::yield_now().await;
        })
    };
    // The first message goes through the task: it dials and proves the
    // connection. Then the connection is idle and nothing is unread.
    w.try_send(b"first").unwrap();
    settle(1);
    let wakes = || w.inner.queue.producer_wakes.load(Ordering::Relaxed);
    // Written by this thread; the task is woken if its wait lacks the
    // delivery check's timer, and arms it.
    w.try_send(b"a").unwrap();
    rt.block_on(async {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    });
    let before = wakes();
    // Past the producers' direct-write interval. The task does not run
    // during the call (its runtime is this thread's and is not polled).
    std::thread::sleep(Duration::from_micros(200));
    w.try_send(b"b").unwrap();
    assert_eq!(wakes(), before, "nothing new for the task");
    go.send(()).unwrap();
    settle(3);
    rt.block_on(w.stop(Duration::from_secs(10))).unwrap();
    assert_eq!(w.metrics().delivered, 3);
    drop(w);
    assert_eq!(reading.join().unwrap(), b"\x05first\x01a\x01b");
}

/// A fresh connection waits for the reader to read its probe byte, then its
/// head message, before anything else goes. It sampled the socket on a
/// timer for that (1 ms, then 2, ...), so every connection's first messages
/// waited about 4 ms for nothing (strace of `udsipc bench peer`, 10
/// messages: 2.3 ms from the Writer's start to the first delivery, and 2 ms
/// more for the other 9). The reader's reads show as room in the socket:
/// with the timer stretched to an hour, the reads alone must carry the
/// connection through its probe and its stop's drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readers_reads_alone_move_a_fresh_connection_and_a_drain_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.sock");
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&got);
    let reader = crate::Reader::builder(&path)
        .systemd(false)
        .start(move |m: &[u8]| {
            sink.lock().unwrap().push(m.to_vec());
            Ok(())
        })
        .unwrap();
    // The unread count is sampled only every hour while the Writer waits
    // for the reader.
    let mut builder = Writer::builder(&path);
    let hour = Duration::from_secs(3600);
    builder.cfg.sampling = (hour, hour);
    let w = builder.start().unwrap();
    let sent: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 64]).collect();
    for m in &sent {
        w.send(m).await.unwrap();
    }
    // Each stage waits on the reader; the stop waits until all is read.
    let stopped = tokio::time::timeout(Duration::from_secs(20), w.stop(Duration::from_secs(60)));
    stopped
        .await
        .expect("the Writer waited for a sample timer (an hour) instead of the reader's reads")
        .unwrap();
    let m = w.metrics();
    assert_eq!((m.sent, m.delivered, m.unconfirmed), (10, 10, 0), "{m:?}");
    reader.stop(Duration::from_secs(5)).await.unwrap();
    assert_eq!(*got.lock().unwrap(), sent);
}
