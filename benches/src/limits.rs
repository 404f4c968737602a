//! What this machine allows, measured in the same run as everything else,
//! so each udsipc cell can be shown as a share of its limit:
//!
//! - **framed-copy limit**: a writer thread copies each frame (varint
//!   prefix and body) into a 256 KiB buffer and writes the buffer; a reader
//!   thread reads 256 KiB at a time. No queue, no parsing, no handler: the
//!   least any framing library must do.
//! - **raw limit**: the same without frames: 256 KiB writes of one buffer.
//! - **latency floor**: a blocking 64 B ping-pong (half the round trip) and
//!   a paced one-way stream (64 B at the latency rate, each message stamped)
//!   to a blocking reader: what one wake-up costs here.
//!
//! Each transfer is measured two ways, blocking threads and non-blocking
//! sockets waiting in epoll (a current-thread tokio runtime per side); the
//! table keeps the faster and says which.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use udsipc::frame::{MAX_VARINT_LEN, encode_varint};

use crate::Measurement;
use crate::baseline::{RAW_CHUNK, SNDBUF, current_thread, set_sndbuf};
use crate::clock::monotonic_ns;
use crate::cpu::{Cpu, self_ns};

/// How both sides wait for the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Waiting {
    /// Blocking `read`/`write` on two threads.
    Blocking,
    /// Non-blocking sockets, epoll through a current-thread tokio runtime
    /// per side.
    Epoll,
}

impl Waiting {
    /// `blocking` or `epoll`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Blocking => "blocking",
            Self::Epoll => "epoll",
        }
    }
}

/// Fills a [`RAW_CHUNK`] buffer with the next bytes to write; `false` when
/// there is nothing more.
pub(crate) type Source = Box<dyn FnMut(&mut Vec<u8>) -> bool + Send>;

/// Frames of `size`-byte messages, `messages` of them, copied into chunks.
pub(crate) fn framed_source(size: usize, messages: u64) -> (Source, u64) {
    let body = crate::payload(size);
    let mut prefix = [0u8; MAX_VARINT_LEN];
    let n = encode_varint(size as u64, &mut prefix);
    let frame_len = (n + size) as u64;
    let mut left = messages;
    // Bytes of the current frame already copied (frames larger than a chunk
    // are split across chunks).
    let mut at = 0usize;
    let source = Box::new(move |buf: &mut Vec<u8>| {
        buf.clear();
        while left > 0 && buf.len() < RAW_CHUNK {
            let room = RAW_CHUNK - buf.len();
            if at == 0 && room >= n + size {
                buf.extend_from_slice(&prefix[..n]);
                buf.extend_from_slice(&body);
                left -= 1;
                continue;
            }
            // A frame that does not fit whole: copy what fits, the prefix
            // part and the body part each as one slice.
            let take = room.min(n + size - at);
            let end = at + take;
            if at < n {
                buf.extend_from_slice(&prefix[at..n.min(end)]);
            }
            if end > n {
                buf.extend_from_slice(&body[at.max(n) - n..end - n]);
            }
            at = end;
            if at == n + size {
                at = 0;
                left -= 1;
            }
        }
        !buf.is_empty()
    }) as Source;
    (source, frame_len * messages)
}

/// One chunk of constant bytes, over and over, `total` bytes in all.
pub(crate) fn raw_source(total: u64) -> Source {
    let mut left = total;
    Box::new(move |buf: &mut Vec<u8>| {
        let n = left.min(RAW_CHUNK as u64) as usize;
        buf.clear();
        buf.resize(n, 0x5a);
        left -= n as u64;
        n > 0
    })
}

