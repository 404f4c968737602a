//! REPRODUCTION (does not compile; kept out of the test targets, which
//! cargo only finds at `tests/*.rs`): the futures of `Writer::send`,
//! `Writer::send_timeout` and `BufferedWriter::send` with a borrowed
//! payload are never `Send`, so a task on a multi-thread runtime cannot
//! await them:
//!
//! ```text
//! error: implementation of `Payload` is not general enough
//!   = note: `Payload<'0>` would have to be implemented for the type `&Vec<u8>`, for any lifetime `'0`...
//!   = note: ...but `Payload<'1>` is actually implemented for the type `&'1 Vec<u8>`, for some specific lifetime `'1`
//! ```
//!
//! Run: `cp udsipc/tests/pending/send_futures_are_send.rs udsipc/tests/ &&
//! cargo check -p udsipc --test send_futures_are_send`. The same at
//! b8d914f (before the s24 changes): not a regression of them. Owned
//! payloads (`Vec<u8>`, `Bytes`, ...) are fine.
//!
//! Cause: `Payload<'a>` is implemented for `&'a T` only with the two
//! lifetimes equal; the futures are `async fn`s generic over `P:
//! Payload<'a>`, and rustc's auto-trait check of a future that awaits one
//! (with regions erased) asks for `for<'x, 'y> &'x T: Payload<'y>`, which
//! fails (rust-lang/rust#110338 and kin). Wrapping `send`'s body in a
//! non-generic inner `async fn` is not enough: any opaque future generic
//! over `P` with that bound, awaited inside another future, trips it.

use std::sync::Arc;

use udsipc::Writer;

fn assert_send<T: Send>(t: T) -> T {
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_sends_of_borrowed_bytes_are_send() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.sock");
    let w = Arc::new(Writer::builder(&path).start().unwrap());
    let m = vec![7u8; 16];
    let _ = assert_send(w.send(&m));
    let _ = assert_send(w.send_timeout(&m, std::time::Duration::from_secs(1)));
    let (w2, m2) = (Arc::clone(&w), m.clone());
    let spawned = tokio::spawn(async move {
        let mut b = w2.buffered();
        b.send(&m2).await.is_ok() && b.flush().await.is_ok()
    });
    assert!(spawned.await.unwrap());
    w.stop(std::time::Duration::from_secs(5)).await.unwrap();
}
