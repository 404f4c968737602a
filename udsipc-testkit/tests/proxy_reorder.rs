//! Frame-aware faults that leave the stream valid but wrong (a frame twice,
//! two frames swapped), in both directions, judged by the ledger with a
//! real udsipc Writer and Reader, and by raw sockets downstream.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rstest::rstest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use udsipc::{Reader, Writer};
use udsipc_testkit::ledger::{Ledger, LedgerReport};
use udsipc_testkit::proxy::FaultProxy;
use udsipc_testkit::proxy::spec::FaultSpec;

const WAIT: Duration = Duration::from_secs(30);

async fn through_proxy(spec: &str, messages: usize) -> LedgerReport {
    let dir = tempfile::tempdir().unwrap();
    let (front, back) = (dir.path().join("front.sock"), dir.path().join("back.sock"));
    let ledger = Arc::new(Ledger::new());
    let seen = Arc::clone(&ledger);
    let reader = Reader::builder(&back)
        .systemd(false)
        .start_with_info(move |body, conn| {
            seen.delivered(body, conn.id);
            Ok(())
        })
        .unwrap();
    let proxy = spec
        .parse::<FaultSpec>()
        .unwrap()
        .apply(FaultProxy::builder(&front, &back))
        .start()
        .await
        .unwrap();
    let writer = Writer::builder(&front).start().unwrap();
    for _ in 0..messages {
        let (_, body) = ledger.message(40);
        writer.send(Bytes::from(body)).await.unwrap();
    }
    writer.stop(WAIT).await.unwrap();
    // Every message reaches the Reader, then the connections end.
    let deadline = tokio::time::Instant::now() + WAIT;
    while ledger.report().delivered < messages as u64
        || proxy.stats().active > 0
        || reader.metrics().active_connections > 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connections never ended"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    reader.stop(WAIT).await.unwrap();
    proxy.stop().await;
    assert!(
        proxy.events().iter().any(|e| spec.contains(&e.fault)),
        "the fault never fired: {:?}",
        proxy.events()
    );
    ledger.report()
}

#[rstest]
#[case::duplicate("duplicate:5", &[5], &[])]
#[case::swap("swap:10", &[], &[10])]
#[tokio::test]
async fn the_ledger_detects_a_duplicated_and_a_swapped_frame(
    #[case] spec: &str,
    #[case] duplicated: &[u64],
    #[case] reordered: &[u64],
) {
    let r = through_proxy(spec, 20).await;
    assert_eq!(r.duplicated_ids, duplicated, "{r}");
    assert_eq!(r.reordered_ids, reordered, "{r}");
    assert_eq!((r.delivered, r.lost, r.corrupted), (20, 0, 0), "{r}");
}

fn frames(bodies: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for b in bodies {
        udsipc::frame::encode_frame(b, &mut out);
    }
    out
}

#[rstest]
#[case::duplicate("down:duplicate:1", frames(&[b"a", b"bb", b"bb", b"c"]))]
#[case::swap("down:swap:0", frames(&[b"bb", b"a", b"c"]))]
#[tokio::test]
async fn a_down_prefix_aims_the_fault_at_upstream_to_client_bytes(
    #[case] spec: &str,
    #[case] want: Vec<u8>,
) {
    let dir = tempfile::tempdir().unwrap();
    let (front, back) = (dir.path().join("front.sock"), dir.path().join("back.sock"));
    let upstream = UnixListener::bind(&back).unwrap();
    let proxy = spec
        .parse::<FaultSpec>()
        .unwrap()
        .apply(FaultProxy::builder(&front, &back))
        .start()
        .await
        .unwrap();
    let mut client = UnixStream::connect(&front).await.unwrap();
    let (mut server, _) = upstream.accept().await.unwrap();
    // Upstream -> client is faulted; client -> upstream is not.
    let request = frames(&[b"a", b"bb", b"c"]);
    client.write_all(&request).await.unwrap();
    let mut got = vec![0u8; request.len()];
    server.read_exact(&mut got).await.unwrap();
    assert_eq!(got, request);
    server.write_all(&request).await.unwrap();
    server.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, client.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer, want);
    let event = proxy
        .events()
        .into_iter()
        .find(|e| spec.ends_with(&format!("{}:{}", e.fault, spec.rsplit(':').next().unwrap())))
        .unwrap();
    assert_eq!(
        event.direction,
        Some(udsipc_testkit::proxy::Direction::ToClient)
    );
    proxy.stop().await;
}

/// A fault that waits for a whole frame must not cost an earlier fault its
/// effect: the corruption of frame 2 survives the duplicate holding the
/// chunk for frame 5, which arrives in two writes.
#[tokio::test]
async fn a_fault_waiting_for_more_bytes_does_not_undo_the_faults_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let (front, back) = (dir.path().join("front.sock"), dir.path().join("back.sock"));
    let upstream = UnixListener::bind(&back).unwrap();
    let mut builder = FaultProxy::builder(&front, &back);
    for spec in ["corrupt-body:2", "duplicate:5"] {
        builder = spec.parse::<FaultSpec>().unwrap().apply(builder);
    }
    let proxy = builder.start().await.unwrap();
    let bodies: Vec<Vec<u8>> = (0..7u8).map(|i| vec![b'a' + i; 8]).collect();
    let refs: Vec<&[u8]> = bodies.iter().map(|b| b.as_slice()).collect();
    let wire = frames(&refs);
    let mut client = UnixStream::connect(&front).await.unwrap();
    let (mut server, _) = upstream.accept().await.unwrap();
    // Frames 0..=4 and half of frame 5, then (once the idle proxy has
    // read that: the duplicate holds it, so nothing is forwarded) the rest.
    let split = 5 * 9 + 4;
    client.write_all(&wire[..split]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    client.write_all(&wire[split..]).await.unwrap();
    client.shutdown().await.unwrap();
    let mut head = Vec::new();
    tokio::time::timeout(WAIT, server.read_to_end(&mut head))
        .await
        .unwrap()
        .unwrap();
    let mut expected = wire.clone();
    expected.splice(6 * 9..6 * 9, wire[5 * 9..6 * 9].to_vec());
    assert_eq!(head.len(), expected.len());
    let flipped: Vec<usize> = (0..head.len())
        .filter(|&i| head[i] != expected[i])
        .collect();
    assert_eq!(flipped.len(), 1, "{head:?}");
    assert!(
        (2 * 9 + 1..3 * 9).contains(&flipped[0]),
        "flipped byte {}",
        flipped[0]
    );
    assert_eq!((head[flipped[0]] ^ expected[flipped[0]]).count_ones(), 1);
    proxy.stop().await;
}
