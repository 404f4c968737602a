//! `codec::UvarintCodec` over real Unix sockets, interoperating with the
//! crate's own Reader and Writer in both directions.
#![cfg(feature = "tokio-util")]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::net::UnixListener;
use tokio_util::codec::{FramedRead, FramedWrite};
use udsipc::codec::{CodecError, UvarintCodec};
use udsipc::frame::FrameError;

const STOP: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framed_read_receives_what_the_writer_sends() {
    let sock = temp_sock();
    let listener = UnixListener::bind(&sock.path).unwrap();
    let writer = udsipc::Writer::builder(&sock.path).start().unwrap();
    let sent: Vec<Vec<u8>> = (0..500u32)
        .map(|i| vec![i as u8; (i as usize * 37) % 3000])
        .collect();
    for m in &sent {
        writer.send(m.clone()).await.unwrap();
    }
    let (stream, _) = listener.accept().await.unwrap();
    let mut framed = FramedRead::new(stream, UvarintCodec::new());
    let want: Vec<Vec<u8>> = sent.into_iter().filter(|m| !m.is_empty()).collect();
    let mut got = Vec::new();
    while got.len() < want.len() {
        got.push(framed.next().await.unwrap().unwrap().to_vec());
    }
    assert_eq!(got, want);
    writer.stop(STOP).await.unwrap();
    assert!(
        framed.next().await.is_none(),
        "clean end after the Writer stops"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_receives_what_framed_write_sends() {
    let sock = temp_sock();
    let collector = Collector::new();
    let reader = udsipc::Reader::builder(&sock.path)
        .start(collector.handler())
        .unwrap();
    let stream = tokio::net::UnixStream::connect(&sock.path).await.unwrap();
    let mut framed = FramedWrite::new(stream, UvarintCodec::new());
    for i in 0..200u32 {
        framed.feed(Bytes::from(i.to_string())).await.unwrap();
    }
    SinkExt::<Bytes>::flush(&mut framed).await.unwrap();
    let got = tokio::task::spawn_blocking(move || collector.take(200))
        .await
        .unwrap();
    let want: Vec<Vec<u8>> = (0..200u32).map(|i| i.to_string().into_bytes()).collect();
    assert_eq!(got, want);
    reader.stop(STOP).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framed_read_reports_an_oversized_prefix_then_ends() {
    let (a, b) = tokio::net::UnixStream::pair().unwrap();
    let mut framed = FramedRead::new(b, UvarintCodec::new().max_message_size(10));
    let (_r, mut w) = a.into_split();
    tokio::io::AsyncWriteExt::write_all(&mut w, &[1, b'x', 11])
        .await
        .unwrap();
    assert_eq!(&framed.next().await.unwrap().unwrap()[..], b"x");
    let err = framed.next().await.unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            CodecError::Frame(FrameError::TooLarge { len: 11, max: 10 })
        ),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framed_read_reports_a_truncated_body_at_eof() {
    let (a, b) = tokio::net::UnixStream::pair().unwrap();
    let mut framed = FramedRead::new(b, UvarintCodec::new());
    let mut a = a;
    tokio::io::AsyncWriteExt::write_all(&mut a, &[5, b'a', b'b'])
        .await
        .unwrap();
    drop(a);
    let err = framed.next().await.unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            CodecError::Frame(FrameError::TruncatedBody {
                expected: 5,
                got: 2
            })
        ),
        "{err:?}"
    );
}
