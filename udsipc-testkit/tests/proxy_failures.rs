//! The proxy's own failure paths, each a regression test of a defect:
//! an unreachable upstream, a cut's frame number when one read holds many
//! frames, a full backlog at start-up, and read errors, over real sockets.
//! Accept errors (EMFILE) need the `udsipc` binary under a descriptor
//! limit: `udsipc-cli/tests/proxy_accept_errors.rs`.

use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use udsipc_testkit::proxy::{DropAfterFrames, FaultEvent, FaultProxy, Fragment};

/// The bound on every wait; generous, because CI machines stall.
const WAIT: Duration = Duration::from_secs(30);

fn frames(n: usize, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..n {
        udsipc::frame::encode_frame(body, &mut out);
    }
    out
}

async fn wait_for_event(proxy: &FaultProxy, name: &str) -> FaultEvent {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(e) = proxy.events().into_iter().find(|e| e.fault == name) {
            return e;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no `{name}` event: {:?}",
            proxy.events()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn an_unreachable_upstream_closes_the_client_at_once_and_logs_an_event() {
    let dir = tempfile::tempdir().unwrap();
    let (front, back) = (dir.path().join("front.sock"), dir.path().join("none.sock"));
    let proxy = FaultProxy::builder(&front, &back).start().await.unwrap();
    let mut client = UnixStream::connect(&front).await.unwrap();
    let _ = client.write_all(&frames(3, b"lost")).await;
    // The proxy closes the client: its read ends (EOF or reset), not hangs.
    let mut buf = [0u8; 8];
    let read = tokio::time::timeout(WAIT, client.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the client was not closed: {read:?}"
    );
    let event = wait_for_event(&proxy, "upstream-unreachable").await;
    assert!(event.closed_connection);
    assert_eq!(event.conn, 1);
    assert!(event.detail.contains("none.sock"), "{}", event.detail);
    let json = serde_json::to_string(&event).unwrap();
    assert!(
        json.starts_with(r#"{"fault":"upstream-unreachable""#),
        "{json}"
    );
    assert_eq!(proxy.stats().upstream_unreachable, 1);
    proxy.stop().await;
}

#[tokio::test]
async fn a_cut_after_n_frames_names_frame_n_when_one_read_holds_many_frames() {
    let dir = tempfile::tempdir().unwrap();
    let (front, back) = (dir.path().join("front.sock"), dir.path().join("back.sock"));
    let upstream = UnixListener::bind(&back).unwrap();
    let proxy = FaultProxy::builder(&front, &back)
        .fault(Fragment::new(1, 64))
        .fault(DropAfterFrames::new(1000))
        .start()
        .await
        .unwrap();
    let mut client = UnixStream::connect(&front).await.unwrap();
    // Written before the upstream is even accepted: the proxy's first read
    // holds far more than 1000 frames.
    let wire = frames(2000, b"abc");
    client.write_all(&wire).await.unwrap();
    let (mut server, _) = upstream.accept().await.unwrap();
    let mut got = Vec::new();
    server.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, wire[..4000]);
    let event = wait_for_event(&proxy, "drop-after-frames").await;
    assert_eq!(event.frame, Some(1000), "{event:?}");
    assert_eq!(event.byte_offset, 4000);
    proxy.stop().await;
}

/// A listener (not ours) with a backlog of one, filled: a blocking connect
/// to it would wait forever.
fn full_backlog_listener(path: &std::path::Path) -> Vec<std::os::fd::OwnedFd> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, connect, listen, socket,
    };
    let addr = UnixAddr::new(path).unwrap();
    let listener = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    bind(listener.as_raw_fd(), &addr).unwrap();
    listen(&listener, Backlog::new(1).unwrap()).unwrap();
    let mut fds = vec![listener];
    for _ in 0..64 {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .unwrap();
        let full = connect(fd.as_raw_fd(), &addr).is_err();
        fds.push(fd);
        if full {
            return fds;
        }
    }
    panic!("the backlog never filled");
}

