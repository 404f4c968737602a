//! The Writer: a bounded queue in front of a background task that connects,
//! writes queued messages in batches, reconnects with backoff, and drains on
//! stop.
//!
//! This module owns the connection state machine. Queue memory lives in
//! `queue`, the batching of frames into syscalls in `batch`.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UnixStream;
use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::batch::{Batch, IOV_PER_CALL};
use crate::error::{
    ConfigError, StartError, StopError, WriteError, WriteFailure, WritePhase, WriterError,
};
use crate::lifecycle::Phase;
use crate::metrics::{WriterCounters, WriterMetrics};
use crate::queue::{Item, Queue, Refused};
use crate::socket;

/// Default queue capacity: 10,000 messages (Go: `WithMaxBufferedWrites`).
pub const DEFAULT_MAX_BUFFERED_WRITES: usize = 10_000;
/// Default write timeout: 1 s (Go: `WithWriteTimeout`).
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// Default dial timeout: 1 s (Go: `WithDialTimeout`).
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(1);
/// Default first reconnect delay: 1 s (fixed in Go).
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Default reconnect delay ceiling: 10 s (Go: `WithMaxBackoff`).
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Default `SO_SNDBUF`: 256 KiB (Go: `WithWriteBufferSize`).
pub const DEFAULT_WRITE_BUFFER_SIZE: u32 = 256 << 10;

type ErrorCallback = dyn Fn(&WriterError) + Send + Sync;

/// Exponential reconnect delays: `initial`, doubling, capped at `max`;
/// back to `initial` after a successful connect.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.min(max);
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay to wait now; the following one doubles.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        d
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Configures and starts a [`Writer`].
///
/// | option | default | Go |
/// |---|---|---|
/// | [`max_buffered_writes`](Self::max_buffered_writes) | 10,000 | `WithMaxBufferedWrites` |
/// | [`write_timeout`](Self::write_timeout) | 1 s | `WithWriteTimeout` |
/// | [`dial_timeout`](Self::dial_timeout) | 1 s | `WithDialTimeout` |
/// | [`max_backoff`](Self::max_backoff) | 10 s | `WithMaxBackoff` |
/// | [`initial_backoff`](Self::initial_backoff) | 1 s | fixed at 1 s |
/// | [`write_buffer_size`](Self::write_buffer_size) | 256 KiB | `WithWriteBufferSize` |
/// | [`on_error`](Self::on_error) | none | `WithWriterErrorCallback` |
/// | [`runtime`](Self::runtime) | current, else the library's own | - |
#[must_use = "a builder does nothing until `start` is called"]
pub struct WriterBuilder {
    path: PathBuf,
    max_buffered_writes: usize,
    write_timeout: Duration,
    dial_timeout: Duration,
    initial_backoff: Duration,
    max_backoff: Duration,
    write_buffer_size: u32,
    on_error: Option<Arc<ErrorCallback>>,
    runtime: Option<Handle>,
}

impl std::fmt::Debug for WriterBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterBuilder")
            .field("path", &self.path)
            .field("max_buffered_writes", &self.max_buffered_writes)
            .field("write_timeout", &self.write_timeout)
            .field("dial_timeout", &self.dial_timeout)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("write_buffer_size", &self.write_buffer_size)
            .finish_non_exhaustive()
    }
}

