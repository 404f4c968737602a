//! Throughput measurements for udsipc, shared by the table runner
//! (`src/main.rs`) and its tests.
//!
//! Each measurement moves a fixed number of messages through real Unix
//! sockets on this machine and reports wall time; nothing here asserts on
//! speed.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// One timed transfer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    /// Message size in bytes.
    pub size: usize,
    /// Messages delivered.
    pub messages: u64,
    /// Payload bytes delivered.
    pub bytes: u64,
    /// Wall time from the first send to the last delivery.
    pub elapsed: Duration,
}

impl Measurement {
    /// Payload megabytes per second (1 MB = 1e6 bytes).
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64() / 1e6
    }

    /// Messages per second.
    pub fn msgs_per_sec(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }
}

/// Counts deliveries and wakes the waiter when the expected number arrived.
struct Done {
    received: AtomicU64,
    bytes: AtomicU64,
    expected: u64,
    finished: Mutex<bool>,
    cv: Condvar,
}

impl Done {
    fn record(&self, len: usize) {
        self.bytes.fetch_add(len as u64, Ordering::Relaxed);
        if self.received.fetch_add(1, Ordering::Relaxed) + 1 == self.expected {
            *self.finished.lock().unwrap() = true;
            self.cv.notify_all();
        }
    }

    fn wait(&self, patience: Duration) -> bool {
        let guard = self.finished.lock().unwrap();
        let (guard, _) = self
            .cv
            .wait_timeout_while(guard, patience, |f| !*f)
            .unwrap();
        *guard
    }
}

/// This library end to end in one process: the public `Writer` API (owned
/// `Bytes`, waiting for queue room with `send`) to a `Reader` handler, over
/// a real socket at `path`.
pub fn rust_in_process(path: &Path, size: usize, messages: u64) -> Result<Measurement, String> {
    let done = Arc::new(Done {
        received: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        expected: messages,
        finished: Mutex::new(false),
        cv: Condvar::new(),
    });
    let sink = Arc::clone(&done);
    let reader = udsipc::Reader::builder(path)
        .systemd(false)
        .max_message_size(size.max(1) as u64)
        .start(move |m: &[u8]| {
            sink.record(m.len());
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    let writer = udsipc::Writer::builder(path)
        .start()
        .map_err(|e| e.to_string())?;
    let payload = Bytes::from(vec![0xa5u8; size]);
    let producer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    producer.block_on(async {
        for _ in 0..messages {
            writer
                .send(payload.clone())
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok::<(), String>(())
    })?;
    let arrived = done.wait(Duration::from_secs(120));
    let elapsed = start.elapsed();
    producer
        .block_on(writer.stop(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    producer
        .block_on(reader.stop(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    if !arrived {
        return Err(format!(
            "only {} of {messages} messages arrived",
            done.received.load(Ordering::Relaxed)
        ));
    }
    Ok(Measurement {
        size,
        messages,
        bytes: done.bytes.load(Ordering::Relaxed),
        elapsed,
    })
}

/// The kernel's limit for one Unix stream socket on this machine: no
/// framing, 256 KiB writes, `SO_SNDBUF` 256 KiB, writer and reader on two
/// threads. `total` bytes are moved.
pub fn raw_socket_limit(total: u64) -> Result<Measurement, String> {
    const CHUNK: usize = 256 * 1024;
    let (mut a, mut b) = UnixStream::pair().map_err(|e| e.to_string())?;
    set_sndbuf(&a, CHUNK);
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; CHUNK];
        let mut got = 0u64;
        while got < total {
            match b.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n as u64,
            }
        }
        got
    });
    let chunk = vec![0x5au8; CHUNK];
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        let n = (total - sent).min(CHUNK as u64) as usize;
        a.write_all(&chunk[..n]).map_err(|e| e.to_string())?;
        sent += n as u64;
    }
    let got = reader
        .join()
        .map_err(|_| "reader thread panicked".to_owned())?;
    let elapsed = start.elapsed();
    Ok(Measurement {
        size: CHUNK,
        messages: total.div_ceil(CHUNK as u64),
        bytes: got,
        elapsed,
    })
}

fn set_sndbuf(s: &UnixStream, size: usize) {
    // As the Writer does (and Go): a refused size just keeps the default.
    let _ = nix::sys::socket::setsockopt(s, nix::sys::socket::sockopt::SndBuf, &size);
}

/// The median of `values` (which must not be empty).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    if values.len() % 2 == 0 {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}
