//! This library end to end in one process: the public `Writer` API (the
//! two-process column's producer: a `BufferedWriter` up to 256 B, `send`
//! above) to a `Reader` handler, over a real Unix socket.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::alloc::allocations;
use crate::{Measurement, warmup_messages};

/// Counts deliveries and wakes the waiter when the expected number arrived.
#[derive(Debug)]
pub struct Done {
    received: AtomicU64,
    wrong_size: AtomicU64,
    size: usize,
    expected: u64,
    warm: u64,
    allocs_at_warm: AtomicU64,
    finished: Mutex<bool>,
    cv: Condvar,
}

impl Done {
    /// Waits for `expected` deliveries of `size` bytes each.
    pub fn new(expected: u64, size: usize) -> Arc<Self> {
        Arc::new(Self {
            received: AtomicU64::new(0),
            wrong_size: AtomicU64::new(0),
            size,
            expected,
            warm: warmup_messages(expected).max(1),
            allocs_at_warm: AtomicU64::new(0),
            finished: Mutex::new(false),
            cv: Condvar::new(),
        })
    }

    /// One message of `len` bytes arrived. (One atomic per message: the
    /// handler's cost is part of what is measured.)
    pub fn record(&self, len: usize) {
        if len != self.size {
            self.wrong_size.fetch_add(1, Ordering::Relaxed);
        }
        let n = self.received.fetch_add(1, Ordering::Relaxed) + 1;
        if n == self.warm {
            self.allocs_at_warm.store(allocations(), Ordering::Relaxed);
        }
        if n == self.expected {
            *self.finished.lock().unwrap() = true;
            self.cv.notify_all();
        }
    }

    /// Blocks until every expected message arrived (`true`) or `patience`
    /// ran out (`false`).
    pub fn wait(&self, patience: Duration) -> bool {
        let guard = self.finished.lock().unwrap();
        let (guard, _) = self
            .cv
            .wait_timeout_while(guard, patience, |f| !*f)
            .unwrap();
        *guard
    }

    /// Messages delivered so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Allocations in this process since the warm-up ended (as the
    /// deliveries count it), and the messages expected after it.
    pub fn steady_allocs(&self) -> (u64, u64) {
        let since = allocations() - self.allocs_at_warm.load(Ordering::Relaxed);
        (since, self.expected.saturating_sub(self.warm).max(1))
    }

    /// Payload bytes delivered so far; an error if any message had the
    /// wrong size.
    pub fn bytes(&self) -> Result<u64, String> {
        match self.wrong_size.load(Ordering::Relaxed) {
            0 => Ok(self.received() * self.size as u64),
            n => Err(format!(
                "{n} messages arrived with a size other than {}",
                self.size
            )),
        }
    }
}