impl WriterBuilder {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            max_buffered_writes: DEFAULT_MAX_BUFFERED_WRITES,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            dial_timeout: DEFAULT_DIAL_TIMEOUT,
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            write_buffer_size: DEFAULT_WRITE_BUFFER_SIZE,
            on_error: None,
            runtime: None,
        }
    }

    /// How many messages may wait (queued or being written) before
    /// [`Writer::write_message`] refuses with `BufferFull`. Must be above
    /// zero. Default 10,000.
    pub fn max_buffered_writes(mut self, n: usize) -> Self {
        self.max_buffered_writes = n;
        self
    }

    /// How long the socket may stay full before the write counts as failed
    /// (backpressure), the connection is closed and the message is retried
    /// on a new one. Must be above zero. Default 1 s.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// How long one connection attempt may take. Must be above zero. Default 1 s.
    pub fn dial_timeout(mut self, timeout: Duration) -> Self {
        self.dial_timeout = timeout;
        self
    }

    /// The first reconnect delay (Go fixes it at 1 s). Must be above zero.
    pub fn initial_backoff(mut self, delay: Duration) -> Self {
        self.initial_backoff = delay;
        self
    }

    /// The ceiling of the doubling reconnect delay. Must be above zero.
    /// Default 10 s.
    pub fn max_backoff(mut self, delay: Duration) -> Self {
        self.max_backoff = delay;
        self
    }

    /// `SO_SNDBUF` for each connection; 0 keeps the system default. On Linux
    /// this is what bounds a Unix stream socket's in-flight bytes. Default
    /// 256 KiB.
    pub fn write_buffer_size(mut self, bytes: u32) -> Self {
        self.write_buffer_size = bytes;
        self
    }

    /// Called with every error the Writer meets while running.
    pub fn on_error(mut self, callback: impl Fn(&WriterError) + Send + Sync + 'static) -> Self {
        self.on_error = Some(Arc::new(callback));
        self
    }

    /// The tokio runtime to run on. Default: the current one, or, outside
    /// any runtime, a small runtime owned by this library.
    pub fn runtime(mut self, handle: Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// Validates the options and starts the background task, which connects
    /// at once (Go: `NewWriter` + `Start`).
    pub fn start(self) -> Result<Writer, StartError> {
        socket::validate_path(&self.path)?;
        for (option, value) in [
            ("write_timeout", self.write_timeout),
            ("dial_timeout", self.dial_timeout),
            ("initial_backoff", self.initial_backoff),
            ("max_backoff", self.max_backoff),
        ] {
            if value.is_zero() {
                return Err(ConfigError::ZeroDuration { option }.into());
            }
        }
        if self.max_buffered_writes == 0 {
            return Err(ConfigError::ZeroSize {
                option: "max_buffered_writes",
            }
            .into());
        }
        let handle = crate::runtime::handle(self.runtime.as_ref()).map_err(StartError::Runtime)?;
        let (phase, _) = watch::channel(Phase::Running);
        let inner = Arc::new(WriterInner {
            queue: Queue::new(self.max_buffered_writes),
            counters: WriterCounters::default(),
            phase,
            path: self.path,
            write_timeout: self.write_timeout,
            dial_timeout: self.dial_timeout,
            initial_backoff: self.initial_backoff,
            max_backoff: self.max_backoff,
            write_buffer_size: self.write_buffer_size,
            on_error: self.on_error,
            stop_lock: tokio::sync::Mutex::new(false),
            task: std::sync::Mutex::new(None),
        });
        let task = handle.spawn(run(Arc::clone(&inner)));
        *inner.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        Ok(Writer { inner, handle })
    }
}

struct WriterInner {
    queue: Queue,
    counters: WriterCounters,
    phase: watch::Sender<Phase>,
    path: PathBuf,
    write_timeout: Duration,
    dial_timeout: Duration,
    initial_backoff: Duration,
    max_backoff: Duration,
    write_buffer_size: u32,
    on_error: Option<Arc<ErrorCallback>>,
    stop_lock: tokio::sync::Mutex<bool>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl WriterInner {
    fn report(&self, error: WriterError) {
        tracing::debug!(%error, context = error.context(), "writer error");
        if let Some(cb) = &self.on_error {
            crate::runtime::call_guarded("writer on_error", || cb(&error));
        }
    }

    async fn stop(self: Arc<Self>, timeout: Duration) -> Result<(), StopError> {
        let mut stopped = self.stop_lock.lock().await;
        if *stopped {
            return Ok(());
        }
        *stopped = true;
        self.queue.close();
        self.phase.send_replace(Phase::Draining);
        // If this future is dropped before it finishes, discard instead of
        // draining (and reconnecting) forever.
        let cancelled = crate::runtime::OnCancel::new(|| {
            self.phase.send_replace(Phase::Forced);
        });
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(mut task) = task else {
            cancelled.disarm();
            return Ok(());
        };
        let discarded_before = self.counters.discarded.load(Relaxed);
        let result = if tokio::time::timeout(timeout, &mut task).await.is_ok() {
            Ok(())
        } else {
            self.phase.send_replace(Phase::Forced);
            let _ = task.await;
            Err(StopError::DeadlineExceeded {
                discarded: self.counters.discarded.load(Relaxed) - discarded_before,
            })
        };
        cancelled.disarm();
        result
    }

    async fn connect(&self) -> io::Result<UnixStream> {
        let stream = tokio::time::timeout(self.dial_timeout, UnixStream::connect(&self.path))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "dial timeout"))??;
        if self.write_buffer_size > 0 {
            // As in Go, a refused buffer size is not a reason to fail.
            let _ = socket::set_send_buffer(&stream, self.write_buffer_size);
        }
        Ok(stream)
    }
}

/// What ended a wait inside the writer task.
enum Interrupt {
    Forced,
}

