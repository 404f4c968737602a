//! Reader and Writer together (Go: integration_test.go).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use udsipc::{Reader, Writer};

const STOP: Duration = Duration::from_secs(10);

#[test]
fn public_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Reader>();
    check::<Writer>();
    check::<udsipc::ReaderBuilder>();
    check::<udsipc::WriterBuilder>();
    check::<udsipc::ReaderMetrics>();
    check::<udsipc::WriterMetrics>();
    check::<udsipc::ReaderError>();
    check::<udsipc::WriterError>();
    check::<udsipc::StartError>();
    check::<udsipc::StopError>();
    check::<udsipc::WriteError<bytes::Bytes>>();
    check::<udsipc::frame::FrameDecoder>();
    check::<udsipc::systemd::Notifier>();
}

#[test]
fn basic_messages_round_trip_from_synchronous_code() {
    let sock = temp_sock();
    let c = Collector::new();
    let reader = sock.reader(&c);
    let writer = Writer::builder(&sock.path).start().unwrap();
    for m in [&b"hello"[..], b"world", b"test"] {
        writer.try_send(m).unwrap();
    }
    assert_eq!(
        c.take(3),
        [b"hello".to_vec(), b"world".to_vec(), b"test".to_vec()]
    );
    writer.stop_blocking(STOP).unwrap();
    reader.stop_blocking(STOP).unwrap();
    let (r, w) = (reader.metrics(), writer.metrics());
    assert_eq!((r.received, r.connections, r.errors), (3, 1, 0));
    assert_eq!((w.sent, w.dropped, w.failed, w.queue_depth), (3, 0, 0, 0));
}

#[test]
fn message_over_the_readers_limit_is_rejected_and_counted() {
    let sock = temp_sock();
    let c = Collector::new();
    let errs = Errors::default();
    let reader = Reader::builder(&sock.path)
        .systemd(false)
        .max_message_size(1000)
        .on_error(errs.reader_callback())
        .start(c.handler())
        .unwrap();
    let writer = Writer::builder(&sock.path)
        .initial_backoff(Duration::from_millis(10))
        .start()
        .unwrap();
    writer.try_send(&[0u8; 2000]).unwrap();
    eventually("the oversized message is rejected", || {
        reader.metrics().errors == 1
    });
    assert!(errs.list()[0].starts_with("message too large"));
    reader.stop_blocking(STOP).unwrap();
    writer.stop_blocking(Duration::from_millis(100)).ok();
    c.assert_empty();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_writers_keep_per_writer_order() {
    let sock = temp_sock();
    let c = Collector::new();
    let reader = sock.reader(&c);
    let mut tasks = Vec::new();
    for w in 0..16u8 {
        let path = sock.path.clone();
        tasks.push(tokio::spawn(async move {
            let writer = Writer::builder(&path).start().unwrap();
            for i in 0..2000u32 {
                let mut m = vec![w];
                m.extend_from_slice(&i.to_be_bytes());
                m.resize(5 + (i as usize % 300), 0xee);
                writer.send(m).await.unwrap();
            }
            writer.stop(STOP).await.unwrap();
            writer.metrics()
        }));
    }
    for t in tasks {
        let m = t.await.unwrap();
        assert_eq!((m.sent, m.dropped, m.failed), (2000, 0, 0));
    }
    let got = tokio::task::spawn_blocking(move || c.take(16 * 2000))
        .await
        .unwrap();
    let mut next: HashMap<u8, u32> = HashMap::new();
    for m in got {
        let w = m[0];
        let i = u32::from_be_bytes(m[1..5].try_into().unwrap());
        let want = next.entry(w).or_default();
        assert_eq!(i, *want, "writer {w} out of order");
        assert!(m[5..].iter().all(|&b| b == 0xee));
        *want += 1;
    }
    reader.stop(STOP).await.unwrap();
    let r = reader.metrics();
    assert_eq!((r.received, r.connections, r.errors), (32_000, 16, 0));
}

#[test]
fn mixed_sizes_through_both_apis_arrive_intact() {
    let sock = temp_sock();
    let c = Collector::new();
    let reader = sock.reader(&c);
    let writer = Writer::builder(&sock.path)
        .max_buffered_writes(100_000)
        .start()
        .unwrap();
    let sizes = [
        1usize, 63, 127, 128, 129, 1000, 4095, 4096, 4097, 16_383, 16_384, 16_385, 100_000, 300_000,
    ];
    let mut want = Vec::new();
    for (i, &n) in sizes.iter().cycle().take(200).enumerate() {
        let m: Vec<u8> = (0..n).map(|j| (i * 31 + j) as u8).collect();
        if i % 2 == 0 {
            writer.try_send(&m).unwrap();
        } else {
            writer.try_send(m.clone()).unwrap();
        }
        want.push(m);
    }
    assert_eq!(c.take(want.len()), want);
    writer.stop_blocking(STOP).unwrap();
    reader.stop_blocking(STOP).unwrap();
}
