//! Tests of the Writer's task that need a hook inside the crate: a message
//! that makes the task panic, to prove a panicked task surfaces at stop.

use std::collections::VecDeque;
use std::time::Duration;

use super::Writer;
use crate::error::StopError;
use crate::queue::Item;

/// The body that makes the writer task panic (test builds only).
const PANIC_BODY: &[u8] = b"\xffudsipc test: panic in the writer task";

/// Panics if a message taken from the queue is [`PANIC_BODY`].
pub(crate) fn maybe_panic(pending: &mut VecDeque<Item>) {
    if pending.iter().any(|i| i.bytes.ends_with(PANIC_BODY)) {
        panic!("writer task panic requested by a test");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicked_writer_task_surfaces_as_task_panicked_at_stop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let w = Writer::builder(&path).start().unwrap();
    w.write_message(b"before").unwrap();
    w.write_message(PANIC_BODY).unwrap();
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