#[test]
fn start_refuses_a_listen_path_whose_listener_has_a_full_backlog_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let (front, back) = (dir.path().join("front.sock"), dir.path().join("back.sock"));
    let _busy = full_backlog_listener(&front);
    let (tx, rx) = mpsc::channel();
    // On its own thread: before the fix, start() blocked in connect(2).
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let started = rt.block_on(FaultProxy::builder(&front, &back).start());
        let _ = tx.send(started.map(|_| ()).map_err(|e| e.kind()));
    });
    let result = rx
        .recv_timeout(WAIT)
        .expect("start() hung on the full backlog");
    assert_eq!(result, Err(std::io::ErrorKind::AddrInUse));
}

#[tokio::test]
async fn a_read_error_on_the_client_is_logged_as_a_cut_not_a_clean_close() {
    let dir = tempfile::tempdir().unwrap();
    let (front, back) = (dir.path().join("front.sock"), dir.path().join("back.sock"));
    let upstream = UnixListener::bind(&back).unwrap();
    let proxy = FaultProxy::builder(&front, &back).start().await.unwrap();
    let client = UnixStream::connect(&front).await.unwrap();
    let (mut server, _) = upstream.accept().await.unwrap();
    // The upstream answers; the client never reads the answer, then closes
    // with it unread: Linux reports that close to the proxy as ECONNRESET.
    server.write_all(b"unread answer").await.unwrap();
    client.readable().await.unwrap();
    let mut client = client;
    client.write_all(&frames(2, b"hi")).await.unwrap();
    drop(client);
    let mut got = Vec::new();
    server.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, frames(2, b"hi"));
    let event = wait_for_event(&proxy, "read-error").await;
    assert!(event.closed_connection, "{event:?}");
    assert_eq!(
        event.direction,
        Some(udsipc_testkit::proxy::Direction::ToUpstream)
    );
    assert_eq!(event.byte_offset, 6);
    assert_eq!(event.frame, Some(2));
    assert!(event.detail.contains("client"), "{}", event.detail);
    proxy.stop().await;
}

/// Found by `udsipc/tests/stress.rs` (seed 0x73f10aecf291033e): an upstream
/// that resets its connection (closes with bytes unread) after the client
/// has sent everything and closed loses bytes the proxy had read from the
/// client. The only event used to be a `read-error` on the upstream side
/// with `in_flight_bytes: 0` (only when the reset raced the last write did
/// an `upstream-closed` event account for them); now the forwarding side
/// logs `upstream-closed` with its bound whenever the upstream resets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_reset_after_the_client_closed_logs_what_it_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (front, back) = (dir.path().join("front.sock"), dir.path().join("back.sock"));
    let upstream = UnixListener::bind(&back).unwrap();
    let proxy = FaultProxy::builder(&front, &back).start().await.unwrap();
    let wire = frames(2_000, &[7u8; 60]);
    let mut client = UnixStream::connect(&front).await.unwrap();
    let (mut server, _) = upstream.accept().await.unwrap();
    // The client sends everything and closes; the proxy reads it all.
    client.write_all(&wire).await.unwrap();
    drop(client);
    // The upstream reads a little, then closes with the rest unread (RST).
    let mut got = vec![0u8; 1000];
    server.read_exact(&mut got).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(server);
    let deadline = tokio::time::Instant::now() + WAIT;
    while proxy.stats().active > 0 {
        assert!(tokio::time::Instant::now() < deadline, "never closed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    proxy.stop().await;
    let lost = (wire.len() - got.len()) as u64;
    let events = proxy.events();
    let in_flight: u64 = events.iter().map(|e| e.in_flight_bytes).sum();
    assert!(
        in_flight >= lost,
        "{lost} bytes lost, events account for {in_flight}: {events:?}"
    );
}
