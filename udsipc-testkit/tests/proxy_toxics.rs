//! The faults toxiproxy also has (slow close, timeout, reset peer) and
//! toxicity, through the library API with real sockets.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use udsipc_testkit::proxy::FaultProxy;
use udsipc_testkit::proxy::spec::FaultSpec;

const WAIT: Duration = Duration::from_secs(30);

struct Setup {
    _dir: tempfile::TempDir,
    proxy: FaultProxy,
    upstream: UnixListener,
    front: std::path::PathBuf,
}

async fn setup(specs: &[&str]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (front, back) = (dir.path().join("front.sock"), dir.path().join("back.sock"));
    let upstream = UnixListener::bind(&back).unwrap();
    let mut builder = FaultProxy::builder(&front, &back).seed(3);
    for spec in specs {
        builder = spec.parse::<FaultSpec>().unwrap().apply(builder);
    }
    Setup {
        proxy: builder.start().await.unwrap(),
        upstream,
        front,
        _dir: dir,
    }
}

/// Sends `bytes` on a new connection, closes it, and returns what the
/// upstream read before its end.
async fn exchange(s: &Setup, bytes: &[u8]) -> Vec<u8> {
    let mut client = UnixStream::connect(&s.front).await.unwrap();
    let (mut server, _) = s.upstream.accept().await.unwrap();
    let _ = client.write_all(bytes).await;
    let _ = client.shutdown().await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(WAIT, server.read_to_end(&mut got))
        .await
        .unwrap();
    got
}

#[tokio::test]
async fn toxicity_picks_a_replayable_share_of_the_connections() {
    async fn picked() -> Vec<bool> {
        let s = setup(&["drop-after-bytes:0@0.5"]).await;
        let mut cut = Vec::new();
        for _ in 0..20 {
            cut.push(exchange(&s, b"hello").await.is_empty());
        }
        s.proxy.stop().await;
        cut
    }
    let first = picked().await;
    let hits = first.iter().filter(|c| **c).count();
    assert!(hits > 0 && hits < 20, "{first:?}");
    assert_eq!(
        picked().await,
        first,
        "the same connections are picked again"
    );
}

#[tokio::test]
async fn timeout_lets_nothing_through_then_cuts() {
    let s = setup(&["timeout:50"]).await;
    let mut client = UnixStream::connect(&s.front).await.unwrap();
    let (mut server, _) = s.upstream.accept().await.unwrap();
    client.write_all(b"never arrives").await.unwrap();
    // The upstream reads an end of stream (the cut), never the bytes.
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, server.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, b"");
    let events = s.proxy.events();
    let cut = events
        .iter()
        .find(|e| e.fault == "timeout" && e.closed_connection);
    assert!(cut.is_some(), "{events:?}");
    s.proxy.stop().await;
}

#[tokio::test]
async fn slow_close_holds_the_end_of_stream_back() {
    let s = setup(&["slow-close:60000"]).await;
    let mut client = UnixStream::connect(&s.front).await.unwrap();
    let (mut server, _) = s.upstream.accept().await.unwrap();
    client.write_all(b"bye").await.unwrap();
    client.shutdown().await.unwrap();
    let mut got = [0u8; 3];
    server.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"bye");
    let mut more = [0u8; 1];
    let ended = tokio::time::timeout(Duration::from_millis(200), server.read(&mut more)).await;
    assert!(ended.is_err(), "the end of stream came at once: {ended:?}");
    // Stopping the proxy ends it.
    s.proxy.stop().await;
    assert_eq!(server.read(&mut more).await.unwrap(), 0);
}

#[tokio::test]
async fn reset_peer_cuts_a_connection_that_sends_nothing() {
    let s = setup(&["reset-peer:20"]).await;
    let mut client = UnixStream::connect(&s.front).await.unwrap();
    let (mut server, _) = s.upstream.accept().await.unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(WAIT, client.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert_eq!(server.read(&mut buf).await.unwrap(), 0);
    assert!(s.proxy.events().iter().any(|e| e.fault == "reset-peer"));
    s.proxy.stop().await;
}
