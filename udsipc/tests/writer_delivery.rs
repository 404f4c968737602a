//! What a Writer delivers and how it says so, against real Readers and raw
//! listeners: flow control instead of churn, poison messages, refusals,
//! `sent` vs `delivered`, unconfirmed messages that are never duplicated,
//! and the linger of a dropped Writer (issue 10).

mod common;

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use udsipc::{Reader, StopError, Writer};

const STOP: Duration = Duration::from_secs(20);

fn writer(path: &std::path::Path) -> udsipc::WriterBuilder {
    Writer::builder(path)
        .initial_backoff(Duration::from_millis(10))
        .max_backoff(Duration::from_millis(100))
}

fn numbered(i: u32, len: usize) -> Vec<u8> {
    let mut m = i.to_be_bytes().to_vec();
    m.resize(len, (i % 251) as u8);
    m
}

fn id(m: &[u8]) -> u32 {
    u32::from_be_bytes(m[..4].try_into().unwrap())
}

#[test]
fn a_reader_paused_3s_mid_stream_is_backpressure_not_a_reconnect() {
    const N: u32 = 20_000;
    let sock = temp_sock();
    let got = Arc::new(Mutex::new(Vec::with_capacity(N as usize)));
    let reader_errors = Errors::default();
    let paused = AtomicBool::new(false);
    let sink = Arc::clone(&got);
    let reader = Reader::builder(&sock.path)
        .systemd(false)
        .on_error(reader_errors.reader_callback())
        .start(move |m: &[u8]| {
            if id(m) == 2_000 && !paused.swap(true, Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(3));
            }
            sink.lock().unwrap().push(id(m));
            Ok(())
        })
        .unwrap();
    let writer_errors = Errors::default();
    let w = writer(&sock.path)
        .max_buffered_writes(1_000)
        .on_error(writer_errors.writer_callback())
        .start()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for i in 0..N {
            w.send(numbered(i, 200)).await.unwrap();
        }
    });
    w.stop_blocking(STOP).unwrap();
    eventually("every message", || got.lock().unwrap().len() == N as usize);
    reader.stop_blocking(STOP).unwrap();
    assert_eq!(
        *got.lock().unwrap(),
        (0..N).collect::<Vec<_>>(),
        "once each, in order"
    );
    let m = w.metrics();
    assert_eq!(
        (
            m.reconnects,
            m.failed,
            m.retried,
            m.unconfirmed,
            m.delivered
        ),
        (0, 0, 0, 0, N as u64),
        "{m:?}"
    );
    assert!(m.backpressure >= 1, "the pause was seen: {m:?}");
    assert_eq!(reader.metrics().errors, 0, "{:?}", reader_errors.list());
    let list = writer_errors.list();
    assert!(list.iter().all(|e| e.contains("Backpressure")), "{list:?}");
}

#[test]
fn a_message_larger_than_the_readers_max_is_failed_after_max_attempts_and_the_rest_arrive() {
    let sock = temp_sock();
    let c = Collector::new();
    let reader = Reader::builder(&sock.path)
        .systemd(false)
        .max_message_size(1024)
        .start(c.handler())
        .unwrap();
    let errs = Errors::default();
    let w = writer(&sock.path)
        .on_error(errs.writer_callback())
        .start()
        .unwrap();
    w.try_send(vec![7u8; 4 << 20]).unwrap();
    let small: Vec<Vec<u8>> = (0..10).map(|i| format!("small {i}").into_bytes()).collect();
    for m in &small {
        w.try_send(m).unwrap();
    }
    assert_eq!(c.take(10), small);
    w.stop_blocking(STOP).unwrap();
    reader.stop_blocking(STOP).unwrap();
    let m = w.metrics();
    assert_eq!(
        (m.failed, m.delivered, m.sent, m.queue_depth),
        (1, 10, 10, 0),
        "{m:?}"
    );
    assert!(
        m.reconnects <= u64::from(udsipc::DEFAULT_MAX_ATTEMPTS),
        "{m:?}"
    );
    let list = errs.list();
    assert!(
        list.iter().any(|e| e
            == "message failed | a 4194304-byte message was given up after 5 connections \
                ended before the reader read it whole"),
        "{list:?}"
    );
    assert!(reader.metrics().errors <= u64::from(udsipc::DEFAULT_MAX_ATTEMPTS));
}

#[test]
fn max_attempts_zero_is_refused() {
    let err = Writer::builder("/tmp/x.sock")
        .max_attempts(0)
        .start()
        .unwrap_err();
    assert!(err.to_string().contains("max_attempts"), "{err}");
}

