//! The baseline around this library: what a generic framed stack gets
//! (tokio-util `FramedWrite`/`FramedRead` with unsigned-varint's `UviBytes`,
//! the same wire format), and the same stack with this library's
//! `UvarintCodec` in place of `UviBytes` (the codec's own column). What the
//! kernel itself allows is in [`crate::limits`].
//!
//! It runs a writer and a reader on two threads over a socket pair whose
//! writing end has `SO_SNDBUF` 256 KiB, as the Go reference and udsipc set.

use std::os::unix::net::UnixStream;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio_util::codec::{Decoder, Encoder, FramedRead, FramedWrite};
use udsipc::codec::UvarintCodec;
use unsigned_varint::codec::UviBytes;

use crate::alloc::allocations;
use crate::cpu::{Cpu, self_ns};
use crate::{Measurement, per_steady_message, warmup_messages};

/// `SO_SNDBUF` of every baseline's writing end, as Go's default.
pub const SNDBUF: usize = 256 * 1024;
/// The tokio-util baseline's buffers: `FramedWrite` writes once this much
/// is buffered (its default is 8 KiB), `FramedRead` reads this much at a
/// time; the same sizes udsipc works with, so the baseline is not held back
/// by small defaults.
pub const BUFFER: usize = 256 * 1024;
/// Bytes per `write` (and `read`) for the limits in [`crate::limits`].
pub const RAW_CHUNK: usize = 256 * 1024;

pub(crate) fn set_sndbuf(s: &UnixStream, size: usize) {
    // As Go and the Writer do: a refused size just keeps the default.
    let _ = nix::sys::socket::setsockopt(s, nix::sys::socket::sockopt::SndBuf, &size);
}

pub(crate) fn current_thread() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

/// tokio-util + unsigned-varint: the writer `feed`s every message into a
/// `FramedWrite` (which writes whenever [`BUFFER`] bytes are buffered) and
/// `flush`es at the end; the reader takes frames from a `FramedRead` one by one. Each side
/// runs a current-thread runtime on its own thread.
pub fn tokio_util_framed(size: usize, messages: u64) -> Result<Measurement, String> {
    let mut decoder = UviBytes::<Bytes>::default();
    decoder.set_max_len(size.max(1));
    framed(
        "tokio-util",
        size,
        messages,
        UviBytes::<Bytes>::default(),
        decoder,
    )
}

/// [`tokio_util_framed`] with this library's `UvarintCodec` (Go-exact
/// framing) on both sides instead of `UviBytes`: the same shape, so the two
/// columns differ only in the codec.
pub fn udsipc_codec_framed(size: usize, messages: u64) -> Result<Measurement, String> {
    let codec = UvarintCodec::new().max_message_size(size.max(1) as u64);
    framed("udsipc codec", size, messages, codec, codec)
}

/// A `FramedWrite` with `encoder` → a `FramedRead` with `decoder`, each on
/// a current-thread runtime of its own thread.
fn framed<E, D>(
    name: &'static str,
    size: usize,
    messages: u64,
    encoder: E,
    decoder: D,
) -> Result<Measurement, String>
where
    E: Encoder<Bytes> + Send + 'static,
    E::Error: std::fmt::Display,
    D: Decoder<Item = BytesMut> + Send + 'static,
    D::Error: std::fmt::Display,
{
    let (a, b) = UnixStream::pair().map_err(|e| e.to_string())?;
    set_sndbuf(&a, SNDBUF);
    let warm = warmup_messages(messages).max(1);
    let cpu_start = self_ns();
    let reader = std::thread::spawn(move || read_frames(b, decoder, messages, warm));
    let start = Instant::now();
    let written = write_frames(a, encoder, size, messages, warm);
    let got = reader
        .join()
        .map_err(|_| format!("{name} reader thread panicked"))?;
    let elapsed = start.elapsed();
    let cpu = Cpu {
        writer_ns: self_ns().saturating_sub(cpu_start),
        reader_ns: None,
    };
    let allocs = allocations();
    written?;
    let (got, bytes, mark) = got?;
    if got != messages {
        return Err(format!("{name}: {got} of {messages} frames arrived"));
    }
    Ok(Measurement {
        size,
        messages,
        bytes,
        elapsed,
        allocs_per_msg: Some(per_steady_message(allocs - mark, messages)),
        cpu: Some(cpu),
    })
}

/// The writing half of the tokio-util columns: `feed`s `messages` frames of
/// `size` bytes into a `FramedWrite` with `encoder` (writing whenever
/// [`BUFFER`] bytes are buffered) and `flush`es, on a current-thread runtime
/// of the calling thread. Returns the allocation count once `warm` messages
/// were fed.
pub(crate) fn write_frames<E>(
    stream: UnixStream,
    encoder: E,
    size: usize,
    messages: u64,
    warm: u64,
) -> Result<u64, String>
where
    E: Encoder<Bytes>,
    E::Error: std::fmt::Display,
{
    stream.set_nonblocking(true).map_err(|e| e.to_string())?;
    let payload = Bytes::from(vec![0x3cu8; size]);
    current_thread()?.block_on(async move {
        let stream = tokio::net::UnixStream::from_std(stream).map_err(|e| e.to_string())?;
        let mut sink = FramedWrite::new(stream, encoder);
        sink.set_backpressure_boundary(BUFFER);
        let mut mark = allocations();
        for i in 0..messages {
            if i == warm {
                mark = allocations();
            }
            sink.feed(payload.clone())
                .await
                .map_err(|e| e.to_string())?;
        }
        sink.flush().await.map_err(|e| e.to_string())?;
        Ok(mark)
    })
}

/// The reading half of the tokio-util columns: takes frames one by one
/// from a `FramedRead` with `decoder` ([`BUFFER`] bytes per read) until
/// `messages` arrived or the stream ended, on a current-thread runtime of
/// the calling thread. Returns the frames, their payload bytes and the
/// allocation count once `warm` frames had arrived.
pub(crate) fn read_frames<D>(
    stream: UnixStream,
    decoder: D,
    messages: u64,
    warm: u64,
) -> Result<(u64, u64, u64), String>
where
    D: Decoder<Item = BytesMut>,
    D::Error: std::fmt::Display,
{
    stream.set_nonblocking(true).map_err(|e| e.to_string())?;
    current_thread()?.block_on(async move {
        let stream = tokio::net::UnixStream::from_std(stream).map_err(|e| e.to_string())?;
        let mut frames = FramedRead::with_capacity(stream, decoder, BUFFER);
        let (mut got, mut bytes, mut mark) = (0u64, 0u64, allocations());
        while got < messages {
            match frames.next().await {
                Some(Ok(frame)) => {
                    got += 1;
                    bytes += frame.len() as u64;
                    if got == warm {
                        mark = allocations();
                    }
                }
                Some(Err(e)) => return Err(e.to_string()),
                None => break,
            }
        }
        Ok((got, bytes, mark))
    })
}