/// The background task: connect, write, reconnect, drain.
async fn run(inner: Arc<WriterInner>) {
    let mut phase = inner.phase.subscribe();
    let mut conn: Option<UnixStream> = None;
    let mut pending: VecDeque<Item> = VecDeque::new();
    let mut batch = Batch::new();
    let mut backoff = Backoff::new(inner.initial_backoff, inner.max_backoff);
    let mut head_failed = false;
    let mut connected_before = false;

    loop {
        let now = *phase.borrow_and_update();
        if now == Phase::Forced {
            break;
        }
        let draining = now == Phase::Draining;
        if pending.is_empty() {
            inner.queue.take_all(&mut pending);
        }
        if draining && pending.is_empty() {
            break; // Drained: the queue is closed and empty.
        }
        if conn.is_none() {
            match inner.connect().await {
                Ok(stream) => {
                    if connected_before {
                        inner.counters.reconnects.fetch_add(1, Relaxed);
                    }
                    connected_before = true;
                    backoff.reset();
                    conn = Some(stream);
                }
                Err(source) => {
                    inner.report(WriterError::Connect {
                        path: inner.path.clone(),
                        source,
                    });
                    let delay = backoff.next_delay();
                    tokio::select! {
                        _ = phase.changed() => {}
                        () = tokio::time::sleep(delay) => {}
                    }
                    continue;
                }
            }
        }
        if pending.is_empty() {
            tokio::select! {
                _ = phase.changed() => {}
                () = inner.queue.data_ready() => {}
            }
            continue;
        }
        let stream = conn.as_ref().expect("connected above");
        let write_phase = if draining {
            WritePhase::Draining
        } else if head_failed {
            WritePhase::RetryAfterReconnect
        } else {
            WritePhase::Running
        };
        batch.plan(&pending);
        let outcome = write_batch(&inner, stream, &mut batch, &pending, &mut phase).await;
        let done = batch.completed();
        pending.drain(..done);
        match outcome {
            Ok(()) => head_failed = false,
            Err(Ok((kind, source))) => {
                inner.counters.failed.fetch_add(1, Relaxed);
                inner.report(WriterError::Write {
                    kind,
                    phase: write_phase,
                    source,
                });
                // The stream may end inside a frame: it cannot be reused. The
                // message at the head is sent first, whole, on the next one.
                conn = None;
                head_failed = true;
            }
            Err(Err(Interrupt::Forced)) => break,
        }
    }

    // Forced stop (or drained): whatever is left is discarded.
    let left = pending.len() + inner.queue.discard_all();
    inner.queue.complete(pending.len());
    pending.clear();
    if left > 0 {
        inner.counters.discarded.fetch_add(left as u64, Relaxed);
        tracing::debug!(discarded = left, "writer discarded queued messages");
    }
}

type BatchResult = Result<(), Result<(WriteFailure, io::Error), Interrupt>>;

