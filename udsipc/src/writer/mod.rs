//! The Writer: a bounded queue in front of a background task that connects,
//! writes queued messages in batches, tells what the reader has read from
//! what was only handed to the kernel, reconnects with backoff, gives up on
//! poison messages, and drains on stop (or lingers when dropped).
//!
//! This module owns the public API, the options, the state the Writer
//! shares with its task and producers (`WriterInner`) and the stop. Every
//! decision of the task is in `machine` (no IO); `driver` runs it on tokio.
//! Queue memory lives in `queue`, the batching of frames into syscalls in
//! `batch`, the unread-bytes query in `sys`.

mod arena;
mod batch;
mod buffered;
mod driver;
pub(crate) mod machine;
mod queue;
mod send;
#[cfg(feature = "futures")]
mod sink;

/// The queue's message, for tests that drive the machine from outside the
/// Writer (the Reader machine's simulated pipe).
#[cfg(test)]
pub(crate) use queue::Item;

pub use buffered::{BufferedWriter, DEFAULT_BUFFERED_CAPACITY};
pub use send::{OwnedPermit, Payload, Permit};
#[cfg(feature = "futures")]
pub use sink::{SinkError, WriterSink};

use driver::Engine;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::runtime::Handle;

use crate::error::{ConfigError, StartError, StopError, WriterError};
use crate::lifecycle::{Phase, PhaseCell, Tasks, stop_sequence};
use crate::metrics::{WriterCounters, WriterMetrics};
use crate::socket;
use queue::Queue;

/// Default queue capacity: 10,000 messages (Go: `WithMaxBufferedWrites`).
pub const DEFAULT_MAX_BUFFERED_WRITES: usize = 10_000;
/// Default queue bound in bytes: none (`usize::MAX`), as in Go; see
/// [`WriterBuilder::max_buffered_bytes`].
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = usize::MAX;
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
/// Default number of fresh connections a message may fail on before it is
/// given up: 5 (the Go reference retries forever).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Default time a dropped Writer keeps delivering its queue in the
/// background before discarding the rest: 1 s (the Go reference has no
/// drop; ZeroMQ's `ZMQ_LINGER` is the model).
pub const DEFAULT_LINGER: Duration = Duration::from_secs(1);

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
/// | [`max_attempts`](Self::max_attempts) | 5 | - (retries forever) |
/// | [`linger`](Self::linger) | 1 s | - (no drop) |
/// | [`on_error`](Self::on_error) | none | `WithWriterErrorCallback` |
/// | [`runtime`](Self::runtime) | current, else the library's own | - |
#[derive(Debug)]
#[must_use = "a builder does nothing until `start` is called"]
pub struct WriterBuilder {
    /// The path and the options the machine itself reads.
    cfg: machine::Config,
    max_buffered_writes: usize,
    max_buffered_bytes: usize,
    dial_timeout: Duration,
    write_buffer_size: u32,
    linger: Duration,
    on_error: Option<OnError>,
    runtime: Option<Handle>,
}

/// The error callback (named, not shown, by `Debug`).
struct OnError(Box<ErrorCallback>);

impl std::fmt::Debug for OnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("on_error")
    }
}

impl WriterBuilder {
    /// How many messages may wait (queued or being written) before
    /// [`Writer::try_send`] refuses with `BufferFull`. Must be above
    /// zero. Default 10,000.
    pub fn max_buffered_writes(mut self, n: usize) -> Self {
        self.max_buffered_writes = n;
        self
    }

