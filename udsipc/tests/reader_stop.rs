//! Shutdown that loses nothing the Reader read (issue 23): a stopping Reader
//! stops taking new bytes, hands over every message it already read (to the
//! `incoming()` stream, or to the async handler), then ends. Real sockets;
//! no timing assertions (deadlines only bound how long a test can hang).

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use udsipc::{Incoming, Reader, StopError, Writer};

/// A body of `len` bytes whose first four are `id`.
fn body(id: u32, len: usize) -> Vec<u8> {
    let mut b = vec![(id % 251) as u8; len.max(4)];
    b[..4].copy_from_slice(&id.to_le_bytes());
    b
}

fn id_of(body: &[u8]) -> u32 {
    u32::from_le_bytes(body[..4].try_into().unwrap())
}

/// Writes `n` frames of `len` bytes (ids 0..n) in one write, and waits until
/// the Reader has read every byte of them off the socket (`SIOCOUTQ` = 0):
/// from then on, all `n` are the Reader's to hand over.
fn write_and_wait_read(path: &std::path::Path, n: u32, len: usize) -> UnixStream {
    let mut s = UnixStream::connect(path).unwrap();
    let bodies: Vec<Vec<u8>> = (0..n).map(|i| body(i, len)).collect();
    let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
    s.write_all(&frames(&refs)).unwrap();
    eventually("the reader to read every byte", || unread(&s) == 0);
    s
}

async fn drain(incoming: &mut Incoming) -> Vec<u32> {
    let mut ids = Vec::new();
    while let Some(m) = incoming.recv().await {
        ids.push(id_of(&m.body));
    }
    ids
}

/// The forwarder: it leaves its `incoming()` loop, then stops the
/// Reader while nobody reads the stream, so the stop's deadline passes with
/// messages the Reader had read still in its connection buffer. Those used
/// to be dropped; now every one of them still comes out of the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_the_loop_then_stopping_loses_nothing_the_reader_read() {
    const N: u32 = 60; // 6 KiB: one read of the Reader's first buffer
    let sock = temp_sock();
    let (reader, mut incoming) = Reader::builder(&sock.path)
        .systemd(false)
        .incoming_capacity(4)
        .incoming()
        .unwrap();
    let path = sock.path.clone();
    let client = tokio::task::spawn_blocking(move || write_and_wait_read(&path, N, 100))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.push(id_of(&incoming.recv().await.unwrap().body));
    }
    // Leaves the loop: nobody reads while the Reader stops.
    let stopped = reader.stop(Duration::from_millis(100)).await;
    assert!(
        matches!(
            stopped,
            Ok(()) | Err(StopError::ConnectionsCut { unhandled: 0, .. })
        ),
        "{stopped:?}"
    );
    ids.extend(drain(&mut incoming).await);
    assert_eq!(
        ids,
        (0..N).collect::<Vec<_>>(),
        "every message read, once, in order"
    );
    assert_eq!(reader.metrics().received, u64::from(N));
    assert_eq!(reader.metrics().unhandled, 0);
    drop(client);
}

/// The documented pattern: a stop called from another task (a signal
/// handler, say) while the forwarder keeps draining the stream until
/// `None`. The stop also takes what waits in the kernel; everything the
/// Reader counted comes out exactly once, and the Writer counted nothing
/// delivered that did not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_from_another_task_while_draining_yields_every_message_read_then_none() {
    const N: u32 = 20_000;
    let sock = temp_sock();
    let (reader, mut incoming) = Reader::builder(&sock.path)
        .systemd(false)
        .incoming_capacity(64)
        .incoming()
        .unwrap();
    let reader = Arc::new(reader);
    let writer = Arc::new(
        Writer::builder(&sock.path)
            .max_buffered_writes(1024)
            .start()
            .unwrap(),
    );
    let producer = {
        let writer = Arc::clone(&writer);
        tokio::spawn(async move {
            for i in 0..N {
                if writer.send(body(i, 64)).await.is_err() {
                    break;
                }
            }
        })
    };
    // The forwarder: it drains until None, and has the stop called from
    // another task once it is mid-stream.
    let mut ids = Vec::new();
    let mut stopper = None;
    while let Some(m) = incoming.recv().await {
        ids.push(id_of(&m.body));
        if ids.len() == 1_000 {
            let reader = Arc::clone(&reader);
            stopper = Some(tokio::spawn(async move {
                reader.stop(Duration::from_secs(60)).await
            }));
        }
    }
    stopper.unwrap().await.unwrap().unwrap();
    let count = ids.len() as u32;
    assert_eq!(ids, (0..count).collect::<Vec<_>>(), "once each, in order");
    assert_eq!(reader.metrics().received, u64::from(count));
    let _ = writer.stop(Duration::from_millis(100)).await;
    producer.abort();
    let m = writer.metrics();
    assert!(m.delivered <= u64::from(count), "{m:?} vs {count} read");
}