#[test]
fn a_writer_refused_by_the_allow_list_backs_off_and_delivers_nothing() {
    let me = nix::unistd::getuid().as_raw();
    let someone_else = if me == 4242 { 4243 } else { 4242 };
    let sock = temp_sock();
    let c = Collector::new();
    let reader = Reader::builder(&sock.path)
        .systemd(false)
        .allow_uid(someone_else)
        .start(c.handler())
        .unwrap();
    let errs = Errors::default();
    let started = Instant::now();
    let w = Writer::builder(&sock.path)
        .initial_backoff(Duration::from_millis(10))
        .max_backoff(Duration::from_millis(200))
        .on_error(errs.writer_callback())
        .start()
        .unwrap();
    for i in 0..10u8 {
        w.try_send(&[i]).unwrap();
    }
    eventually("three refusals", || w.metrics().refused >= 3);
    std::thread::sleep(Duration::from_millis(500));
    let connects = reader.metrics().rejected_connections;
    let elapsed = started.elapsed().as_secs_f64();
    // Delays of 10, 20, 40, 80, 160 ms, then 200 ms each: a bound, not a
    // speed (a slow machine only makes fewer connections).
    let bound = 6.0 + elapsed / 0.2 + 2.0;
    assert!(
        (connects as f64) <= bound,
        "{connects} connections in {elapsed:.2} s: the writer storms"
    );
    let err = w.stop_blocking(Duration::from_millis(100)).unwrap_err();
    assert!(
        matches!(err, StopError::DeadlineExceeded { discarded: 10, .. }),
        "{err}"
    );
    reader.stop_blocking(STOP).unwrap();
    let m = w.metrics();
    assert_eq!(
        (m.delivered, m.failed, m.retried, m.discarded),
        (0, 0, 0, 10),
        "{m:?}"
    );
    assert!(m.refused >= 3);
    assert!(
        errs.list()
            .iter()
            .any(|e| e.starts_with("connection refused by the reader |"))
    );
    assert_eq!(reader.metrics().received, 0);
}

#[test]
fn sent_counts_what_the_kernel_took_and_delivered_what_the_reader_read() {
    let sock = temp_sock();
    let listener = UnixListener::bind(&sock.path).unwrap();
    let w = writer(&sock.path).start().unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    for m in [b"a", b"b", b"c"] {
        w.try_send(m).unwrap();
    }
    // The reader reads the first message only, and keeps the connection.
    let mut first = [0u8; 2];
    conn.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"\x01a");
    eventually("b and c written", || w.metrics().sent == 3);
    eventually("a confirmed", || w.metrics().delivered == 1);
    let err = w.stop_blocking(Duration::from_millis(200)).unwrap_err();
    assert!(
        matches!(
            err,
            StopError::DeadlineExceeded {
                discarded: 0,
                unconfirmed: 2,
                ..
            }
        ),
        "{err}"
    );
    let m = w.metrics();
    assert_eq!((m.sent, m.delivered, m.unconfirmed), (3, 1, 2), "{m:?}");
    // Unconfirmed is not lost: the reader can still read them.
    let (rest, _) = split_frames(&read_to_end(&mut conn));
    assert_eq!(rest, [b"b".to_vec(), b"c".to_vec()]);
}

#[test]
fn a_reader_that_closes_with_unread_messages_never_gets_one_twice() {
    const N: u32 = 200;
    let sock = temp_sock();
    let listener = UnixListener::bind(&sock.path).unwrap();
    let errs = Errors::default();
    let w = writer(&sock.path)
        .on_error(errs.writer_callback())
        .start()
        .unwrap();
    let (mut first, _) = listener.accept().unwrap();
    for i in 0..N {
        w.try_send(&numbered(i, 100)).unwrap();
    }
    // Three messages read, the rest left unread when the reader closes.
    let mut three = vec![0u8; 3 * 101];
    first.read_exact(&mut three).unwrap();
    eventually("everything written", || w.metrics().sent == u64::from(N));
    drop(first);
    let (mut second, _) = listener.accept().unwrap();
    let reading = std::thread::spawn(move || read_to_end(&mut second));
    w.stop_blocking(STOP).unwrap();
    let (mut got, rest) = split_frames(&three);
    assert_eq!(rest, 0);
    let (more, rest) = split_frames(&reading.join().unwrap());
    assert_eq!(rest, 0);
    got.extend(more);
    let ids: Vec<u32> = got.iter().map(|m| id(m)).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "no duplicate, in order: {ids:?}"
    );
    let m = w.metrics();
    assert_eq!(m.delivered + m.unconfirmed, u64::from(N), "{m:?}");
    assert!(m.unconfirmed > 0 && m.retried == 1, "{m:?}");
    assert_eq!(
        *ids.last().unwrap(),
        N - 1,
        "the last one, provably unread, was retried"
    );
    assert!(N as usize - ids.len() <= m.unconfirmed as usize);
    assert!(
        errs.list()
            .iter()
            .any(|e| e.starts_with("unconfirmed messages |")),
        "{:?}",
        errs.list()
    );
}