/// Writes the planned batch, waiting for room up to the write timeout.
async fn write_batch(
    inner: &WriterInner,
    stream: &UnixStream,
    batch: &mut Batch,
    pending: &VecDeque<Item>,
    phase: &mut watch::Receiver<Phase>,
) -> BatchResult {
    while !batch.is_done() {
        let result = {
            let mut iov = [IoSlice::new(&[]); IOV_PER_CALL];
            let n = batch.iovecs(pending, &mut iov);
            send_vectored(stream, &iov[..n])
        };
        match result {
            Ok(0) => {
                return Err(Ok((
                    WriteFailure::NoConsumer,
                    io::Error::new(io::ErrorKind::WriteZero, "socket accepted no bytes"),
                )));
            }
            Ok(n) => {
                let done = batch.advance(n);
                if done > 0 {
                    inner.counters.sent.fetch_add(done as u64, Relaxed);
                    inner.queue.complete(done);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let waited = tokio::select! {
                    biased;
                    changed = phase.changed() => {
                        if changed.is_err() || *phase.borrow() == Phase::Forced {
                            return Err(Err(Interrupt::Forced));
                        }
                        continue;
                    }
                    r = tokio::time::timeout(inner.write_timeout, stream.writable()) => r,
                };
                match waited {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(Ok((WriteFailure::NoConsumer, e))),
                    Err(_) => {
                        return Err(Ok((
                            WriteFailure::Backpressure,
                            io::Error::new(
                                io::ErrorKind::TimedOut,
                                format!(
                                    "socket stayed full for the write timeout ({:?})",
                                    inner.write_timeout
                                ),
                            ),
                        )));
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Ok((WriteFailure::NoConsumer, e))),
        }
    }
    Ok(())
}

/// `writev` without `SIGPIPE`: `sendmsg` with `MSG_NOSIGNAL`, so a closed
/// peer is an `EPIPE` error even in a host process that does not ignore the
/// signal (Rust binaries do; C programs embedding this library may not).
fn send_vectored(stream: &UnixStream, iov: &[IoSlice<'_>]) -> io::Result<usize> {
    use nix::sys::socket::{MsgFlags, UnixAddr, sendmsg};
    use std::os::fd::AsRawFd;
    stream.try_io(tokio::io::Interest::WRITABLE, || {
        sendmsg::<UnixAddr>(
            stream.as_raw_fd(),
            iov,
            &[],
            MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            None,
        )
        .map_err(io::Error::from)
    })
}

/// Sends length-prefixed messages to a Unix socket, reconnecting as needed
/// (Go: `udsipc.Writer`).
///
/// `write_message` never blocks: when `max_buffered_writes` messages are
/// waiting it refuses with [`WriteError::BufferFull`] and counts a drop, as
/// Go does. [`send`](Self::send) waits for room instead. A message whose
/// write fails is sent first, whole, on the next connection; no message is
/// written twice.
pub struct Writer {
    inner: Arc<WriterInner>,
    handle: Handle,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("path", &self.inner.path)
            .field("metrics", &self.metrics())
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// A builder for a Writer to `path` (Go: `NewWriter`).
    pub fn builder(path: impl AsRef<Path>) -> WriterBuilder {
        WriterBuilder::new(path.as_ref().to_owned())
    }

    /// Queues a copy of `data` without blocking (Go: `WriteMessage`). Empty
    /// messages are accepted and not sent, as in Go.
    pub fn write_message(&self, data: &[u8]) -> Result<(), WriteError<()>> {
        if data.is_empty() {
            return Ok(());
        }
        self.inner
            .queue
            .push_copy(data)
            .map_err(|r| self.refused(r, ()))
    }

    /// Queues owned bytes without copying and without blocking; a refused
    /// message is handed back inside the error.
    pub fn write_bytes(&self, data: impl Into<Bytes>) -> Result<(), WriteError<Bytes>> {
        let data = data.into();
        if data.is_empty() {
            return Ok(());
        }
        self.inner
            .queue
            .push_owned(data)
            .map_err(|(r, data)| self.refused(r, data))
    }

    fn refused<T>(&self, reason: Refused, data: T) -> WriteError<T> {
        match reason {
            Refused::Full => {
                self.inner.counters.dropped.fetch_add(1, Relaxed);
                WriteError::BufferFull(data)
            }
            Refused::Closed => WriteError::Stopped(data),
        }
    }

    /// Queues owned bytes, waiting for room instead of dropping. Fails only
    /// once the Writer is stopping.
    pub async fn send(&self, data: impl Into<Bytes>) -> Result<(), WriteError<Bytes>> {
        let data = data.into();
        if data.is_empty() {
            return Ok(());
        }
        match self.inner.queue.push_owned(data) {
            Ok(()) => Ok(()),
            Err((Refused::Closed, back)) => Err(WriteError::Stopped(back)),
            // The waiting part is boxed: this future is moved on every call,
            // and unboxed it would be several times larger. It is allocated
            // only when the producer must wait for room anyway.
            Err((Refused::Full, back)) => Box::pin(self.send_when_room(back)).await,
        }
    }

    async fn send_when_room(&self, mut data: Bytes) -> Result<(), WriteError<Bytes>> {
        loop {
            self.inner.queue.wait_room().await;
            match self.inner.queue.push_owned(data) {
                Ok(()) => return Ok(()),
                Err((Refused::Closed, back)) => return Err(WriteError::Stopped(back)),
                Err((Refused::Full, back)) => data = back,
            }
        }
    }

    /// A snapshot of the counters (Go: `GetMetrics`).
    pub fn metrics(&self) -> WriterMetrics {
        self.inner
            .counters
            .snapshot(self.inner.queue.depth() as u64)
    }

    /// The socket path (Go: `GetSocketPath`).
    pub fn socket_path(&self) -> &Path {
        &self.inner.path
    }

    /// Stops taking messages and drains the queue until `timeout`, then
    /// discards the rest (returning [`StopError::DeadlineExceeded`] with how
    /// many). While draining it keeps reconnecting if it must. Later calls
    /// return `Ok(())`. If this future is dropped before it completes, the
    /// queue is discarded at once.
    pub async fn stop(&self, timeout: Duration) -> Result<(), StopError> {
        Arc::clone(&self.inner).stop(timeout).await
    }

    /// [`stop`](Self::stop) for synchronous code: blocks until stopped.
    ///
    /// # Panics
    ///
    /// If called on a current-thread tokio runtime's thread.
    pub fn stop_blocking(&self, timeout: Duration) -> Result<(), StopError> {
        crate::runtime::block_on(&self.handle, Arc::clone(&self.inner).stop(timeout))?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Ok(stopped) = self.inner.stop_lock.try_lock() {
            if !*stopped {
                // Dropped without a stop: discard instead of draining.
                self.inner.queue.close();
                self.inner.phase.send_replace(Phase::Forced);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let seq: Vec<u64> = (0..5).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(seq, [1, 2, 4, 5, 5]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
    }

    #[test]
    fn backoff_initial_never_exceeds_the_cap() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_millis(100));
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }
}