/// `start_async`: a stop whose deadline passes while the handler is stuck
/// says precisely how many messages it read and never handed over (or whose
/// handler call it dropped); with those, every message read is accounted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_stop_cut_short_counts_every_message_read_and_not_handled() {
    const N: u32 = 60;
    let sock = temp_sock();
    let handled = Arc::new(AtomicU64::new(0));
    let reader = {
        let handled = Arc::clone(&handled);
        Reader::builder(&sock.path)
            .systemd(false)
            .start_async(move |m| {
                let handled = Arc::clone(&handled);
                async move {
                    if id_of(&m.body) == 5 {
                        // Stuck: the forced stop drops this call.
                        std::future::pending::<()>().await;
                    }
                    handled.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            })
            .unwrap()
    };
    let path = sock.path.clone();
    let client = tokio::task::spawn_blocking(move || write_and_wait_read(&path, N, 100))
        .await
        .unwrap();
    let err = reader.stop(Duration::from_millis(100)).await.unwrap_err();
    let StopError::ConnectionsCut { unhandled, .. } = err else {
        panic!("unexpected: {err:?}");
    };
    let handled = handled.load(Ordering::SeqCst);
    assert_eq!(handled, 5);
    assert_eq!(unhandled, u64::from(N) - handled, "{err}");
    assert_eq!(reader.metrics().unhandled, unhandled);
    assert_eq!(reader.metrics().received, handled);
    drop(client);
}

/// `start`: a forced stop that cuts a sync handler's hand-over short (more
/// frames buffered than it hands over between two looks at the phase) ends
/// the connection cleanly: every message read is handled or counted
/// unhandled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_stop_cut_short_counts_every_message_read_and_not_handled() {
    const N: u32 = 500; // 2.5 KiB: one read of the Reader's first buffer
    let sock = temp_sock();
    let reader = Reader::builder(&sock.path)
        .systemd(false)
        .start(|_| {
            std::thread::sleep(Duration::from_millis(2));
            Ok(())
        })
        .unwrap();
    let path = sock.path.clone();
    let client = tokio::task::spawn_blocking(move || write_and_wait_read(&path, N, 4))
        .await
        .unwrap();
    let err = reader.stop(Duration::from_millis(100)).await.unwrap_err();
    assert!(matches!(err, StopError::ConnectionsCut { .. }), "{err}");
    eventually("every message handled or counted unhandled", || {
        let m = reader.metrics();
        m.received + m.unhandled == u64::from(N)
    });
    assert!(reader.metrics().received < u64::from(N));
    drop(client);
}

/// `start_async` with a stop from another task and a handler that keeps
/// going: every message the Reader read is handed to the handler, once, in
/// order, before the stop completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_stop_hands_every_message_read_to_the_handler_before_it_completes() {
    const N: u32 = 20_000;
    let sock = temp_sock();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let reader = {
        let seen = Arc::clone(&seen);
        Reader::builder(&sock.path)
            .systemd(false)
            .start_async(move |m| {
                let seen = Arc::clone(&seen);
                async move {
                    tokio::task::yield_now().await;
                    seen.lock().unwrap().push(id_of(&m.body));
                    Ok(())
                }
            })
            .unwrap()
    };
    let writer = Arc::new(
        Writer::builder(&sock.path)
            .max_buffered_writes(1024)
            .start()
            .unwrap(),
    );
    let producer = {
        let writer = Arc::clone(&writer);
        tokio::spawn(async move {
            for i in 0..N {
                if writer.send(body(i, 64)).await.is_err() {
                    break;
                }
            }
        })
    };
    {
        let seen = Arc::clone(&seen);
        tokio::task::spawn_blocking(move || {
            eventually("1,000 handled", || seen.lock().unwrap().len() >= 1_000)
        })
        .await
        .unwrap();
    }
    reader.stop(Duration::from_secs(60)).await.unwrap();
    let ids = seen.lock().unwrap().clone();
    let count = ids.len() as u32;
    assert_eq!(ids, (0..count).collect::<Vec<_>>(), "once each, in order");
    assert_eq!(reader.metrics().received, u64::from(count));
    assert_eq!(reader.metrics().unhandled, 0);
    let _ = writer.stop(Duration::from_millis(100)).await;
    producer.abort();
    assert!(writer.metrics().delivered <= u64::from(count));
}

/// The read-ahead is bounded in bytes: with a slow consumer, the Reader
/// stops reading once the Incoming queue holds `incoming_capacity_bytes`
/// (far below its message capacity), and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_holds_at_most_the_byte_bound_and_loses_nothing() {
    const N: u32 = 400;
    const LEN: usize = 1024;
    const BOUND: usize = 16 * LEN;
    let sock = temp_sock();
    let (reader, mut incoming) = Reader::builder(&sock.path)
        .systemd(false)
        .incoming_capacity(1024)
        .incoming_capacity_bytes(BOUND)
        .incoming()
        .unwrap();
    let writer = Arc::new(Writer::builder(&sock.path).start().unwrap());
    let producer = {
        let writer = Arc::clone(&writer);
        tokio::spawn(async move {
            for i in 0..N {
                writer.send(body(i, LEN)).await.unwrap();
            }
        })
    };
    // The queue fills up to the bound and no further: `received` counts
    // what entered the queue, and nothing leaves it yet.
    let r = &reader;
    tokio::task::block_in_place(|| {
        eventually("the queue to fill", || {
            r.metrics().received == (BOUND / LEN) as u64
        })
    });
    let mut ids = Vec::new();
    while let Some(m) = incoming.recv().await {
        // What entered and has not come out yet (this one is out) never
        // exceeds the bound.
        let held = reader.metrics().received - (ids.len() as u64 + 1);
        assert!(held as usize * LEN <= BOUND, "{held} messages held");
        ids.push(id_of(&m.body));
        tokio::time::sleep(Duration::from_micros(200)).await; // slow
        if ids.len() == N as usize {
            break;
        }
    }
    assert_eq!(ids, (0..N).collect::<Vec<_>>());
    producer.await.unwrap();
    writer.stop(Duration::from_secs(30)).await.unwrap();
    reader.stop(Duration::from_secs(30)).await.unwrap();
    assert!(incoming.recv().await.is_none());
    assert_eq!(reader.metrics().received, u64::from(N));
}