#[test]
fn a_dropped_writer_lingers_until_its_queue_is_delivered() {
    let sock = temp_sock();
    let c = Collector::new();
    let reader = sock.reader(&c);
    let w = writer(&sock.path)
        .linger(Duration::from_secs(60))
        .start()
        .unwrap();
    for i in 0..5_000u32 {
        w.try_send(&i.to_be_bytes()).unwrap();
    }
    let handle = w.metrics_handle();
    drop(w);
    let got = c.take(5_000);
    assert!(got.iter().enumerate().all(|(i, m)| id(m) == i as u32));
    eventually("the linger ends", || handle.is_finished());
    let m = handle.get();
    assert_eq!(
        (m.delivered, m.discarded, m.unconfirmed),
        (5_000, 0, 0),
        "{m:?}"
    );
    reader.stop_blocking(STOP).unwrap();
}

#[test]
fn a_dropped_writer_with_zero_linger_discards_at_once_and_counts_it() {
    let sock = temp_sock(); // nobody listens
    let w = writer(&sock.path).linger(Duration::ZERO).start().unwrap();
    for i in 0..5_000u32 {
        w.try_send(&i.to_be_bytes()).unwrap();
    }
    let handle = w.metrics_handle();
    drop(w);
    eventually("the task ends", || handle.is_finished());
    let m = handle.get();
    assert_eq!(
        (m.discarded, m.delivered, m.queue_depth),
        (5_000, 0, 0),
        "{m:?}"
    );
}

#[test]
fn the_metrics_handle_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<udsipc::WriterMetricsHandle>();
}

#[test]
fn defaults_of_the_new_options() {
    assert_eq!(udsipc::DEFAULT_MAX_ATTEMPTS, 5);
    assert_eq!(udsipc::DEFAULT_LINGER, Duration::from_secs(1));
}

/// A lone message on an open, idle connection is written by the thread that
/// queues it, without waiting for the Writer's task (one wake-up less on a
/// message's way): here the Writer's runtime is not even running when the
/// second message goes, and it still arrives, in order, counted as sent.
#[test]
fn a_lone_message_on_an_idle_connection_is_written_by_the_producer_itself() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("direct.sock");
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let tx = Mutex::new(tx);
    let reader = Reader::builder(&path)
        .systemd(false)
        .start(move |m: &[u8]| {
            tx.lock().unwrap().send(m.to_vec()).unwrap();
            Ok(())
        })
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let w = writer(&path).runtime(rt.handle().clone()).start().unwrap();
    // The task connects, proves the connection with a first message, and
    // sees it read.
    w.try_send(b"first").unwrap();
    rt.block_on(async {
        while w.metrics().delivered < 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    assert_eq!(rx.recv_timeout(STOP).unwrap(), b"first");
    // Nobody runs the runtime now: only this thread can write.
    std::thread::sleep(Duration::from_millis(1));
    w.try_send(b"second").unwrap();
    assert_eq!(rx.recv_timeout(STOP).unwrap(), b"second");
    assert_eq!(w.metrics().sent, 2);
    rt.block_on(w.stop(STOP)).unwrap();
    assert_eq!(w.metrics().delivered, 2);
    reader.stop_blocking(STOP).unwrap();
}

/// Issue 27: a reader that shut its side (`shutdown(SHUT_RD)`, as the
/// Reader's own drain does) makes the next write fail with EPIPE and no
/// pending error while 97 messages sit unread in its buffer. That was
/// taken as "the reader read every byte": `delivered` counted all 100.
#[test]
fn epipe_after_the_readers_shut_rd_counts_no_unread_message_as_delivered() {
    const N: u32 = 100;
    let sock = temp_sock();
    let listener = UnixListener::bind(&sock.path).unwrap();
    let w = writer(&sock.path).start().unwrap();
    let (mut first, _) = listener.accept().unwrap();
    for i in 0..N {
        w.try_send(&numbered(i, 100)).unwrap();
    }
    let mut three = vec![0u8; 3 * 101];
    first.read_exact(&mut three).unwrap();
    eventually("everything written", || w.metrics().sent == u64::from(N));
    first.shutdown(std::net::Shutdown::Read).unwrap();
    w.try_send(&numbered(N, 100)).unwrap();
    eventually("the write after the shutdown failed", || {
        w.metrics().unconfirmed > 0 || w.metrics().delivered > 3
    });
    drop(first);
    let (mut second, _) = listener.accept().unwrap();
    let reading = std::thread::spawn(move || read_to_end(&mut second));
    w.stop_blocking(STOP).unwrap();
    let (more, rest) = split_frames(&reading.join().unwrap());
    assert_eq!(rest, 0);
    let read = 3 + more.len() as u64;
    let m = w.metrics();
    assert!(
        m.delivered <= read,
        "delivered {} > read {read}: {m:?}",
        m.delivered
    );
    assert_eq!(
        m.delivered + m.unconfirmed + m.failed,
        u64::from(N) + 1,
        "{m:?}"
    );
    // The unread count is a lower bound of what was read (it counts the
    // kernel's buffers whole): of the 97 left unread, none is delivered.
    assert!(m.unconfirmed >= 97, "{m:?}");
}
