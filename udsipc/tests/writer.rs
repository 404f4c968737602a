//! Writer behaviour over real Unix sockets, against raw listeners that read
//! (or refuse to read) exactly as each test needs (Go: writer_test.go).

mod common;

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::time::Duration;

use common::*;
use rstest::rstest;
use udsipc::{ConfigError, Reader, StartError, StopError, WriteError, WriteFailure, Writer};

const STOP: Duration = Duration::from_secs(10);
const FAST: Duration = Duration::from_millis(20);

fn writer(path: &std::path::Path) -> udsipc::WriterBuilder {
    Writer::builder(path)
        .initial_backoff(FAST)
        .max_backoff(Duration::from_millis(100))
}

#[rstest]
#[case::empty_path("", |b: udsipc::WriterBuilder| b, "empty path")]
#[case::zero_write_timeout("/tmp/x.sock", |b: udsipc::WriterBuilder| b.write_timeout(Duration::ZERO), "write_timeout")]
#[case::zero_dial_timeout("/tmp/x.sock", |b: udsipc::WriterBuilder| b.dial_timeout(Duration::ZERO), "dial_timeout")]
#[case::zero_max_backoff("/tmp/x.sock", |b: udsipc::WriterBuilder| b.max_backoff(Duration::ZERO), "max_backoff")]
#[case::zero_initial_backoff("/tmp/x.sock", |b: udsipc::WriterBuilder| b.initial_backoff(Duration::ZERO), "initial_backoff")]
#[case::zero_capacity("/tmp/x.sock", |b: udsipc::WriterBuilder| b.max_buffered_writes(0), "max_buffered_writes")]
fn invalid_options_are_refused(
    #[case] path: &str,
    #[case] set: fn(udsipc::WriterBuilder) -> udsipc::WriterBuilder,
    #[case] names: &str,
) {
    let err = set(Writer::builder(path)).start().unwrap_err();
    assert!(err.to_string().contains(names), "{err}");
}

#[test]
fn too_long_path_is_refused() {
    let long = format!("/tmp/{}", "y".repeat(udsipc::max_socket_path_len()));
    assert!(matches!(
        Writer::builder(&long).start(),
        Err(StartError::Config(ConfigError::PathTooLong { .. }))
    ));
}

#[test]
fn full_queue_refuses_without_blocking_and_counts_drops() {
    let sock = temp_sock(); // nobody listens
    let errs = Errors::default();
    let w = writer(&sock.path)
        .max_buffered_writes(5)
        .on_error(errs.writer_callback())
        .start()
        .unwrap();
    for i in 0..5u8 {
        w.try_send(&[i]).unwrap();
    }
    let err = w.try_send(b"six").unwrap_err();
    assert!(err.is_buffer_full());
    let back = w.try_send(vec![1, 2, 3]).unwrap_err().into_inner();
    assert_eq!(
        back.as_ref(),
        &[1, 2, 3],
        "the refused message is handed back"
    );
    let m = w.metrics();
    assert_eq!((m.dropped, m.queue_depth, m.sent), (2, 5, 0));
    eventually("a connect error", || !errs.list().is_empty());
    assert!(
        errs.list()[0].starts_with("failed to connect"),
        "{:?}",
        errs.list()
    );
    let err = w.stop_blocking(Duration::from_millis(50)).unwrap_err();
    assert!(
        matches!(err, StopError::DeadlineExceeded { discarded: 5, .. }),
        "{err}"
    );
    assert_eq!(w.metrics().discarded, 5);
    assert_eq!(w.metrics().queue_depth, 0);
}