    /// Also bounds the queue in bytes (each message's length prefix and
    /// body): a message that would take what waits past `bytes` is refused
    /// with `BufferFull` ([`send`](Writer::send) and the other waiting forms
    /// wait for room instead), except into a queue that holds nothing,
    /// which takes any one message. Messages already written and not yet
    /// confirmed read (at most the socket's buffer) are not counted, and a
    /// [`Permit`] holds a slot whatever its message's size. The queue's
    /// memory chunks also stay under half the bound. Must be above zero.
    ///
    /// Default: none (`usize::MAX`: no byte counting either), as in Go,
    /// which bounds the count only: a Writer busy with 64 KiB messages then
    /// holds up to 640 MB (10,000 of them). A bound costs a producer that
    /// waits in `send` one allocation per wait (its boxed wait), which
    /// with large messages is most messages. A small bound, with a small
    /// [`write_buffer_size`](Self::write_buffer_size), keeps a busy Writer
    /// small: both at 64 KiB, its heap peaked at 134–396 KiB here with
    /// 64 B, 1 KiB and 64 KiB messages (without a bound: 2.4, 14 and 639 MiB).
    pub fn max_buffered_bytes(mut self, bytes: usize) -> Self {
        self.max_buffered_bytes = bytes;
        self
    }

    /// How long the Writer waits on a reader that reads nothing (the socket
    /// full, or a written message unread) before it reports backpressure:
    /// once per episode, through the error callback
    /// ([`WriteFailure::Backpressure`](crate::WriteFailure::Backpressure))
    /// and the `backpressure` counter. The connection is kept and nothing
    /// counts as failed: a slow reader is not a dead one (Go instead closes
    /// the connection and retries). Must be above zero. Default 1 s.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.write_timeout = timeout;
        self
    }

    /// How long one connection attempt may take. Must be above zero. Default 1 s.
    pub fn dial_timeout(mut self, timeout: Duration) -> Self {
        self.dial_timeout = timeout;
        self
    }

    /// The first reconnect delay (Go fixes it at 1 s). Must be above zero.
    pub fn initial_backoff(mut self, delay: Duration) -> Self {
        self.cfg.initial_backoff = delay;
        self
    }

    /// The ceiling of the doubling reconnect delay. Must be above zero.
    /// Default 10 s.
    pub fn max_backoff(mut self, delay: Duration) -> Self {
        self.cfg.max_backoff = delay;
        self
    }

    /// `SO_SNDBUF` for each connection; 0 keeps the system default. On Linux
    /// this is what bounds a Unix stream socket's in-flight bytes. Default
    /// 256 KiB.
    pub fn write_buffer_size(mut self, bytes: u32) -> Self {
        self.write_buffer_size = bytes;
        self
    }

    /// How many fresh connections in a row may end before the reader has
    /// read the message at the head of the queue whole, before that message
    /// is given up for good ([`WriterError::MessageFailed`], counted in
    /// `failed`) and the queue moves on. Connections the reader refused
    /// without reading a byte do not count. Must be above zero. Default 5.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.cfg.max_attempts = attempts;
        self
    }

    /// How long a Writer dropped without [`Writer::stop`] keeps delivering
    /// what it holds, in the background, before it discards the rest
    /// (counted in `discarded`, logged at warn level), like ZeroMQ's
    /// `ZMQ_LINGER`. Zero discards at once. The background drain needs the
    /// runtime to keep running: a process that exits right after the drop
    /// loses it; call `stop` to wait. Default 1 s.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Called with every error the Writer meets while running.
    pub fn on_error(mut self, callback: impl Fn(&WriterError) + Send + Sync + 'static) -> Self {
        self.on_error = Some(OnError(Box::new(callback)));
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
        socket::SocketAddress::parse(&self.cfg.path)?;
        for (option, zero) in [
            ("write_timeout", self.cfg.write_timeout.is_zero()),
            ("dial_timeout", self.dial_timeout.is_zero()),
            ("initial_backoff", self.cfg.initial_backoff.is_zero()),
            ("max_backoff", self.cfg.max_backoff.is_zero()),
            ("max_buffered_writes", self.max_buffered_writes == 0),
            ("max_buffered_bytes", self.max_buffered_bytes == 0),
            ("max_attempts", self.cfg.max_attempts == 0),
        ] {
            if zero {
                return Err(ConfigError::Zero { option }.into());
            }
        }
        let handle = crate::runtime::handle(self.runtime.as_ref()).map_err(StartError::Runtime)?;
        let now = tokio::time::Instant::now().into_std();
        let inner = Arc::new(WriterInner {
            engine: Mutex::new(Engine {
                m: machine::Machine::new(self.cfg.clone(), now),
                conn: None,
            }),
            queue: Queue::new(self.max_buffered_writes, self.max_buffered_bytes),
            opts: self,
            counters: WriterCounters::default(),
            phase: PhaseCell::new(),
            deadline: Mutex::new(None),
            forced: AtomicBool::new(false),
            tasks: Arc::default(),
            stop_lock: tokio::sync::Mutex::new(false),
        });
        inner
            .tasks
            .spawn(&handle, "writer", driver::run(Arc::clone(&inner)));
        Ok(Writer { inner, handle })
    }
}

