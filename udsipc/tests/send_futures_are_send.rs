//! The futures of the async sends are `Send` for borrowed bytes too, so a
//! task on a multi-thread runtime (`tokio::spawn`) can await
//! `send(&bytes)`. Before, `Payload` carried a lifetime (`Payload<'a> for
//! &'a T`), and this file did not compile: "implementation of `Payload`
//! is not general enough". Owned payloads were never affected.

use std::sync::Arc;
use std::time::Duration;

use udsipc::{Reader, Writer};

const STOP: Duration = Duration::from_secs(10);

fn assert_send<T: Send>(t: T) -> T {
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_tasks_send_borrowed_bytes_with_every_async_send() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.sock");
    let (reader, mut incoming) = Reader::builder(&path).incoming().unwrap();
    let w = Arc::new(Writer::builder(&path).start().unwrap());
    let spawned = tokio::spawn({
        let w = Arc::clone(&w);
        async move {
            let first = b"send".to_vec();
            w.send(&first).await.unwrap();
            let second = String::from("send_timeout");
            w.send_timeout(&second, STOP).await.unwrap();
            let third: &[u8] = b"buffered";
            let mut b = w.buffered();
            b.send(third).await.unwrap();
            b.flush().await.unwrap();
        }
    });
    assert_send(&spawned);
    spawned.await.unwrap();
    let m = vec![7u8; 16];
    let _unpolled = assert_send(w.send(&m));
    w.stop(STOP).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(incoming.recv().await.unwrap().body);
    }
    assert_eq!(got, [&b"send"[..], b"send_timeout", b"buffered"]);
    reader.stop(STOP).await.unwrap();
}