#[test]
fn empty_messages_are_accepted_and_not_sent() {
    let sock = temp_sock();
    let c = Collector::new();
    let reader = sock.reader(&c);
    let w = writer(&sock.path).start().unwrap();
    w.try_send(b"").unwrap();
    w.try_send(Vec::new()).unwrap();
    w.try_send(b"x").unwrap();
    assert_eq!(c.take(1), [b"x".to_vec()]);
    w.stop_blocking(STOP).unwrap();
    reader.stop_blocking(STOP).unwrap();
    assert_eq!(w.metrics().sent, 1);
    assert_eq!(reader.metrics().received, 1);
}

#[test]
fn writes_after_stop_are_refused() {
    let sock = temp_sock();
    let w = writer(&sock.path).start().unwrap();
    w.stop_blocking(STOP).unwrap();
    assert!(matches!(w.try_send(b"late"), Err(WriteError::Stopped(_))));
    w.stop_blocking(STOP).unwrap(); // idempotent
}

#[test]
fn a_reader_that_closes_after_reading_loses_nothing_and_the_rest_goes_on_a_new_connection() {
    // Before issue 10 this counted a failed write (the message was retried);
    // now the hang-up is seen, nothing was unread, nothing fails.
    let sock = temp_sock();
    let listener = UnixListener::bind(&sock.path).unwrap();
    let errs = Errors::default();
    let w = writer(&sock.path)
        .on_error(errs.writer_callback())
        .start()
        .unwrap();
    let (mut first, _) = listener.accept().unwrap();
    w.try_send(b"one").unwrap();
    let mut buf = [0u8; 4];
    first.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, &[3, b'o', b'n', b'e']);
    drop(first); // the consumer goes away, having read everything
    w.try_send(b"two").unwrap();
    w.try_send(b"three").unwrap();
    let (mut second, _) = listener.accept().unwrap();
    let reading = std::thread::spawn(move || read_to_end(&mut second));
    let r = w.stop_blocking(STOP);
    assert!(r.is_ok(), "{r:?} {:?} {:?}", w.metrics(), errs.list());
    let (got, rest) = split_frames(&reading.join().unwrap());
    assert_eq!(got, [b"two".to_vec(), b"three".to_vec()]);
    assert_eq!(rest, 0);
    let m = w.metrics();
    assert_eq!(
        (m.sent, m.delivered, m.failed, m.unconfirmed, m.reconnects),
        (3, 3, 0, 0, 1)
    );
    // The close is either seen as a hang-up while idle (not an error: nothing
    // was lost) or met by the next write (a NoConsumer write failure).
    let list = errs.list();
    assert!(
        list.iter()
            .all(|e| e.starts_with("write failure |") && e.contains("NoConsumer")),
        "{list:?}"
    );
}

#[test]
fn a_stalled_reader_is_backpressure_on_the_same_connection_and_nothing_is_sent_twice_or_half() {
    // Before issue 10 the stall cut the connection (write timeout) and the
    // rest went on a new one; now the connection is kept.
    let sock = temp_sock();
    let listener = UnixListener::bind(&sock.path).unwrap();
    let errs = Errors::default();
    let w = writer(&sock.path)
        .write_timeout(Duration::from_millis(100))
        .write_buffer_size(16 * 1024)
        .on_error(errs.writer_callback())
        .start()
        .unwrap();
    let (mut stalled, _) = listener.accept().unwrap();
    let msgs: Vec<Vec<u8>> = (0..400u32)
        .map(|i| {
            let mut m = i.to_be_bytes().to_vec();
            m.resize(1000, (i % 251) as u8);
            m
        })
        .collect();
    for m in &msgs {
        w.try_send(m).unwrap();
    }
    let reading = std::thread::spawn(move || {
        // The first message, then a stall well past the write timeout.
        let mut first = vec![0u8; 1002];
        stalled.read_exact(&mut first).unwrap();
        std::thread::sleep(Duration::from_millis(600));
        let mut all = first;
        all.extend(read_to_end(&mut stalled));
        all
    });
    eventually("a backpressure episode", || w.metrics().backpressure >= 1);
    w.stop_blocking(STOP).unwrap();
    let (delivered, rest) = split_frames(&reading.join().unwrap());
    assert_eq!(rest, 0);
    assert_eq!(
        delivered, msgs,
        "every message exactly once, whole, in order"
    );
    let m = w.metrics();
    assert_eq!(
        (m.sent, m.delivered, m.failed, m.reconnects, m.retried),
        (400, 400, 0, 0, 0)
    );
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "no second connection");
    let list = errs.list();
    assert!(list.iter().any(|e| e.contains("Backpressure")), "{list:?}");
    assert!(!list.iter().any(|e| e.contains("NoConsumer")), "{list:?}");
    let e = udsipc::WriterError::Write {
        kind: WriteFailure::Backpressure,
        phase: udsipc::WritePhase::Running,
        source: std::io::Error::other("x"),
    };
    assert_eq!(e.write_failure(), WriteFailure::Backpressure);
}