/// Sends length-prefixed messages to a Unix socket, reconnecting as needed
/// (Go: `udsipc.Writer`).
///
/// # Sending
///
/// One table, on tokio `mpsc::Sender`'s model. Every way takes any
/// [`Payload`](crate::Payload): borrowed bytes (`&[u8]`, `&Vec<u8>`, `&str`,
/// …) are copied once, owned ones (`Bytes`, `Vec<u8>`, `String`,
/// `Box<[u8]>`) are queued without a copy; a refusal hands an owned message
/// back (a borrowed one is still the caller's). Empty messages are accepted
/// and not sent, as in Go.
///
/// | when the queue is full… | async | blocking (sync code) | tokio | Go |
/// |---|---|---|---|---|
/// | refuse at once (`BufferFull`, counted in `dropped`) | [`try_send`](Self::try_send) | the same | `try_send` | `WriteMessage` |
/// | wait for room | [`send`](Self::send) | [`send_blocking`](Self::send_blocking) | `send`, `blocking_send` | - |
/// | wait at most a timeout (`Timeout`, not a drop) | [`send_timeout`](Self::send_timeout) | [`send_timeout_blocking`](Self::send_timeout_blocking) | `send_timeout` | - |
/// | wait for room without the message in hand (cancel safe) | [`reserve`](Self::reserve) → [`Permit`](crate::Permit), [`reserve_owned`](Self::reserve_owned) → [`OwnedPermit`](crate::OwnedPermit) | - | `reserve`, `reserve_owned` | - |
/// | hold a slot only if there is room now | [`try_reserve`](Self::try_reserve) | the same | `try_reserve` | - |
/// | one producer of many small messages (no lock per message) | [`buffered`](Self::buffered) → [`BufferedWriter`](crate::BufferedWriter) `send`/`flush` | `send_blocking`/`flush_blocking` | - | - |
/// | a `futures::Sink<Bytes>` (feature `futures`) | `Writer::into_sink` | - | `PollSender` | - |
///
/// Every way fails with [`WriteError::Stopped`](crate::WriteError::Stopped) once the Writer is stopping.
///
/// Delivery: a slow or paused reader is backpressure (the socket fills, then
/// the queue, then producers wait or see `BufferFull`), never a reason to
/// reconnect. The Writer tells messages the reader has read (`delivered`)
/// from those only handed to the kernel (`sent`), using the socket's unread
/// count on Linux. A message the reader provably did not read whole (its
/// connection died before) is sent again first on the next connection; one
/// it may have read is never sent twice. A message not read whole on
/// [`max_attempts`](crate::WriterBuilder::max_attempts) fresh connections in a row
/// is given up (`failed`). See [`WriterMetrics`] for the counters.
///
/// Dropping a Writer without [`stop`](Self::stop) keeps delivering in the
/// background for its [`linger`](crate::WriterBuilder::linger) time, then discards
/// the rest, counted and logged.
pub struct Writer {
    inner: Arc<WriterInner>,
    handle: Handle,
}

type ErrorCallback = dyn Fn(&WriterError) + Send + Sync;