/// Moves what `source` produces through a socket pair; returns the bytes
/// the reader got, the time from the first write to the last read, and the
/// process's CPU meanwhile.
fn pump(source: Source, total: u64, how: Waiting) -> Result<(u64, Duration, Cpu), String> {
    let (a, b) = UnixStream::pair().map_err(|e| e.to_string())?;
    set_sndbuf(&a, SNDBUF);
    let cpu_start = self_ns();
    let reader = std::thread::spawn(move || -> Result<(u64, Instant), String> {
        let got = read_all(b, total, how)?;
        Ok((got, Instant::now()))
    });
    let start = Instant::now();
    write_all(a, source, how)?;
    let (got, end) = reader
        .join()
        .map_err(|_| "limit reader thread panicked".to_owned())??;
    let cpu = Cpu {
        writer_ns: self_ns().saturating_sub(cpu_start),
        reader_ns: None,
    };
    Ok((
        got,
        end.duration_since(start).max(Duration::from_nanos(1)),
        cpu,
    ))
}

/// The writing half of a limit: writes what `source` produces, a
/// [`RAW_CHUNK`] at a time, blocking or through epoll (a current-thread
/// runtime on the calling thread).
pub(crate) fn write_all(
    stream: UnixStream,
    mut source: Source,
    how: Waiting,
) -> Result<(), String> {
    let mut chunk = Vec::with_capacity(RAW_CHUNK);
    if how == Waiting::Blocking {
        let mut a = stream;
        while source(&mut chunk) {
            a.write_all(&chunk).map_err(|e| e.to_string())?;
        }
        return Ok(());
    }
    stream.set_nonblocking(true).map_err(|e| e.to_string())?;
    current_thread()?.block_on(async {
        use tokio::io::AsyncWriteExt;
        let mut a = tokio::net::UnixStream::from_std(stream).map_err(|e| e.to_string())?;
        while source(&mut chunk) {
            a.write_all(&chunk).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

/// The reading half of a limit: reads [`RAW_CHUNK`] at a time until
/// `total` bytes arrived or the stream ended; returns the bytes read.
pub(crate) fn read_all(stream: UnixStream, total: u64, how: Waiting) -> Result<u64, String> {
    let mut buf = vec![0u8; RAW_CHUNK];
    let mut got = 0u64;
    if how == Waiting::Blocking {
        let mut b = stream;
        while got < total {
            match b.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n as u64,
            }
        }
        return Ok(got);
    }
    stream.set_nonblocking(true).map_err(|e| e.to_string())?;
    current_thread()?.block_on(async move {
        use tokio::io::AsyncReadExt;
        let mut b = tokio::net::UnixStream::from_std(stream).map_err(|e| e.to_string())?;
        while got < total {
            match b.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n as u64,
            }
        }
        Ok(got)
    })
}

/// The framed-copy limit for `messages` messages of `size` bytes: payload
/// MB/s counts message bodies, as every other column does.
pub fn framed_copy_limit(size: usize, messages: u64, how: Waiting) -> Result<Measurement, String> {
    let (source, total) = framed_source(size, messages);
    let (got, elapsed, cpu) = pump(source, total, how)?;
    if got != total {
        return Err(format!("framed limit: {got} of {total} bytes arrived"));
    }
    Ok(Measurement {
        size,
        messages,
        bytes: size as u64 * messages,
        elapsed,
        allocs_per_msg: None,
        cpu: Some(cpu),
    })
}

/// The raw limit: `total` bytes in [`RAW_CHUNK`] writes.
pub fn raw_limit(total: u64, how: Waiting) -> Result<Measurement, String> {
    let (got, elapsed, cpu) = pump(raw_source(total), total, how)?;
    Ok(Measurement {
        size: RAW_CHUNK,
        messages: total.div_ceil(RAW_CHUNK as u64),
        bytes: got,
        elapsed,
        allocs_per_msg: None,
        cpu: Some(cpu),
    })
}

/// p50 and p99 of `samples` (nanoseconds), as durations.
fn percentiles(mut samples: Vec<i64>) -> (Duration, Duration) {
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() - 1) as f64 * q).round() as usize;
        Duration::from_nanos(samples[i].max(0) as u64)
    };
    (at(0.50), at(0.99))
}