#[test]
fn stop_drains_through_a_reconnect() {
    let sock = temp_sock();
    let w = writer(&sock.path).start().unwrap();
    for i in 0..100u8 {
        w.try_send(&[i]).unwrap();
    }
    // The reader appears only after the stop began.
    let c = Collector::new();
    let path = sock.path.clone();
    let handler = c.handler();
    let starter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        Reader::builder(&path)
            .systemd(false)
            .start(handler)
            .unwrap()
    });
    w.stop_blocking(STOP).unwrap();
    let reader = starter.join().unwrap();
    let got = c.take(100);
    assert_eq!(got, (0..100u8).map(|i| vec![i]).collect::<Vec<_>>());
    reader.stop_blocking(STOP).unwrap();
    assert_eq!(w.metrics().sent, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_waits_for_room_and_never_drops() {
    let sock = temp_sock();
    let c = Collector::new();
    let reader = sock.reader(&c);
    let w = writer(&sock.path).max_buffered_writes(4).start().unwrap();
    for i in 0..20_000u32 {
        w.send(i.to_le_bytes().to_vec()).await.unwrap();
    }
    w.stop(STOP).await.unwrap();
    expect_numbered(c, 20_000).await;
    assert_eq!(w.metrics().dropped, 0);
    reader.stop(STOP).await.unwrap();
}

/// Takes `n` messages from `c` and checks they are 0..n, in order, as
/// little-endian `u32`s.
async fn expect_numbered(c: Collector, n: u32) {
    let got = tokio::task::spawn_blocking(move || c.take(n as usize))
        .await
        .unwrap();
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m, &(i as u32).to_le_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_fails_once_stopped() {
    let sock = temp_sock();
    let w = writer(&sock.path).start().unwrap();
    w.stop(STOP).await.unwrap();
    let err = w.send(&b"late"[..]).await.unwrap_err();
    assert!(matches!(err, WriteError::Stopped(())));
    let err = w.send(b"owned".to_vec()).await.unwrap_err();
    assert!(matches!(err, WriteError::Stopped(ref b) if b == &b"owned"[..]));
}

/// Sends 20,000 numbered messages with `send` through a queue of 4,
/// from one reused buffer; all arrive, in order, none dropped.
async fn send_copy_waits_for_room_and_never_drops(sock: &TempSock, w: &Writer) {
    let c = Collector::new();
    let reader = sock.reader(&c);
    let mut record = [0u8; 4];
    for i in 0..20_000u32 {
        record.copy_from_slice(&i.to_le_bytes());
        w.send(&record).await.unwrap();
    }
    w.send(b"").await.unwrap(); // accepted, not sent (as in Go)
    w.stop(STOP).await.unwrap();
    expect_numbered(c, 20_000).await;
    let m = w.metrics();
    assert_eq!((m.sent, m.dropped), (20_000, 0));
    reader.stop(STOP).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_copy_waits_for_room_on_a_multi_thread_runtime() {
    let sock = temp_sock();
    let w = writer(&sock.path).max_buffered_writes(4).start().unwrap();
    send_copy_waits_for_room_and_never_drops(&sock, &w).await;
}

/// The Writer's task shares the producer's only thread: it runs whenever
/// the producer waits for room.
#[tokio::test(flavor = "current_thread")]
async fn send_copy_waits_for_room_on_the_producers_current_thread_runtime() {
    let sock = temp_sock();
    let w = writer(&sock.path).max_buffered_writes(4).start().unwrap();
    send_copy_waits_for_room_and_never_drops(&sock, &w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_copy_fails_once_stopped() {
    let sock = temp_sock();
    let w = writer(&sock.path).start().unwrap();
    w.stop(STOP).await.unwrap();
    let err = w.send(b"late").await.unwrap_err();
    assert!(matches!(err, WriteError::Stopped(_)), "{err}");
}

/// With a byte bound smaller than the messages, each waits for an empty
/// queue (which takes any one message) instead of being refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_copy_of_messages_larger_than_the_byte_bound_waits_for_an_empty_queue() {
    let sock = temp_sock();
    let c = Collector::new();
    let reader = sock.reader(&c);
    let w = writer(&sock.path)
        .max_buffered_bytes(16 * 1024)
        .start()
        .unwrap();
    let mut big = vec![0u8; 40 * 1024];
    for i in 0..50u8 {
        big.fill(i);
        w.send(&big).await.unwrap();
    }
    w.stop(STOP).await.unwrap();
    let got = tokio::task::spawn_blocking(move || c.take(50))
        .await
        .unwrap();
    for (i, m) in got.iter().enumerate() {
        assert!(m.len() == big.len() && m.iter().all(|&b| b == i as u8));
    }
    assert_eq!(w.metrics().dropped, 0);
    reader.stop(STOP).await.unwrap();
}

#[test]
fn writer_connects_at_start_like_go() {
    let sock = temp_sock();
    let listener = UnixListener::bind(&sock.path).unwrap();
    let w = writer(&sock.path).start().unwrap();
    // No message queued, yet the writer dials.
    let (mut conn, _) = listener.accept().unwrap();
    w.stop_blocking(STOP).unwrap();
    assert_eq!(read_to_end(&mut conn), Vec::<u8>::new());
}

#[test]
fn large_owned_messages_arrive_whole() {
    let sock = temp_sock();
    let c = Collector::new();
    let reader = sock.reader(&c);
    let w = writer(&sock.path).start().unwrap();
    let big: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; (1 << 20) + i as usize]).collect();
    for m in &big {
        w.try_send(m.clone()).unwrap();
        w.try_send(&m[..70_000]).unwrap();
    }
    let got = c.take(8);
    for (i, m) in big.iter().enumerate() {
        assert_eq!(got[2 * i], *m);
        assert_eq!(got[2 * i + 1], m[..70_000]);
    }
    w.stop_blocking(STOP).unwrap();
    reader.stop_blocking(STOP).unwrap();
}

#[test]
fn reconnects_after_the_reader_restarts() {
    let sock = temp_sock();
    let errs = Errors::default();
    let w = writer(&sock.path)
        .on_error(errs.writer_callback())
        .start()
        .unwrap();
    let c1 = Collector::new();
    let r1 = Reader::builder(&sock.path)
        .systemd(false)
        .start(c1.handler())
        .unwrap();
    w.try_send(b"before").unwrap();
    assert_eq!(c1.take(1), [b"before".to_vec()]);
    r1.stop_blocking(STOP).unwrap();
    let c2 = Collector::new();
    let r2 = Reader::builder(&sock.path)
        .systemd(false)
        .start(c2.handler())
        .unwrap();
    for i in 0..50u8 {
        w.try_send(&[i]).unwrap();
    }
    assert_eq!(c2.take(50), (0..50u8).map(|i| vec![i]).collect::<Vec<_>>());
    w.stop_blocking(STOP).unwrap();
    r2.stop_blocking(STOP).unwrap();
    assert_eq!(w.metrics().sent, 51);
    assert!(w.metrics().reconnects >= 1);
}

#[test]
fn drop_without_stop_neither_hangs_nor_panics() {
    let sock = temp_sock();
    let w = writer(&sock.path).start().unwrap();
    w.try_send(b"lost").unwrap();
    drop(w); // lingers in the background (see tests/writer_delivery.rs)
}

#[test]
fn a_connection_closed_before_reading_is_refused_and_the_message_goes_on_the_next() {
    // Before issue 10 this was a failed write; now a connection closed with
    // nothing read is a refusal: nothing failed, nothing retried.
    let sock = temp_sock();
    let listener = UnixListener::bind(&sock.path).unwrap();
    let errs = Errors::default();
    let w = writer(&sock.path)
        .on_error(errs.writer_callback())
        .start()
        .unwrap();
    let (first, _) = listener.accept().unwrap();
    // The reader stops reading without hanging up: the probe byte fails.
    first.shutdown(std::net::Shutdown::Read).unwrap();
    w.try_send(b"pending retry").unwrap();
    eventually("the refusal", || w.metrics().refused == 1);
    drop(first);
    let (mut second, _) = listener.accept().unwrap();
    let reading = std::thread::spawn(move || read_to_end(&mut second));
    w.stop_blocking(STOP).unwrap();
    let (got, rest) = split_frames(&reading.join().unwrap());
    assert_eq!((got, rest), (vec![b"pending retry".to_vec()], 0));
    let m = w.metrics();
    assert_eq!((m.sent, m.delivered, m.failed, m.retried), (1, 1, 0, 0));
    let list = errs.list();
    assert!(
        list.iter()
            .any(|e| e.starts_with("connection refused by the reader |")),
        "{list:?}"
    );
}

#[test]
fn queued_message_survives_a_dead_connection_at_stop() {
    let sock = temp_sock();
    let listener = UnixListener::bind(&sock.path).unwrap();
    let w = writer(&sock.path).start().unwrap();
    let (first, _) = listener.accept().unwrap();
    drop(first);
    // Queued just before the stop: the dead connection is found before or
    // during the drain, and the message goes on the next connection.
    w.try_send(b"m").unwrap();
    let stopper = std::thread::spawn(move || {
        let r = w.stop_blocking(STOP);
        (w, r)
    });
    let (mut second, _) = listener.accept().unwrap();
    let got = read_to_end(&mut second);
    let (w, r) = stopper.join().unwrap();
    r.unwrap();
    let (got, _) = split_frames(&got);
    assert_eq!(got, [b"m".to_vec()]);
    let m = w.metrics();
    assert_eq!((m.delivered, m.failed, m.discarded), (1, 0, 0));
}

#[test]
fn small_queue_drops_the_overflow_and_delivers_the_rest() {
    // Go: TestReaderWriterIntegration "small buffer high throughput".
    let sock = temp_sock();
    let w = writer(&sock.path).max_buffered_writes(15).start().unwrap();
    let mut refused = 0;
    for i in 0..20u8 {
        if w.try_send(&[i]).is_err() {
            refused += 1;
        }
    }
    assert_eq!(refused, 5);
    let c = Collector::new();
    let reader = sock.reader(&c);
    assert_eq!(c.take(15), (0..15u8).map(|i| vec![i]).collect::<Vec<_>>());
    w.stop_blocking(STOP).unwrap();
    reader.stop_blocking(STOP).unwrap();
    let m = w.metrics();
    assert_eq!((m.sent, m.dropped), (15, 5));
}

#[test]
fn concurrent_producers_and_stops_neither_hang_nor_lose_accepted_messages() {
    // Go: TestWriterShutdownRaceConditions.
    let sock = temp_sock();
    let c = Collector::new();
    let reader = sock.reader(&c);
    let w = std::sync::Arc::new(
        writer(&sock.path)
            .max_buffered_writes(1_000_000)
            .start()
            .unwrap(),
    );
    let producers: Vec<_> = (0..4u8)
        .map(|p| {
            let w = w.clone();
            std::thread::spawn(move || {
                let mut accepted = 0u64;
                for i in 0..5000u32 {
                    let mut m = vec![p];
                    m.extend_from_slice(&i.to_be_bytes());
                    match w.try_send(&m) {
                        Ok(()) => accepted += 1,
                        Err(WriteError::Stopped(_)) => break,
                        Err(e) => panic!("{e}"),
                    }
                }
                accepted
            })
        })
        .collect();
    let stoppers: Vec<_> = (0..3)
        .map(|_| {
            let w = w.clone();
            std::thread::spawn(move || w.stop_blocking(STOP))
        })
        .collect();
    let accepted: u64 = producers.into_iter().map(|p| p.join().unwrap()).sum();
    for s in stoppers {
        s.join().unwrap().unwrap();
    }
    assert_eq!(
        w.metrics().sent,
        accepted,
        "every accepted message was sent by the drain"
    );
    let got = c.take(accepted as usize);
    reader.stop_blocking(STOP).unwrap();
    let mut next = [0u32; 4];
    for m in got {
        let p = m[0] as usize;
        assert_eq!(u32::from_be_bytes(m[1..5].try_into().unwrap()), next[p]);
        next[p] += 1;
    }
}

#[test]
fn defaults_are_gos() {
    assert_eq!(udsipc::DEFAULT_MAX_BUFFERED_WRITES, 10_000);
    assert_eq!(udsipc::DEFAULT_WRITE_TIMEOUT, Duration::from_secs(1));
    assert_eq!(udsipc::DEFAULT_DIAL_TIMEOUT, Duration::from_secs(1));
    assert_eq!(udsipc::DEFAULT_INITIAL_BACKOFF, Duration::from_secs(1));
    assert_eq!(udsipc::DEFAULT_MAX_BACKOFF, Duration::from_secs(10));
    assert_eq!(udsipc::DEFAULT_WRITE_BUFFER_SIZE, 256 * 1024);
    assert_eq!(udsipc::DEFAULT_MAX_MESSAGE_SIZE, 10 * 1024 * 1024);
    assert_eq!(udsipc::DEFAULT_INACTIVITY_TIMEOUT, Duration::from_secs(10));
    assert_eq!(udsipc::DEFAULT_MAX_ACCEPT_ERRORS, 10);
    assert_eq!(udsipc::DEFAULT_READ_BUFFER_SIZE, 256 * 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_stop_discards_instead_of_draining_forever() {
    let sock = temp_sock(); // nobody listens: the drain cannot finish
    let w = writer(&sock.path).start().unwrap();
    for i in 0..10u8 {
        w.try_send(&[i]).unwrap();
    }
    let abandoned =
        tokio::time::timeout(Duration::from_millis(50), w.stop(Duration::from_secs(3600))).await;
    assert!(abandoned.is_err(), "the stop could not have finished");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while w.metrics().discarded < 10 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still draining after the stop was dropped"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(w.metrics().queue_depth, 0);
}

#[test]
fn a_panicking_error_callback_does_not_kill_the_writer() {
    let sock = temp_sock();
    let w = writer(&sock.path)
        .on_error(|_| panic!("callback bug"))
        .start()
        .unwrap();
    w.try_send(b"survivor").unwrap();
    // Connect errors (and their panicking callback) happen until a reader comes.
    std::thread::sleep(Duration::from_millis(60));
    let c = Collector::new();
    let reader = sock.reader(&c);
    assert_eq!(c.take(1), [b"survivor".to_vec()]);
    w.stop_blocking(STOP).unwrap();
    reader.stop_blocking(STOP).unwrap();
}
