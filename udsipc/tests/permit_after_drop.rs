//! An `OwnedPermit` outlives its Writer's handle (it holds the Writer's
//! state): spent after the handle was dropped, its message is either
//! accepted and then delivered by the dropped Writer's lingering drain, or
//! handed back `Stopped`; dropped unspent there, it gives its slot back
//! and nothing is counted. Never lost silently, never a panic.

mod common;

use std::time::Duration;

use common::hunt::message;
use common::*;
use udsipc::{WriteError, Writer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owned_permit_spent_after_its_writer_was_dropped_is_delivered_or_handed_back() {
    for round in 0..20u64 {
        let sock = temp_sock();
        let collector = Collector::new();
        let reader = udsipc::Reader::builder(&sock.path)
            .start(collector.handler())
            .unwrap();
        let w = Writer::builder(&sock.path)
            .max_buffered_writes(2)
            .linger(PATIENCE)
            .start()
            .unwrap();
        let metrics = w.metrics_handle();
        let spent = w.reserve_owned().await.unwrap();
        // Held across the drop too, and dropped unspent after it.
        let unspent = match round % 2 {
            0 => None,
            _ => Some(w.reserve_owned().await.unwrap()),
        };
        drop(w);
        let msg = message(round, 32);
        let accepted = match spent.send(msg.clone()) {
            Ok(()) => true,
            Err(WriteError::Stopped(back)) => {
                assert_eq!(back, msg);
                false
            }
            Err(e) => panic!("round {round}: {e}"),
        };
        drop(unspent);
        let start = std::time::Instant::now();
        while !metrics.is_finished() {
            assert!(start.elapsed() < PATIENCE, "round {round}: never finished");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let m = metrics.get();
        if accepted {
            assert_eq!((m.delivered, m.queue_depth), (1, 0), "round {round}: {m:?}");
            let got = tokio::task::spawn_blocking(move || collector.take(1))
                .await
                .unwrap();
            assert_eq!(got, [msg]);
        } else {
            assert_eq!(
                (m.delivered, m.queue_depth, m.dropped),
                (0, 0, 0),
                "round {round}: {m:?}"
            );
        }
        reader.stop(PATIENCE).await.unwrap();
    }
}
