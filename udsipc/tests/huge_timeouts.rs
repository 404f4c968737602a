//! Timeouts as large as the clock can hold: a wait that cannot end by its
//! deadline must still end as a wait does (`Timeout` never comes; a stop
//! ends it `Stopped`), not in a panic of the timer.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use udsipc::{StopError, WriteError, Writer};

/// The largest timeout `Instant::now()` can be moved by.
fn largest_timeout() -> Duration {
    let now = tokio::time::Instant::now();
    let (mut lo, mut hi) = (0u64, u64::MAX);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if now.checked_add(Duration::from_secs(mid)).is_some() {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let mut d = Duration::from_secs(lo);
    let (mut lo, mut hi) = (0u32, 999_999_999u32);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if now
            .checked_add(d + Duration::from_nanos(mid.into()))
            .is_some()
        {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    d += Duration::from_nanos(lo.into());
    // A little room for the clock's move between here and the call.
    d - Duration::from_secs(1)
}

fn full_writer(path: &std::path::Path) -> Writer {
    let w = Writer::builder(path)
        .max_buffered_writes(1)
        .start()
        .unwrap();
    w.try_send(b"first").unwrap();
    w
}

#[test]
fn a_blocking_send_with_the_largest_timeout_waits_until_the_stop() {
    let sock = temp_sock();
    let w = Arc::new(full_writer(&sock.path));
    let d = largest_timeout();
    let waiting = {
        let w = Arc::clone(&w);
        std::thread::spawn(move || w.send_timeout_blocking(b"second".to_vec(), d))
    };
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        !waiting.is_finished(),
        "it ended before the stop: {:?}",
        waiting.join()
    );
    match w.stop_blocking(Duration::from_millis(10)) {
        Ok(()) | Err(StopError::DeadlineExceeded { .. }) => {}
        Err(e) => panic!("{e}"),
    }
    match waiting.join().unwrap() {
        Err(WriteError::Stopped(back)) => assert_eq!(back, b"second"[..]),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_send_with_the_largest_timeout_waits_until_the_stop() {
    let sock = temp_sock();
    let w = Arc::new(full_writer(&sock.path));
    let d = largest_timeout();
    let waiting = {
        let w = Arc::clone(&w);
        tokio::spawn(async move { w.send_timeout(b"second".to_vec(), d).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !waiting.is_finished(),
        "it ended before the stop: {:?}",
        waiting.await
    );
    let _ = w.stop(Duration::from_millis(10)).await;
    match waiting.await.expect("the send panicked") {
        Err(WriteError::Stopped(back)) => assert_eq!(back, b"second"[..]),
        other => panic!("{other:?}"),
    }
}
