//! The ways a producer waits for room, over real sockets: `send` (and what
//! cancelling it costs), `reserve` → `Permit` (cancel safe), `send_blocking`
//! (synchronous code), and the `Sink` adapter.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use udsipc::{StopError, WriteError, Writer};

const STOP: Duration = Duration::from_secs(10);

/// A Writer to `path` (where nobody listens yet) whose one-message queue is
/// full: it keeps the message while it retries every `backoff`.
fn full_writer(path: &std::path::Path, backoff: Duration) -> Writer {
    let w = Writer::builder(path)
        .max_buffered_writes(1)
        .initial_backoff(backoff)
        .max_backoff(backoff)
        .start()
        .unwrap();
    w.try_send(b"first").unwrap();
    assert!(w.try_send(b"refused").unwrap_err().is_buffer_full());
    w
}

#[test]
fn permits_and_sinks_can_move_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<udsipc::Permit<'static>>();
    #[cfg(feature = "futures")]
    {
        fn send<T: Send + Unpin>() {}
        send::<udsipc::WriterSink>();
        send_sync::<udsipc::SinkError>();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_send_queues_nothing_and_counts_nothing() {
    let sock = temp_sock();
    let w = full_writer(&sock.path, Duration::from_secs(60));
    let dropped_before = w.metrics().dropped;
    tokio::select! {
        biased;
        _ = w.send(Bytes::from_static(b"lost")) => panic!("the queue is full"),
        _ = std::future::ready(()) => {}
    }
    let m = w.metrics();
    assert_eq!(m.queue_depth, 1, "the cancelled message was not queued");
    assert_eq!(m.dropped, dropped_before, "nor counted as dropped");
    let err = w.stop(Duration::from_millis(50)).await.unwrap_err();
    assert!(
        matches!(err, StopError::DeadlineExceeded { discarded: 1, .. }),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_send_copy_queues_nothing_and_counts_nothing() {
    let sock = temp_sock();
    let w = full_writer(&sock.path, Duration::from_secs(60));
    let dropped_before = w.metrics().dropped;
    tokio::select! {
        biased;
        _ = w.send(b"lost") => panic!("the queue is full"),
        _ = std::future::ready(()) => {}
    }
    let m = w.metrics();
    assert_eq!(m.queue_depth, 1, "the cancelled message was not queued");
    assert_eq!(m.dropped, dropped_before, "nor counted as dropped");
    w.stop(Duration::from_millis(50)).await.unwrap_err();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_reserve_loses_nothing_and_a_later_permit_sends() {
    let sock = temp_sock();
    let collector = Collector::new();
    let w = full_writer(&sock.path, Duration::from_millis(20));
    tokio::select! {
        biased;
        _ = w.reserve() => panic!("the queue is full"),
        _ = std::future::ready(()) => {}
    }
    assert_eq!(w.metrics().queue_depth, 1);
    // A reader appears: the Writer delivers "first", which makes room.
    let reader = udsipc::Reader::builder(&sock.path)
        .start(collector.handler())
        .unwrap();
    let permit = w.reserve().await.unwrap();
    permit.send(Bytes::from_static(b"second")).unwrap();
    w.stop(STOP).await.unwrap();
    let got = tokio::task::spawn_blocking(move || collector.take(2))
        .await
        .unwrap();
    assert_eq!(got, [b"first".to_vec(), b"second".to_vec()]);
    assert_eq!(w.metrics().dropped, 1, "only the refused write_message");
    reader.stop(STOP).await.unwrap();
}

/// A Writer to `path` (where nobody listens) with room for `capacity`
/// messages and nothing queued.
fn idle_writer(path: &std::path::Path, capacity: usize) -> Writer {
    writer_with_backoff(path, capacity, Duration::from_secs(60))
}

/// Whether `fut` is still pending after one poll (it stays usable).
async fn is_pending<F: std::future::Future + Unpin>(fut: &mut F) -> bool {
    tokio::select! {
        biased;
        _ = fut => false,
        _ = std::future::ready(()) => true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permit_holds_its_slot_so_other_producers_cannot_take_it() {
    let sock = temp_sock();
    let w = idle_writer(&sock.path, 1);
    let permit = w.reserve().await.unwrap();
    let err = w.try_send(b"other producer").unwrap_err();
    assert!(err.is_buffer_full(), "the permit's slot is taken: {err}");
    permit.send(Bytes::from_static(b"mine")).unwrap();
    let m = w.metrics();
    assert_eq!((m.queue_depth, m.dropped), (1, 1), "{m:?}");
    let _ = w.stop(Duration::from_millis(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permit_dropped_unused_gives_its_slot_back() {
    let sock = temp_sock();
    let w = idle_writer(&sock.path, 1);
    drop(w.reserve().await.unwrap());
    // An empty message is not sent, and its slot is given back too.
    w.reserve().await.unwrap().send(Bytes::new()).unwrap();
    w.try_send(b"takes the freed slot").unwrap();
    assert_eq!(w.metrics().queue_depth, 1);
    let _ = w.stop(Duration::from_millis(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserve_waiting_for_a_held_slot_gets_it_when_the_permit_is_dropped() {
    let sock = temp_sock();
    let w = idle_writer(&sock.path, 1);
    let held = w.reserve().await.unwrap();
    let mut waiting = Box::pin(w.reserve());
    assert!(is_pending(&mut waiting).await, "the only slot is held");
    drop(held);
    let permit = waiting.await.unwrap();
    permit.send(Bytes::from_static(b"second holder")).unwrap();
    assert_eq!(w.metrics().queue_depth, 1);
    let _ = w.stop(Duration::from_millis(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserve_cancelled_while_waiting_holds_no_slot() {
    let sock = temp_sock();
    let w = idle_writer(&sock.path, 1);
    let held = w.reserve().await.unwrap();
    let mut cancelled = Box::pin(w.reserve());
    assert!(is_pending(&mut cancelled).await);
    drop(held);
    // Room came while it was pending; it is dropped without being polled
    // again, so it never took the slot.
    drop(cancelled);
    w.try_send(b"the slot is free").unwrap();
    let _ = w.stop(Duration::from_millis(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permit_spent_after_the_writer_stopped_hands_the_message_back() {
    let sock = temp_sock();
    let w = idle_writer(&sock.path, 1);
    let permit = w.reserve().await.unwrap();
    let _ = w.stop(Duration::from_millis(10)).await;
    let err = permit.send(Bytes::from_static(b"late")).unwrap_err();
    assert!(
        matches!(&err, WriteError::Stopped(b) if b[..] == b"late"[..]),
        "Stopped, never BufferFull: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permits_from_many_producers_never_see_buffer_full_nor_a_spurious_stopped() {
    let sock = temp_sock();
    let collector = Collector::new();
    let reader = udsipc::Reader::builder(&sock.path)
        .start(collector.handler())
        .unwrap();
    let w = std::sync::Arc::new(
        Writer::builder(&sock.path)
            .max_buffered_writes(2)
            .start()
            .unwrap(),
    );
    let producers: Vec<_> = (0..4u32)
        .map(|p| {
            let w = std::sync::Arc::clone(&w);
            tokio::spawn(async move {
                for i in 0..500u32 {
                    let msg = Bytes::from(format!("{p}:{i}"));
                    w.reserve().await.unwrap().send(msg).unwrap();
                    // Another producer that never waits competes for room.
                    let _ = w.try_send(b"x");
                }
            })
        })
        .collect();
    for p in producers {
        p.await.unwrap();
    }
    w.stop(STOP).await.unwrap();
    let m = w.metrics();
    assert_eq!(m.delivered + m.dropped, 4_000, "{m:?}");
    let got = tokio::task::spawn_blocking(move || collector.take(m.delivered as usize))
        .await
        .unwrap();
    let by_permits = got.iter().filter(|m| m[..] != b"x"[..]).count();
    assert_eq!(by_permits, 2_000, "every permit's message arrived");
    reader.stop(STOP).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_on_a_stopped_writer_is_stopped() {
    let sock = temp_sock();
    let w = Writer::builder(&sock.path).start().unwrap();
    let _ = w.stop(Duration::from_millis(10)).await;
    assert!(matches!(w.reserve().await, Err(WriteError::Stopped(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserve_waiting_when_the_writer_stops_ends_stopped() {
    let sock = temp_sock();
    let w = std::sync::Arc::new(full_writer(&sock.path, Duration::from_secs(60)));
    let waiting = {
        let w = std::sync::Arc::clone(&w);
        tokio::spawn(async move {
            w.reserve()
                .await
                .map(|_| ())
                .map_err(|e| e.is_buffer_full())
        })
    };
    let _ = w.stop(Duration::from_millis(20)).await;
    assert_eq!(
        waiting.await.unwrap(),
        Err(false),
        "Stopped, not BufferFull"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_blocking_inside_a_multi_thread_runtime_waits_without_deadlock() {
    let sock = temp_sock();
    let collector = Collector::new();
    let w = full_writer(&sock.path, Duration::from_millis(20));
    // The queue is full until a reader appears (most likely while the send
    // below waits); the runtime's other worker must deliver "first".
    let handler = collector.handler();
    let path = sock.path.clone();
    let late_reader = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        udsipc::Reader::builder(&path).start(handler).unwrap()
    });
    w.send_blocking(b"second".to_vec()).unwrap();
    let reader = late_reader.join().unwrap();
    w.stop(STOP).await.unwrap();
    let got = tokio::task::spawn_blocking(move || collector.take(2))
        .await
        .unwrap();
    assert_eq!(got, [b"first".to_vec(), b"second".to_vec()]);
    reader.stop(STOP).await.unwrap();
}

#[test]
fn send_blocking_on_a_stopped_writer_hands_the_message_back() {
    let sock = temp_sock();
    let w = Writer::builder(&sock.path).start().unwrap();
    let _ = w.stop_blocking(Duration::from_millis(10));
    let err = w.send_blocking(b"late".to_vec()).unwrap_err();
    assert!(matches!(&err, WriteError::Stopped(b) if b[..] == b"late"[..]));
}

/// The two blocking ways in: an owned message (`send_blocking`, handed back
/// when refused) and a borrowed one (`send_blocking`).
#[derive(Clone, Copy, Debug)]
enum Blocking {
    Owned,
    Copied,
}

impl Blocking {
    /// Sends `msg` this way; a refusal says why (an owned message handed
    /// back must be `msg` itself).
    fn send(self, w: &Writer, msg: &[u8]) -> Result<(), WriteError<()>> {
        match self {
            Self::Owned => w.send_blocking(msg.to_vec()).map_err(|e| {
                let full = e.is_buffer_full();
                assert_eq!(e.into_inner(), msg, "the message handed back");
                if full {
                    WriteError::BufferFull(())
                } else {
                    WriteError::Stopped(())
                }
            }),
            Self::Copied => w.send_blocking(msg),
        }
    }
}

#[rstest::rstest]
#[case(Blocking::Owned)]
#[case(Blocking::Copied)]
fn a_blocking_send_waits_for_room_and_drops_nothing(#[case] how: Blocking) {
    let sock = temp_sock();
    let collector = Collector::new();
    let reader = udsipc::Reader::builder(&sock.path)
        .start(collector.handler())
        .unwrap();
    let w = Writer::builder(&sock.path)
        .max_buffered_writes(4)
        .start()
        .unwrap();
    for i in 0..5_000u32 {
        how.send(&w, &i.to_le_bytes()).unwrap();
    }
    how.send(&w, b"").unwrap(); // accepted, not sent (as in Go)
    w.stop_blocking(STOP).unwrap();
    let m = w.metrics();
    assert_eq!((m.dropped, m.delivered), (0, 5_000), "{m:?}");
    let got = collector.take(5_000);
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, m)| m[..] == (i as u32).to_le_bytes())
    );
    reader.stop_blocking(STOP).unwrap();
}

#[rstest::rstest]
#[case(Blocking::Owned)]
#[case(Blocking::Copied)]
fn a_blocking_send_returns_stopped_when_a_stop_ends_its_wait_or_came_before(#[case] how: Blocking) {
    let sock = temp_sock();
    let w = std::sync::Arc::new(full_writer(&sock.path, Duration::from_secs(60)));
    let blocked = {
        let w = std::sync::Arc::clone(&w);
        std::thread::spawn(move || how.send(&w, b"waits"))
    };
    // Whether the stop comes before or during its wait, it must end Stopped.
    std::thread::sleep(Duration::from_millis(20));
    let _ = w.stop_blocking(Duration::from_millis(20));
    let err = blocked.join().unwrap().unwrap_err();
    assert!(matches!(err, WriteError::Stopped(_)), "{err}");
    let err = how.send(&w, b"late").unwrap_err();
    assert!(matches!(err, WriteError::Stopped(_)), "{err}");
}

#[rstest::rstest]
#[case(Blocking::Owned)]
#[case(Blocking::Copied)]
fn a_blocking_send_on_a_current_thread_runtime_does_not_wait(#[case] how: Blocking) {
    let sock = temp_sock();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let w = full_writer(&sock.path, Duration::from_secs(60));
        let err = how.send(&w, b"would deadlock").unwrap_err();
        assert!(err.is_buffer_full());
        assert_eq!(w.metrics().dropped, 2, "counted as write_message would");
        let _ = w.stop(Duration::from_millis(10)).await;
    });
}

#[cfg(feature = "futures")]
mod sink {
    use super::*;
    use futures_util::{SinkExt, StreamExt, stream};
    use udsipc::SinkError;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_forwarded_into_the_sink_arrives_whole_and_in_order() {
        let sock = temp_sock();
        let collector = Collector::new();
        let reader = udsipc::Reader::builder(&sock.path)
            .start(collector.handler())
            .unwrap();
        let sink = Writer::builder(&sock.path)
            .max_buffered_writes(3)
            .start()
            .unwrap()
            .into_sink();
        let msgs = stream::iter(0..3_000u32).map(|i| Ok(Bytes::from(i.to_string())));
        msgs.forward(sink).await.unwrap();
        let got = tokio::task::spawn_blocking(move || collector.take(3_000))
            .await
            .unwrap();
        let want: Vec<Vec<u8>> = (0..3_000u32).map(|i| i.to_string().into_bytes()).collect();
        assert_eq!(got, want);
        let m = reader.metrics();
        assert_eq!(m.received, 3_000);
        reader.stop(STOP).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_sink_send_keeps_its_message_in_the_sink() {
        let sock = temp_sock();
        let mut sink = full_writer(&sock.path, Duration::from_secs(60)).into_sink();
        // The sink takes the message even though the queue is full: it
        // holds it until the queue has room.
        sink.feed(Bytes::from_static(b"kept")).await.unwrap();
        tokio::select! {
            biased;
            _ = sink.flush() => panic!("the queue is full"),
            _ = std::future::ready(()) => {}
        }
        // The cancelled flush lost nothing: the message is still held.
        assert_eq!(sink.get_ref().metrics().queue_depth, 1);
        let (w, held) = sink.into_inner();
        assert_eq!(held.as_deref(), Some(&b"kept"[..]));
        let _ = w.stop(Duration::from_millis(10)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closing_the_sink_stops_the_writer_and_reports_what_it_discarded() {
        let sock = temp_sock();
        let w = Writer::builder(&sock.path)
            .linger(Duration::from_millis(20))
            .initial_backoff(Duration::from_secs(60))
            .start()
            .unwrap();
        let mut sink = w.into_sink();
        sink.send(Bytes::from_static(b"nobody reads"))
            .await
            .unwrap();
        let err = sink.close().await.unwrap_err();
        assert!(
            matches!(
                err,
                SinkError::Stop(StopError::DeadlineExceeded { discarded: 1, .. })
            ),
            "{err}"
        );
        // Closed: sending again hands the message back.
        let err = sink.send(Bytes::from_static(b"late")).await.unwrap_err();
        assert!(
            matches!(&err, SinkError::Stopped(b) if b[..] == b"late"[..]),
            "{err}"
        );
        sink.close().await.unwrap();
    }
}

/// A Writer bounded in bytes, with nobody listening yet: it takes messages
/// up to the bound (then `BufferFull`, counted as dropped), and delivers all
/// it took, in order, once a Reader appears.
#[test]
fn a_byte_bound_refuses_past_its_bytes_and_delivers_everything_it_took() {
    let sock = temp_sock();
    let w = Writer::builder(&sock.path)
        .max_buffered_bytes(64 * 1024)
        .initial_backoff(Duration::from_millis(5))
        .max_backoff(Duration::from_millis(5))
        .start()
        .unwrap();
    let mut taken = 0u32;
    loop {
        let mut body = taken.to_be_bytes().to_vec();
        body.resize(1024, 7); // 1,026-byte frames
        match w.try_send(&body) {
            Ok(()) => taken += 1,
            Err(e) => {
                assert!(e.is_buffer_full(), "{e}");
                break;
            }
        }
    }
    assert_eq!(taken, 65_536 / 1_026, "as many whole frames as fit");
    assert_eq!(w.metrics().dropped, 1);
    assert_eq!(w.metrics().queue_depth, u64::from(taken));
    let c = Collector::new();
    let reader = sock.reader(&c);
    let got = c.take(taken as usize);
    let numbers: Vec<u32> = got
        .iter()
        .map(|m| u32::from_be_bytes(m[..4].try_into().unwrap()))
        .collect();
    assert_eq!(numbers, (0..taken).collect::<Vec<_>>());
    w.stop_blocking(STOP).unwrap();
    reader.stop_blocking(STOP).unwrap();
}

/// `send` through a 16 KiB byte bound with messages of 10 KiB (one fits at a
/// time) and of 40 KiB (above the bound: taken only into an empty queue):
/// every one arrives, in order, and no wait hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_waits_for_byte_room_and_takes_a_message_above_the_bound_alone() {
    let sock = temp_sock();
    let c = Collector::new();
    let reader = sock.reader(&c);
    let w = Writer::builder(&sock.path)
        .max_buffered_bytes(16 * 1024)
        .start()
        .unwrap();
    const N: u32 = 400;
    for i in 0..N {
        let len = if i % 10 == 9 { 40 * 1024 } else { 10 * 1024 };
        let mut body = i.to_be_bytes().to_vec();
        body.resize(len, 3);
        w.send(body).await.unwrap();
    }
    let got = tokio::task::spawn_blocking(move || c.take(N as usize))
        .await
        .unwrap();
    for (i, m) in got.iter().enumerate() {
        assert_eq!(u32::from_be_bytes(m[..4].try_into().unwrap()), i as u32);
        let len = if i % 10 == 9 { 40 * 1024 } else { 10 * 1024 };
        assert_eq!(m.len(), len);
    }
    assert_eq!(w.metrics().dropped, 0);
    w.stop(STOP).await.unwrap();
    reader.stop(STOP).await.unwrap();
}

#[test]
fn a_zero_byte_bound_is_a_config_error() {
    let sock = temp_sock();
    let err = Writer::builder(&sock.path)
        .max_buffered_bytes(0)
        .start()
        .unwrap_err();
    assert!(
        matches!(
            err,
            udsipc::StartError::Config(udsipc::ConfigError::Zero {
                option: "max_buffered_bytes"
            })
        ),
        "{err}"
    );
}

/// Issue 22: a synchronous producer had no bounded wait (`send_blocking`
/// sat 634 s on a stopped reader in a newcomer's trial). With nobody
/// reading, `send_timeout_blocking` gives up at its timeout, hands the
/// message back and counts no drop; the queue keeps what it held.
#[test]
fn send_timeout_blocking_on_a_stopped_reader_hands_the_message_back_at_its_timeout() {
    let sock = temp_sock();
    let w = full_writer(&sock.path, Duration::from_millis(10));
    let err = w
        .send_timeout_blocking(b"late", Duration::from_millis(50))
        .unwrap_err();
    assert!(matches!(err, WriteError::Timeout(())), "{err:?}");
    let err = w
        .send_timeout_blocking(b"owned".to_vec(), Duration::from_millis(50))
        .unwrap_err();
    assert!(matches!(err, WriteError::Timeout(ref b) if b == &b"owned"[..]));
    let m = w.metrics();
    assert_eq!(
        (m.dropped, m.queue_depth),
        (1, 1),
        "only try_send's refusal: {m:?}"
    );
    // Room comes: a bounded wait succeeds.
    let collector = Collector::new();
    let reader = sock.reader(&collector);
    w.send_timeout_blocking(b"second", PATIENCE).unwrap();
    assert_eq!(collector.take(2), [b"first".to_vec(), b"second".to_vec()]);
    w.stop_blocking(STOP).unwrap();
    reader.stop_blocking(STOP).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_timeout_on_a_stopped_reader_hands_the_message_back_at_its_timeout() {
    let sock = temp_sock();
    let w = full_writer(&sock.path, Duration::from_secs(60));
    let err = w
        .send_timeout(Bytes::from_static(b"late"), Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(matches!(err, WriteError::Timeout(ref b) if b == &b"late"[..]));
    assert_eq!(w.metrics().dropped, 1, "a timeout is not a drop");
    let _ = w.stop(Duration::ZERO).await;
    let err = w
        .send_timeout(&b"stopped"[..], Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(matches!(err, WriteError::Stopped(())), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_reserve_holds_a_slot_only_when_there_is_room_now() {
    let sock = temp_sock();
    let w = full_writer(&sock.path, Duration::from_millis(10));
    assert!(matches!(w.try_reserve(), Err(WriteError::BufferFull(()))));
    assert_eq!(
        w.metrics().dropped,
        1,
        "a refused reservation is not a drop"
    );
    let collector = Collector::new();
    let reader = sock.reader(&collector);
    let permit = loop {
        // The queue frees its slot once the first message is read.
        match w.try_reserve() {
            Ok(p) => break p,
            Err(e) => assert!(e.is_buffer_full(), "{e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(
        matches!(w.try_send(b"x"), Err(WriteError::BufferFull(_))),
        "the slot is held"
    );
    permit.send(b"reserved").unwrap();
    assert_eq!(collector.take(2), [b"first".to_vec(), b"reserved".to_vec()]);
    w.stop(STOP).await.unwrap();
    assert!(matches!(w.try_reserve(), Err(WriteError::Stopped(()))));
    reader.stop(STOP).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owned_permit_moves_into_a_task_and_an_unspent_one_gives_its_slot_back() {
    let sock = temp_sock();
    let collector = Collector::new();
    let reader = sock.reader(&collector);
    let w = Writer::builder(&sock.path)
        .max_buffered_writes(1)
        .start()
        .unwrap();
    let unspent = w.reserve_owned().await.unwrap();
    assert!(w.try_reserve().is_err(), "held");
    drop(unspent);
    let permit = w.reserve_owned().await.unwrap();
    tokio::spawn(async move { permit.send(b"from a task".to_vec()).unwrap() })
        .await
        .unwrap();
    assert_eq!(collector.take(1), [b"from a task".to_vec()]);
    w.stop(STOP).await.unwrap();
    assert_eq!(w.metrics().delivered, 1);
    reader.stop(STOP).await.unwrap();
}

/// One payload trait: borrowed bytes of every shape are copied, owned ones
/// of every shape queued as they are; all arrive, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_payload_type_arrives() {
    let sock = temp_sock();
    let collector = Collector::new();
    let reader = sock.reader(&collector);
    let w = Writer::builder(&sock.path).start().unwrap();
    let v = b"vec ref".to_vec();
    w.try_send(b"array ref").unwrap();
    w.try_send(&v).unwrap();
    w.try_send("str ref").unwrap();
    w.send(&Bytes::from_static(b"bytes ref")).await.unwrap();
    w.send(Bytes::from_static(b"bytes")).await.unwrap();
    w.send(b"vec".to_vec()).await.unwrap();
    w.send_blocking(String::from("string")).unwrap();
    w.send_blocking(b"boxed".to_vec().into_boxed_slice())
        .unwrap();
    let big = vec![9u8; 100_000];
    w.send(big.clone()).await.unwrap();
    w.send(&big).await.unwrap();
    let want: Vec<Vec<u8>> = [
        &b"array ref"[..],
        b"vec ref",
        b"str ref",
        b"bytes ref",
        b"bytes",
        b"vec",
        b"string",
        b"boxed",
        &big,
        &big,
    ]
    .iter()
    .map(|m| m.to_vec())
    .collect();
    assert_eq!(collector.take(want.len()), want);
    w.stop(STOP).await.unwrap();
    reader.stop(STOP).await.unwrap();
}
