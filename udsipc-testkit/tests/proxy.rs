//! The FaultProxy's library API: each fault's effect seen from real
//! sockets, guards, outages and seeded replay.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use udsipc_testkit::proxy::{
    CorruptPrefix, FaultProxy, Fragment, PrefixRewrite, Reset, Verdict, fault_fn,
};

fn frames(bodies: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for b in bodies {
        udsipc::frame::encode_frame(b, &mut out);
    }
    out
}

struct Setup {
    _dir: tempfile::TempDir,
    front: std::path::PathBuf,
    back: std::path::PathBuf,
    upstream: UnixListener,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let front = dir.path().join("front.sock");
    let back = dir.path().join("back.sock");
    let upstream = UnixListener::bind(&back).unwrap();
    Setup {
        _dir: dir,
        front,
        back,
        upstream,
    }
}

async fn read_all(mut s: UnixStream) -> Vec<u8> {
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn paused_fragments_split_inside_prefixes_and_still_arrive_intact() {
    let s = setup();
    let proxy = FaultProxy::builder(&s.front, &s.back)
        .fault(Fragment::new(1, 2).pause(Duration::from_millis(1)))
        .start()
        .await
        .unwrap();
    let big = vec![7u8; 300]; // a two-byte prefix
    let wire = frames(&[b"a", &big, b"bc"]);
    let mut client = UnixStream::connect(&s.front).await.unwrap();
    client.write_all(&wire).await.unwrap();
    client.shutdown().await.unwrap();
    let (server, _) = s.upstream.accept().await.unwrap();
    assert_eq!(read_all(server).await, wire);
    let event = proxy
        .events()
        .into_iter()
        .find(|e| e.fault == "fragment")
        .unwrap();
    assert_eq!(event.detail, "writes of 1..=2 bytes, 1 ms apart");
    proxy.stop().await;
}

#[tokio::test]
async fn a_guard_removes_its_fault_when_dropped() {
    let s = setup();
    let proxy = FaultProxy::builder(&s.front, &s.back)
        .start()
        .await
        .unwrap();
    let guard = proxy.add_fault(fault_fn("x-out", |chunk| {
        chunk.data_mut().fill(b'x');
        Verdict::Pass
    }));
    let mut a = UnixStream::connect(&s.front).await.unwrap();
    a.write_all(b"abc").await.unwrap();
    a.shutdown().await.unwrap();
    let (server, _) = s.upstream.accept().await.unwrap();
    assert_eq!(read_all(server).await, b"xxx");

    drop(guard);
    let mut b = UnixStream::connect(&s.front).await.unwrap();
    b.write_all(b"abc").await.unwrap();
    b.shutdown().await.unwrap();
    let (server, _) = s.upstream.accept().await.unwrap();
    assert_eq!(read_all(server).await, b"abc");
    proxy.stop().await;
}

#[tokio::test]
async fn an_outage_refuses_new_connections_until_the_listener_is_back() {
    let s = setup();
    let proxy = FaultProxy::builder(&s.front, &s.back)
        .start()
        .await
        .unwrap();
    proxy.outage_now(Duration::from_millis(300));
    // The socket file disappears, so connecting fails.
    let mut refused = false;
    for _ in 0..200 {
        if UnixStream::connect(&s.front).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(refused, "connections were never refused");
    // It comes back.
    let mut back = false;
    for _ in 0..500 {
        if UnixStream::connect(&s.front).await.is_ok() {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(back, "the listener never came back");
    let details: Vec<String> = proxy.events().into_iter().map(|e| e.detail).collect();
    assert!(
        details[0].starts_with("listener removed for 300 ms"),
        "{details:?}"
    );
    assert_eq!(details[1], "listener back");
    proxy.stop().await;
}

#[tokio::test]
async fn reset_closes_the_client_and_leaves_the_upstream_open_and_silent() {
    let s = setup();
    let proxy = FaultProxy::builder(&s.front, &s.back)
        .fault(Reset::after_frames(1))
        .start()
        .await
        .unwrap();
    let mut client = UnixStream::connect(&s.front).await.unwrap();
    client.write_all(&frames(&[b"one", b"two"])).await.unwrap();
    let (mut server, _) = s.upstream.accept().await.unwrap();
    let mut first = [0u8; 4];
    server.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, &frames(&[b"one"])[..]);
    // The client's side is closed: its next writes fail.
    let mut failed = false;
    for _ in 0..100 {
        if client.write_all(b"more").await.is_err() {
            failed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(failed, "the client could still write");
    // The upstream gets neither the rest nor an end of stream.
    let mut buf = [0u8; 8];
    let quiet = tokio::time::timeout(Duration::from_millis(200), server.read(&mut buf)).await;
    assert!(quiet.is_err(), "the upstream saw {quiet:?}");
    let event = proxy
        .events()
        .into_iter()
        .find(|e| e.fault == "reset")
        .unwrap();
    assert!(event.closed_connection);
    assert_eq!(event.byte_offset, 4);
    proxy.stop().await;
    // Stopping the proxy finally closes the upstream side.
    assert_eq!(server.read(&mut buf).await.unwrap(), 0);
}

#[tokio::test]
async fn a_rewritten_prefix_makes_a_udsipc_reader_close_the_connection_as_too_large() {
    let s = setup();
    drop(s.upstream);
    std::fs::remove_file(&s.back).unwrap();
    let errors = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&errors);
    let got = Arc::new(Mutex::new(Vec::new()));
    let got_in = Arc::clone(&got);
    let reader = udsipc::Reader::builder(&s.back)
        .systemd(false)
        .on_error(move |e| log.lock().unwrap().push(e.to_string()))
        .start(move |m: &[u8]| {
            got_in.lock().unwrap().push(m.to_vec());
            Ok(())
        })
        .unwrap();
    let proxy = FaultProxy::builder(&s.front, &s.back)
        .fault(CorruptPrefix::new(1, PrefixRewrite::Oversized))
        .start()
        .await
        .unwrap();
    let mut client = UnixStream::connect(&s.front).await.unwrap();
    client
        .write_all(&frames(&[b"ok", b"bad", b"never"]))
        .await
        .unwrap();
    for _ in 0..500 {
        if !errors.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let errors = errors.lock().unwrap().clone();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("exceeds") || e.contains("too large") || e.contains("larger")),
        "{errors:?}"
    );
    assert_eq!(*got.lock().unwrap(), [b"ok".to_vec()]);
    let event = proxy
        .events()
        .into_iter()
        .find(|e| e.fault == "corrupt-prefix")
        .unwrap();
    assert_eq!(event.frame, Some(1));
    proxy.stop().await;
    reader.stop(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn the_same_seed_replays_the_same_random_choices() {
    async fn draws(seed: u64) -> Vec<u64> {
        let s = setup();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let proxy = FaultProxy::builder(&s.front, &s.back)
            .seed(seed)
            .fault(fault_fn("draw", move |chunk| {
                let v: u64 = chunk.rng().next_u64();
                log.lock().unwrap().push(v);
                Verdict::Pass
            }))
            .start()
            .await
            .unwrap();
        let mut client = UnixStream::connect(&s.front).await.unwrap();
        let (server, _) = s.upstream.accept().await.unwrap();
        client.write_all(b"x").await.unwrap();
        client.shutdown().await.unwrap();
        read_all(server).await;
        proxy.stop().await;
        seen.lock().unwrap().clone()
    }
    let (a, b, c) = (draws(1).await, draws(1).await, draws(2).await);
    assert_eq!(a.len(), 1);
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[tokio::test]
async fn disable_cuts_and_refuses_until_enable() {
    let s = setup();
    let proxy = FaultProxy::builder(&s.front, &s.back)
        .start()
        .await
        .unwrap();
    let mut open = UnixStream::connect(&s.front).await.unwrap();
    let (_server, _) = s.upstream.accept().await.unwrap();
    proxy.disable();
    // The open connection is cut, and the socket file goes away.
    let mut buf = [0u8; 1];
    assert!(matches!(open.read(&mut buf).await, Ok(0) | Err(_)));
    for _ in 0..500 {
        if !s.front.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(UnixStream::connect(&s.front).await.is_err());
    proxy.enable();
    let mut back = false;
    for _ in 0..500 {
        if UnixStream::connect(&s.front).await.is_ok() {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(back, "enable never listened again");
    let details: Vec<String> = proxy.events().into_iter().map(|e| e.detail).collect();
    assert!(
        details
            .iter()
            .any(|d| d.starts_with("listener removed until enabled")),
        "{details:?}"
    );
    proxy.stop().await;
}