/// The Writer's shared state.
///
/// # Locks
///
/// Order: `engine`, then the queue's own lock (the task takes messages out
/// of the queue while it holds the engine); never the other way round: a
/// producer pushes (queue lock, released) and only then tries the engine.
/// `deadline` is taken last and briefly (the task reads it under the
/// engine lock); nothing is locked under it.
///
/// The engine lock is held across the `sendmsg` and the `SIOCOUTQ` sample
/// it drives: a write and its accounting in the machine are one step, or
/// a producer writing by itself could interleave bytes with the task.
/// The task also holds it while it makes or drops the connection's
/// registration for room (a `dup` and a call into the IO driver, as the
/// machine's `arm` says), which changes the connection the lock guards.
/// Nobody ever waits for it but the task: producers only `try_lock` it
/// (and leave the message to the task when it is busy).
struct WriterInner {
    queue: Queue,
    /// The machine and the connection: the task's, lent to a producer that
    /// finds it idle (see `driver::write_now`). See the lock order above.
    engine: Mutex<Engine>,
    counters: WriterCounters,
    phase: PhaseCell,
    /// When a drain must end (set before the phase becomes `Draining`).
    /// Taken briefly, last (the task reads it under the engine lock).
    deadline: Mutex<Option<std::time::Instant>>,
    /// The task ended by discarding (its deadline passed).
    forced: AtomicBool,
    tasks: Arc<Tasks>,
    /// The options it was started with.
    opts: WriterBuilder,
    /// Whether a stop (or a drop's linger) has begun. An async lock held
    /// for a whole stop, across its waits (it makes concurrent stops one);
    /// the task never takes it, so holding it blocks nothing the stop
    /// waits for.
    stop_lock: tokio::sync::Mutex<bool>,
}

impl WriterInner {
    fn report(&self, error: WriterError) {
        tracing::debug!(%error, context = error.context(), "writer error");
        if let Some(OnError(cb)) = &self.opts.on_error {
            crate::runtime::call_guarded("writer on_error", || cb(&error));
        }
    }

    /// Closes the queue and starts the drain, to end by `timeout` from now.
    fn begin_stop(&self, timeout: Duration) {
        self.queue.close();
        let deadline = machine::later(tokio::time::Instant::now().into_std(), timeout);
        *self.deadline.lock().unwrap_or_else(|p| p.into_inner()) = Some(deadline);
        self.phase.advance(Phase::Draining);
    }

    async fn stop(self: Arc<Self>, timeout: Duration) -> Result<(), StopError> {
        let c = &self.counters;
        let (discarded_before, unconfirmed_before) =
            (c.queued_discards(), c.unconfirmed.load(Relaxed));
        let stopped = stop_sequence(
            &self.stop_lock,
            &self.phase,
            &self.tasks,
            timeout,
            || self.begin_stop(timeout),
            || (),
            || {},
        )
        .await;
        let Some(stopped) = stopped else {
            return Ok(());
        };
        if stopped.stuck > 0 {
            // The task is stuck (in the error callback): give up on it and
            // discard what the queue still holds.
            let n = self.discard_queue();
            tracing::warn!(
                discarded = n,
                "udsipc writer task did not stop within the grace period; abandoned"
            );
        }
        if let Some(panicked) = stopped.panicked {
            return Err(panicked);
        }
        let discarded = c.queued_discards() - discarded_before;
        let unconfirmed = c.unconfirmed.load(Relaxed) - unconfirmed_before;
        // Forced by the task itself (its deadline passed) or abandoned.
        if self.forced.load(Relaxed) || stopped.stuck > 0 || discarded > 0 {
            return Err(StopError::DeadlineExceeded {
                discarded,
                unconfirmed,
            });
        }
        Ok(())
    }

    /// Closes the queue and discards what it holds, from outside the task
    /// (gone or stuck): counted in `discarded`; returns how many.
    fn discard_queue(&self) -> u64 {
        self.queue.close();
        let n = self.queue.discard_all() as u64;
        self.counters.discarded_outside.fetch_add(n, Relaxed);
        n
    }

    fn metrics(&self) -> WriterMetrics {
        self.counters.snapshot(self.queue.depth() as u64)
    }
}