/// Half the round trip of a blocking 64 B ping-pong, `count` times (after a
/// tenth as warm-up): p50 and p99.
pub fn ping_pong(count: u64) -> Result<(Duration, Duration), String> {
    const SIZE: usize = 64;
    let (mut a, mut b) = UnixStream::pair().map_err(|e| e.to_string())?;
    let warm = count / 10;
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; SIZE];
        while b.read_exact(&mut buf).is_ok() {
            if b.write_all(&buf).is_err() {
                break;
            }
        }
    });
    let mut buf = [0u8; SIZE];
    let mut halves = Vec::with_capacity(count as usize);
    for i in 0..warm + count {
        let t = monotonic_ns();
        a.write_all(&buf).map_err(|e| e.to_string())?;
        a.read_exact(&mut buf).map_err(|e| e.to_string())?;
        if i >= warm {
            halves.push((monotonic_ns() - t) / 2);
        }
    }
    drop(a);
    let _ = echo.join();
    Ok(percentiles(halves))
}

/// One-way latency of `count` 64 B messages sent at `rate` per second to a
/// blocking reader, each stamped with its send time: p50 and p99.
pub fn paced_one_way(count: u64, rate: f64) -> Result<(Duration, Duration), String> {
    const SIZE: usize = 64;
    let (mut a, mut b) = UnixStream::pair().map_err(|e| e.to_string())?;
    let warm = count / 10;
    let total = warm + count;
    let reader = std::thread::spawn(move || -> Vec<i64> {
        let mut buf = [0u8; SIZE];
        let mut lat = Vec::with_capacity(count as usize);
        for i in 0..total {
            if b.read_exact(&mut buf).is_err() {
                break;
            }
            let now = monotonic_ns();
            let sent = i64::from_le_bytes(buf[..8].try_into().unwrap_or_default());
            if i >= warm {
                lat.push(now - sent);
            }
        }
        lat
    });
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let mut buf = [0u8; SIZE];
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        buf[..8].copy_from_slice(&monotonic_ns().to_le_bytes());
        a.write_all(&buf).map_err(|e| e.to_string())?;
    }
    let lat = reader
        .join()
        .map_err(|_| "latency reader thread panicked".to_owned())?;
    if lat.len() as u64 != count {
        return Err(format!("paced floor: {} of {count} messages", lat.len()));
    }
    Ok(percentiles(lat))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_framed_source_produces_exactly_the_frames_at_any_size() {
        for size in [1, 64, 1000, RAW_CHUNK - 3, RAW_CHUNK, 3 * RAW_CHUNK + 7] {
            let (mut source, total) = framed_source(size, 5);
            let mut wire = Vec::new();
            let mut chunk = Vec::new();
            while source(&mut chunk) {
                assert!(chunk.len() <= RAW_CHUNK);
                wire.extend_from_slice(&chunk);
            }
            assert_eq!(wire.len() as u64, total, "size {size}");
            let mut expected = Vec::new();
            for _ in 0..5 {
                udsipc::frame::encode_frame(&crate::payload(size), &mut expected);
            }
            assert!(wire == expected, "size {size}: wrong bytes");
        }
    }

    #[test]
    fn every_limit_moves_what_it_claims_both_ways() {
        for how in [Waiting::Blocking, Waiting::Epoll] {
            let m = framed_copy_limit(64, 10_000, how).unwrap();
            assert_eq!((m.messages, m.bytes), (10_000, 640_000));
            let m = raw_limit(1 << 20, how).unwrap();
            assert_eq!(m.bytes, 1 << 20);
        }
        let (p50, p99) = ping_pong(100).unwrap();
        assert!(p50 <= p99);
        let (p50, p99) = paced_one_way(100, 10_000.0).unwrap();
        assert!(p50 <= p99);
    }
}