/// Moves `messages` messages of `size` bytes from a `Writer` to a `Reader`
/// at `path`, both in this process, with the producer API and placement of
/// the two-process udsipc column (a `BufferedWriter` up to 256 B, `send`
/// above; the Writer on the producer's current-thread runtime); counts
/// this process's allocations once the reader has seen the warm-up
/// messages.
pub fn rust_in_process(path: &Path, size: usize, messages: u64) -> Result<Measurement, String> {
    let (done, reader) = counting_reader(path, size, messages)?;
    let producer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let writer = udsipc::Writer::builder(path)
        .runtime(producer.handle().clone())
        .start()
        .map_err(|e| e.to_string())?;
    let payload = crate::payload(size);
    let cpu_start = crate::cpu::self_ns();
    let start = Instant::now();
    producer.block_on(send_unpaced(&writer, &payload, messages))?;
    // The Writer's task runs on the producer's runtime: stopping it (as
    // the writer process does) drives it until everything was written.
    producer
        .block_on(writer.stop(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let arrived = done.wait(Duration::from_secs(120));
    let elapsed = start.elapsed();
    let cpu = crate::cpu::Cpu {
        writer_ns: crate::cpu::self_ns().saturating_sub(cpu_start),
        reader_ns: None,
    };
    let allocs = done.steady_allocs();
    finish(
        &done,
        allocs,
        reader,
        &producer,
        arrived,
        elapsed,
        Some(cpu),
    )
}

/// `writers` Writers (one connection each, on the library's runtime) into
/// one Reader in this process, the messages dealt round-robin with `send`:
/// the scaling figures.
pub fn rust_in_process_writers(
    path: &Path,
    size: usize,
    messages: u64,
    writers: usize,
) -> Result<Measurement, String> {
    let (done, reader) = counting_reader(path, size, messages)?;
    let writers = (0..writers.max(1))
        .map(|_| udsipc::Writer::builder(path).start())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let payload = crate::payload(size);
    let producer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    producer.block_on(async {
        for i in 0..messages {
            writers[i as usize % writers.len()]
                .send(payload.clone())
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok::<(), String>(())
    })?;
    let arrived = done.wait(Duration::from_secs(120));
    let elapsed = start.elapsed();
    let allocs = done.steady_allocs();
    for writer in &writers {
        producer
            .block_on(writer.stop(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
    }
    finish(&done, allocs, reader, &producer, arrived, elapsed, None)
}

/// A `Reader` at `path` whose handler counts `messages` deliveries of
/// `size` bytes into the returned `Done`.
fn counting_reader(
    path: &Path,
    size: usize,
    messages: u64,
) -> Result<(Arc<Done>, udsipc::Reader), String> {
    let done = Done::new(messages, size);
    let sink = Arc::clone(&done);
    let reader = udsipc::Reader::builder(path)
        .systemd(false)
        .max_message_size(size.max(1) as u64)
        .start(move |m: &[u8]| {
            sink.record(m.len());
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    Ok((done, reader))
}

/// Stops `reader` and makes the measurement of a run that took `elapsed`
/// (an error unless every message `arrived`), with the allocations
/// `steady_allocs` counted before any stop.
fn finish(
    done: &Done,
    (allocs, after_warmup): (u64, u64),
    reader: udsipc::Reader,
    producer: &tokio::runtime::Runtime,
    arrived: bool,
    elapsed: Duration,
    cpu: Option<crate::cpu::Cpu>,
) -> Result<Measurement, String> {
    producer
        .block_on(reader.stop(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    if !arrived {
        return Err(format!(
            "only {} of {} messages arrived",
            done.received(),
            done.expected
        ));
    }
    Ok(Measurement {
        size: done.size,
        messages: done.expected,
        bytes: done.bytes()?,
        elapsed,
        allocs_per_msg: Some(allocs as f64 / after_warmup as f64),
        cpu,
    })
}

/// Messages up to this size are sent through a `BufferedWriter` (copied
/// into the producer's own buffer, handed to the Writer's queue 256 KiB at
/// a time), larger ones handed over as `Bytes` with `send` (no copy):
/// udsipc's docs advise the same. Measured between two processes,
/// interleaved rounds: 64 B, 49.8-55.1 M msgs/s against 22.3-38.4 M for
/// `send` per message (which takes the queue's lock each time). At
/// 1 KiB the buffer wins long streams (5.2 M against 4.45 M msgs/s over
/// 3 M messages) but loses this table's 256 MiB rounds (3.6-3.7 against
/// 3.9-4.0 GB/s, 2 runs each: its first 10 MB are copies into fresh
/// memory while the Writer's task waits for the producer to yield); at
/// 4 KiB and 10 KiB it is slower (0.94 M against 1.38 M, 0.36 M against
/// 0.65 M msgs/s).
pub(crate) const BUFFER_UP_TO: usize = 256;

/// The udsipc columns' producer, in both tables: `count` copies of
/// `payload` as fast as the Writer takes them, through a `BufferedWriter`
/// (`send`, then `flush`) up to [`BUFFER_UP_TO`] bytes and with
/// `send` (waiting for queue room, no copy) above.
pub(crate) async fn send_unpaced(
    writer: &udsipc::Writer,
    payload: &bytes::Bytes,
    count: u64,
) -> Result<(), String> {
    if payload.len() <= BUFFER_UP_TO {
        let mut out = writer.buffered();
        for _ in 0..count {
            out.send(payload).await.map_err(|e| e.to_string())?;
        }
        return out.flush().await.map_err(|e| e.to_string());
    }
    for _ in 0..count {
        writer
            .send(payload.clone())
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