/// What a Writer, its metrics handle and its permits show of it.
impl std::fmt::Debug for WriterInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("path", &self.opts.cfg.path)
            .field("metrics", &self.metrics())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl Writer {
    /// A builder for a Writer to `path` (Go: `NewWriter`).
    pub fn builder(path: impl AsRef<Path>) -> WriterBuilder {
        WriterBuilder {
            cfg: machine::Config {
                sampling: (machine::SAMPLE_MIN, machine::SAMPLE_MAX),
                path: path.as_ref().to_owned(),
                write_timeout: DEFAULT_WRITE_TIMEOUT,
                initial_backoff: DEFAULT_INITIAL_BACKOFF,
                max_backoff: DEFAULT_MAX_BACKOFF,
                max_attempts: DEFAULT_MAX_ATTEMPTS,
            },
            max_buffered_writes: DEFAULT_MAX_BUFFERED_WRITES,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
            dial_timeout: DEFAULT_DIAL_TIMEOUT,
            write_buffer_size: DEFAULT_WRITE_BUFFER_SIZE,
            linger: DEFAULT_LINGER,
            on_error: None,
            runtime: None,
        }
    }

    /// A snapshot of the counters (Go: `GetMetrics`).
    pub fn metrics(&self) -> WriterMetrics {
        self.inner.metrics()
    }

    /// A handle that reads this Writer's counters, also after the Writer is
    /// dropped (e.g. to see what its linger delivered or discarded).
    pub fn metrics_handle(&self) -> WriterMetricsHandle {
        WriterMetricsHandle(Arc::clone(&self.inner))
    }

    /// The socket path (Go: `GetSocketPath`).
    pub fn socket_path(&self) -> &Path {
        &self.inner.opts.cfg.path
    }

    /// Stops taking messages, writes what is queued and waits until the
    /// reader has read it, until `timeout`; then discards what was not
    /// written and returns [`StopError::DeadlineExceeded`] with how many
    /// messages were discarded and how many were written but not confirmed
    /// read. While draining it keeps reconnecting if it must. Returns within
    /// `timeout` plus a short fixed grace whatever the error callback does.
    /// Later calls return `Ok(())`. A panicked writer task is reported as
    /// [`StopError::TaskPanicked`].
    ///
    /// Cancel safety: if this future is dropped before it completes, the
    /// queue is discarded at once.
    pub async fn stop(&self, timeout: Duration) -> Result<(), StopError> {
        Arc::clone(&self.inner).stop(timeout).await
    }

    /// [`stop`](Self::stop) for synchronous code: blocks until stopped.
    ///
    /// Never panics: on a current-thread tokio runtime's own thread it
    /// returns [`StopError::WouldDeadlock`] without stopping (use
    /// `stop(..).await` there); if the Writer's runtime was shut down, it
    /// returns [`StopError::RuntimeGone`]. Inside a multi-thread runtime it
    /// works (the thread is handed over to blocking for the wait).
    pub fn stop_blocking(&self, timeout: Duration) -> Result<(), StopError> {
        let stopped = crate::runtime::block_on(&self.handle, Arc::clone(&self.inner).stop(timeout));
        if let Err(StopError::RuntimeGone) = stopped {
            // The runtime may have dropped the task before it ever ran
            // (so its own guard never counted the queue): count here
            // whatever is still queued, and take no more.
            let n = self.inner.discard_queue();
            if n > 0 {
                tracing::warn!(
                    discarded = n,
                    "udsipc writer's runtime is gone; queued messages discarded"
                );
            }
        }
        // The stop's own result, or why it could not run.
        stopped?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Ok(mut stopped) = self.inner.stop_lock.try_lock() {
            if !*stopped {
                // Dropped without a stop: linger, then discard (the task
                // forces itself at the deadline, counts and logs).
                *stopped = true;
                self.inner.begin_stop(self.inner.opts.linger);
            }
        }
    }
}

/// Reads a Writer's counters; stays valid after the Writer is dropped
/// (see [`Writer::metrics_handle`]).
#[derive(Clone, Debug)]
pub struct WriterMetricsHandle(Arc<WriterInner>);

impl WriterMetricsHandle {
    /// A snapshot of the counters.
    pub fn get(&self) -> WriterMetrics {
        self.0.metrics()
    }

    /// Whether the Writer's task has ended (drained, discarded, or gone
    /// with its runtime).
    pub fn is_finished(&self) -> bool {
        self.0.tasks.live() == 0
    }
}

#[cfg(test)]
pub(crate) mod tests;
