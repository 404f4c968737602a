//! Baselines around this library: what a generic framed stack gets
//! (tokio-util `FramedWrite`/`FramedRead` with unsigned-varint's `UviBytes`,
//! the same wire format), and what the kernel itself allows (no framing).
//!
//! Both run a writer and a reader on two threads over a socket pair whose
//! writing end has `SO_SNDBUF` 256 KiB, as the Go reference and udsipc set.

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio_util::codec::{FramedRead, FramedWrite};
use unsigned_varint::codec::UviBytes;

use crate::alloc::allocations;
use crate::{Measurement, per_steady_message, warmup_messages};

/// `SO_SNDBUF` of every baseline's writing end, as Go's default.
pub const SNDBUF: usize = 256 * 1024;
/// The tokio-util baseline's buffers: `FramedWrite` writes once this much
/// is buffered (its default is 8 KiB), `FramedRead` reads this much at a
/// time; the same sizes udsipc works with, so the baseline is not held back
/// by small defaults.
pub const BUFFER: usize = 256 * 1024;
/// Bytes per `write` for the raw limit.
pub const RAW_CHUNK: usize = 256 * 1024;

fn set_sndbuf(s: &UnixStream, size: usize) {
    // As Go and the Writer do: a refused size just keeps the default.
    let _ = nix::sys::socket::setsockopt(s, nix::sys::socket::sockopt::SndBuf, &size);
}

fn current_thread() -> Result<tokio::runtime::Runtime, String> {
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
    let (a, b) = UnixStream::pair().map_err(|e| e.to_string())?;
    set_sndbuf(&a, SNDBUF);
    a.set_nonblocking(true).map_err(|e| e.to_string())?;
    b.set_nonblocking(true).map_err(|e| e.to_string())?;
    let warm = warmup_messages(messages).max(1);
    let reader = std::thread::spawn(move || -> Result<(u64, u64, u64), String> {
        current_thread()?.block_on(async move {
            let stream = tokio::net::UnixStream::from_std(b).map_err(|e| e.to_string())?;
            let mut codec = UviBytes::<Bytes>::default();
            codec.set_max_len(size.max(1));
            let mut frames = FramedRead::with_capacity(stream, codec, BUFFER);
            let (mut got, mut bytes, mut mark) = (0u64, 0u64, 0u64);
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
    });
    let payload = Bytes::from(vec![0x3cu8; size]);
    let start = Instant::now();
    let written = current_thread()?.block_on(async move {
        let stream = tokio::net::UnixStream::from_std(a).map_err(|e| e.to_string())?;
        let mut sink = FramedWrite::new(stream, UviBytes::<Bytes>::default());
        sink.set_backpressure_boundary(BUFFER);
        for _ in 0..messages {
            sink.feed(payload.clone())
                .await
                .map_err(|e| e.to_string())?;
        }
        sink.flush().await.map_err(|e| e.to_string())
    });
    let got = reader
        .join()
        .map_err(|_| "tokio-util reader thread panicked".to_owned())?;
    let elapsed = start.elapsed();
    let allocs = allocations();
    written?;
    let (got, bytes, mark) = got?;
    if got != messages {
        return Err(format!("tokio-util: {got} of {messages} frames arrived"));
    }
    Ok(Measurement {
        size,
        messages,
        bytes,
        elapsed,
        allocs_per_msg: Some(per_steady_message(allocs - mark, messages)),
    })
}

/// The kernel's limit for one Unix stream socket on this machine: no
/// framing, [`RAW_CHUNK`] writes and reads, `SO_SNDBUF` [`SNDBUF`], writer
/// and reader on two threads. `total` bytes are moved. Both sides are
/// non-blocking and wait in epoll (through tokio), as udsipc and the Go
/// runtime do: blocking threads get woken onto the waker's core by the
/// scheduler and then take turns on one core, which measures the
/// scheduler, not the socket.
pub fn raw_socket_limit(total: u64) -> Result<Measurement, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (a, b) = UnixStream::pair().map_err(|e| e.to_string())?;
    set_sndbuf(&a, SNDBUF);
    a.set_nonblocking(true).map_err(|e| e.to_string())?;
    b.set_nonblocking(true).map_err(|e| e.to_string())?;
    let reader = std::thread::spawn(move || -> Result<u64, String> {
        current_thread()?.block_on(async move {
            let mut b = tokio::net::UnixStream::from_std(b).map_err(|e| e.to_string())?;
            let mut buf = vec![0u8; RAW_CHUNK];
            let mut got = 0u64;
            while got < total {
                match b.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n as u64,
                }
            }
            Ok(got)
        })
    });
    let chunk = vec![0x5au8; RAW_CHUNK];
    let start = Instant::now();
    current_thread()?.block_on(async {
        let mut a = tokio::net::UnixStream::from_std(a).map_err(|e| e.to_string())?;
        let mut sent = 0u64;
        while sent < total {
            let n = (total - sent).min(RAW_CHUNK as u64) as usize;
            a.write_all(&chunk[..n]).await.map_err(|e| e.to_string())?;
            sent += n as u64;
        }
        Ok::<(), String>(())
    })?;
    let got = reader
        .join()
        .map_err(|_| "raw reader thread panicked".to_owned())??;
    let elapsed = start.elapsed().max(Duration::from_nanos(1));
    Ok(Measurement {
        size: RAW_CHUNK,
        messages: total.div_ceil(RAW_CHUNK as u64),
        bytes: got,
        elapsed,
        allocs_per_msg: None,
    })
}
