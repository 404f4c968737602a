//! The Reader: binds (or adopts systemd's socket), accepts connections, runs
//! one task per connection, and stops gracefully.
//!
//! This module owns the listener, the accept loop and the stop protocol;
//! each connection's decisions live in `machine` (sans-IO, driven by
//! `connection`), the wire rules in `frame`.

mod accept;
mod channel;
mod connection;
mod delivery;
mod info;
mod inner;
mod machine;
mod order;

pub use crate::policy::PeerCredentials;
pub use channel::Incoming;
pub use info::{ConnectionInfo, Message};

use std::future::Future;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::runtime::Handle;

use crate::error::{ConfigError, HandlerError, ReaderError, StartError, StopError};
use crate::lifecycle::{Phase, PhaseCell};
use crate::metrics::{ReaderCounters, ReaderMetrics};
use crate::policy::Policy;
use crate::socket;
use crate::systemd::{self, Notifier, SystemdEnv};
use channel::Channel;
use connection::Deliver;
use delivery::{AsyncDelivery, ChannelDelivery, SyncDelivery};
use inner::{ErrorCallback, ReaderInner};
use order::OrderBook;

/// Default maximum message size: 10 MiB (Go: `WithMaxMessageSize`).
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 10 << 20;
/// Default inactivity timeout: 10 s (Go: `WithInactivityTimeout`).
pub const DEFAULT_INACTIVITY_TIMEOUT: Duration = Duration::from_secs(10);
/// Default consecutive accept errors before giving up: 10 (Go: `WithMaxAcceptErrors`).
pub const DEFAULT_MAX_ACCEPT_ERRORS: u32 = 10;
/// Default capacity of [`ReaderBuilder::incoming`]'s stream: 1,024 messages.
pub const DEFAULT_INCOMING_CAPACITY: usize = 1024;
/// Default bound on the body bytes [`ReaderBuilder::incoming`]'s stream
/// holds: 1 MiB.
pub const DEFAULT_INCOMING_CAPACITY_BYTES: usize = 1 << 20;
/// Default `SO_RCVBUF`: 256 KiB (Go: `WithReadBufferSize`).
pub const DEFAULT_READ_BUFFER_SIZE: u32 = 256 << 10;

/// Locks `mutex`, ignoring poisoning: each critical section over the
/// Reader's shared state (a push, a swap, a flag, a count) leaves it whole.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Configures and starts a [`Reader`].
///
/// | option | default | Go |
/// |---|---|---|
/// | [`max_message_size`](Self::max_message_size) | 10 MiB | `WithMaxMessageSize` |
/// | [`inactivity_timeout`](Self::inactivity_timeout) | 10 s | `WithInactivityTimeout` |
/// | [`max_accept_errors`](Self::max_accept_errors) | 10 | `WithMaxAcceptErrors` |
/// | [`read_buffer_size`](Self::read_buffer_size) | 256 KiB | `WithReadBufferSize` |
/// | [`on_error`](Self::on_error) | none | `WithReaderErrorCallback` |
/// | [`systemd`](Self::systemd) | on | always on |
/// | [`systemd_fd_name`](Self::systemd_fd_name) | none (exactly one fd) | - |
/// | [`socket_mode`](Self::socket_mode) | umask | - |
/// | [`allow_uid`](Self::allow_uid) / [`allow_gid`](Self::allow_gid) | anyone | - |
/// | [`max_connections`](Self::max_connections) | unlimited | - |
/// | [`incoming_capacity`](Self::incoming_capacity) | 1,024 messages | - |
/// | [`incoming_capacity_bytes`](Self::incoming_capacity_bytes) | 1 MiB | - |
/// | [`handler_may_block`](Self::handler_may_block) | true | - |
/// | [`runtime`](Self::runtime) | current, else the library's own | - |
#[must_use = "a builder does nothing until `start` is called"]
pub struct ReaderBuilder {
    path: PathBuf,
    max_message_size: u64,
    inactivity_timeout: Duration,
    max_accept_errors: u32,
    read_buffer_size: u32,
    on_error: Option<Arc<ErrorCallback>>,
    systemd: bool,
    systemd_fd_name: Option<String>,
    socket_mode: Option<u32>,
    policy: Policy,
    incoming_capacity: usize,
    incoming_capacity_bytes: usize,
    handler_may_block: bool,
    runtime: Option<Handle>,
}

impl std::fmt::Debug for ReaderBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReaderBuilder")
            .field("path", &self.path)
            .field("max_message_size", &self.max_message_size)
            .field("inactivity_timeout", &self.inactivity_timeout)
            .field("max_accept_errors", &self.max_accept_errors)
            .field("read_buffer_size", &self.read_buffer_size)
            .field("systemd", &self.systemd)
            .field("socket_mode", &self.socket_mode)
            .finish_non_exhaustive()
    }
}

impl ReaderBuilder {
    /// Largest accepted message; a longer declared length closes the
    /// connection before any of it is buffered. Zero rejects every non-empty
    /// message. Default 10 MiB.
    pub fn max_message_size(mut self, bytes: u64) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// How long a connection may take to deliver one whole message (or to
    /// start the next) before it is closed. Must be above zero. Default 10 s.
    /// `Duration::MAX` (or any duration too large for the clock) means never.
    pub fn inactivity_timeout(mut self, timeout: Duration) -> Self {
        self.inactivity_timeout = timeout;
        self
    }

    /// How many `accept` failures in a row are tolerated (with a 100 ms pause
    /// after each) before the Reader stops accepting. Default 10.
    ///
    /// Only failures of the listening socket itself count (EBADF, EINVAL,
    /// ENOTSOCK, EPERM, ...). Running out of descriptors or memory (EMFILE,
    /// ENFILE, ENOBUFS, ENOMEM) is temporary and never counts, unlike in Go,
    /// where a local user holding enough connections stops the listener for
    /// good: the Reader sheds waiting connections with a spare descriptor
    /// (counted in `rejected_connections`) and otherwise pauses, 5 ms
    /// doubling to 1 s. ECONNABORTED and EINTR are retried uncounted.
    pub fn max_accept_errors(mut self, n: u32) -> Self {
        self.max_accept_errors = n;
        self
    }

    /// `SO_RCVBUF` for the listener and each connection; 0 keeps the system
    /// default. Linux ignores it for Unix stream sockets. Default 256 KiB.
    pub fn read_buffer_size(mut self, bytes: u32) -> Self {
        self.read_buffer_size = bytes;
        self
    }

    /// Called with every error the Reader meets while running.
    pub fn on_error(mut self, callback: impl Fn(&ReaderError) + Send + Sync + 'static) -> Self {
        self.on_error = Some(Arc::new(callback));
        self
    }

    /// Whether to honour the systemd environment (`LISTEN_FDS`,
    /// `NOTIFY_SOCKET`, `RUNTIME_DIRECTORY`). Default on, as in Go.
    ///
    /// The environment is only read, never changed: passed fds are made
    /// close-on-exec, and a child that inherits the variables ignores them
    /// because `LISTEN_PID` is not its pid.
    pub fn systemd(mut self, enabled: bool) -> Self {
        self.systemd = enabled;
        self
    }

    /// With several activated sockets, use the one with this name in
    /// `LISTEN_FDNAMES` (systemd's `FileDescriptorName=`). Several Readers
    /// in one process can each take their own socket this way.
    pub fn systemd_fd_name(mut self, name: impl Into<String>) -> Self {
        self.systemd_fd_name = Some(name.into());
        self
    }

    /// File mode of the socket this Reader creates (e.g. `0o660`), applied
    /// before it starts listening, inside a private directory where no
    /// other user can swap the file for a link: it only ever reaches the
    /// socket this Reader bound.
    pub fn socket_mode(mut self, mode: u32) -> Self {
        self.socket_mode = Some(mode);
        self
    }

    /// Admits peers running as `uid` (repeatable). With any allow-list set,
    /// a peer is admitted when its UID is on the UID list or its GID on the
    /// GID list; its credentials come from `SO_PEERCRED` right after
    /// `accept`, and a refused connection is closed before any byte is read,
    /// counted in `rejected_connections` and reported to the error callback.
    pub fn allow_uid(mut self, uid: u32) -> Self {
        self.policy.allow_uids.push(uid);
        self
    }

    /// Admits peers whose primary group is `gid` (repeatable); see
    /// [`allow_uid`](Self::allow_uid).
    pub fn allow_gid(mut self, gid: u32) -> Self {
        self.policy.allow_gids.push(gid);
        self
    }

    /// Caps concurrent connections: one over the cap is closed at once,
    /// counted in `rejected_connections` and reported; the others are not
    /// affected. Must be above zero. Default: no cap, as in Go.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.policy.max_connections = Some(n);
        self
    }

    /// The tokio runtime to run on. Default: the current one, or, outside
    /// any runtime, a small runtime owned by this library.
    pub fn runtime(mut self, handle: Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// Whether the synchronous handler may block (default `true`).
    ///
    /// By default handler calls never run on a tokio worker. A connection
    /// with messages takes one of a few dedicated slots (as many as the
    /// machine has cores, at least 2) if one is free: it leaves the IO
    /// driver and is served on a thread of tokio's blocking pool, which
    /// calls the handler, reads, and waits on the socket itself until the
    /// connection has been silent for 2 ms; then the connection goes back
    /// to its task. Without a free slot, each burst of calls (every frame of
    /// up to 64 reads) runs inside `block_in_place` (or on the blocking pool
    /// on a current-thread runtime): one thread hand-off per burst. Either
    /// way a handler that blocks holds back only its own connection. With
    /// `false` the handler is called inline on the tokio worker, without a
    /// dedicated thread or hand-off; a call that does block then stalls
    /// every connection on the runtime (and the stop's deadline). Only for
    /// handlers that never block; the default is faster for a busy stream.
    pub fn handler_may_block(mut self, may_block: bool) -> Self {
        self.handler_may_block = may_block;
        self
    }

    /// How many messages [`incoming`](Self::incoming) holds before
    /// connections stop reading (backpressure). Must be above zero.
    /// Default 1,024. See
    /// [`incoming_capacity_bytes`](Self::incoming_capacity_bytes) for the
    /// bound in bytes and the crash window the two imply.
    pub fn incoming_capacity(mut self, messages: usize) -> Self {
        self.incoming_capacity = messages;
        self
    }

    /// How many body bytes [`incoming`](Self::incoming) holds before
    /// connections stop reading (backpressure), beside the
    /// [`incoming_capacity`](Self::incoming_capacity) in messages: whichever
    /// bound is reached first holds the connections back. A message larger
    /// than this bound is still taken, alone, once the stream holds nothing
    /// else. Must be above zero. Default 1 MiB.
    ///
    /// # Read-ahead and the crash window
    ///
    /// A Writer counts a message `delivered` once the Reader has read it
    /// off the socket, before the consumer has it. What a Reader has read
    /// and not yet handed out is, at most:
    ///
    /// - the stream's queue: `incoming_capacity` messages and
    ///   `incoming_capacity_bytes` body bytes (or one larger message);
    /// - per open connection, its receive buffer: at most
    ///   [`STREAM_BUFFER`](crate::frame::STREAM_BUFFER) (256 KiB), or one
    ///   message and the start of the next when a message is larger. A
    ///   connection reads nothing more while what it read waits for room.
    ///
    /// That sum, plus whatever the consumer itself holds (taken from the
    /// stream, not yet forwarded), is what a forwarder killed with
    /// `SIGKILL` can lose that its Writers counted `delivered`: with the
    /// defaults and one connection, at most 1,024 messages and 1 MiB + 256
    /// KiB. A graceful stop loses none of it (see [`Reader::stop`]).
    pub fn incoming_capacity_bytes(mut self, bytes: usize) -> Self {
        self.incoming_capacity_bytes = bytes;
        self
    }

    /// Binds the socket (or adopts the systemd-activated one), starts
    /// accepting, notifies systemd `READY=1`, and calls `handler` with each
    /// message body.
    ///
    /// For a path, a start holds an advisory lock on `<path>.lock` while it
    /// changes the path (removed after), so of two udsipc Readers started
    /// on one path together the second is refused with
    /// [`StartError::AddrInUse`] however the starts interleave, while a
    /// successor starts once its predecessor's socket file is gone
    /// (blue/green); the socket appears at the path already listening.
    ///
    /// The handler gets a slice of the connection's buffer, valid only
    /// during the call (no copy). It runs where blocking is allowed: on a
    /// thread of tokio's blocking pool that serves a busy connection, or
    /// inside `tokio::task::block_in_place` (see
    /// [`handler_may_block`](Self::handler_may_block)). A handler that blocks
    /// holds back only its own connection (which then reads nothing more:
    /// backpressure), never the others nor a stop's deadline. Returning an
    /// error counts it and keeps the connection; a panic is caught and
    /// counted the same way.
    pub fn start<H>(self, handler: H) -> Result<Reader, StartError>
    where
        H: Fn(&[u8]) -> Result<(), HandlerError> + Send + Sync + 'static,
    {
        self.start_with_info(move |body, _| handler(body))
    }

    /// [`start`](Self::start), with a handler that also learns which
    /// connection each message came from (its number and the peer's
    /// credentials): to keep per-sender state, or to check ordering per
    /// connection.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), udsipc::StartError> {
    /// let reader = udsipc::Reader::builder("/tmp/app.sock").start_with_info(|msg, conn| {
    ///     println!("{} bytes from connection {} ({:?})", msg.len(), conn.id, conn.peer);
    ///     Ok(())
    /// })?;
    /// # Ok(()) }
    /// ```
    pub fn start_with_info<H>(self, handler: H) -> Result<Reader, StartError>
    where
        H: Fn(&[u8], &ConnectionInfo) -> Result<(), HandlerError> + Send + Sync + 'static,
    {
        self.launch(SyncDelivery {
            handler: Arc::new(handler),
            dedicated: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get().max(2)),
            )),
        })
    }

    /// Starts like [`start`](Self::start), with an async handler on owned
    /// messages: for consumers whose work is asynchronous (forwarding to a
    /// network, a bounded channel, a database).
    ///
    /// Each connection hands over one message at a time and reads nothing
    /// more while the handler's future is pending, so a slow consumer fills
    /// the socket, then the Writer's queue, then its producers see
    /// `BufferFull` or wait in `send`: flow control end to end, no loss.
    /// Connections run concurrently. The body shares the connection's
    /// buffer (no copy per message). An `Err` or a panic is counted as a
    /// handler error and keeps the connection; a forced stop drops pending
    /// futures.
    ///
    /// ```no_run
    /// # async fn forward(_: bytes::Bytes) -> std::io::Result<()> { Ok(()) }
    /// # async fn run() -> Result<(), udsipc::StartError> {
    /// let reader = udsipc::Reader::builder("/run/app/app.sock").start_async(|msg| async move {
    ///     forward(msg.body).await?; // may take its time: backpressure
    ///     Ok(())
    /// })?;
    /// # Ok(()) }
    /// ```
    pub fn start_async<H, Fut>(self, handler: H) -> Result<Reader, StartError>
    where
        H: Fn(Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        self.launch(AsyncDelivery { handler })
    }

    /// Starts without a handler: messages come out of the returned
    /// [`Incoming`] stream, bounded by
    /// [`incoming_capacity`](Self::incoming_capacity) messages and
    /// [`incoming_capacity_bytes`](Self::incoming_capacity_bytes). While the
    /// stream is not read, connections stop reading (backpressure). The
    /// stream ends (`None`) once the Reader has stopped and every connection
    /// has handed over what it had.
    ///
    /// # Shutdown that loses nothing
    ///
    /// Stop the Reader from another task (a signal handler) and keep
    /// draining the stream until `None`: the Reader stops taking new bytes,
    /// hands over everything it already read (and what its writers had
    /// already sent into the kernel), then ends the stream. Every message
    /// the Reader read (its `received`; every message a Writer counted
    /// `delivered`) comes out exactly once. The `forwarder` example does
    /// exactly this.
    ///
    /// ```no_run
    /// # async fn forward(_: udsipc::bytes::Bytes) {}
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::{sync::Arc, time::Duration};
    /// use tokio::signal::unix::{SignalKind, signal};
    ///
    /// let (reader, mut incoming) = udsipc::Reader::builder("/run/app/app.sock").incoming()?;
    /// let reader = Arc::new(reader);
    /// let mut sigterm = signal(SignalKind::terminate())?;
    /// let stopper = tokio::spawn({
    ///     let reader = Arc::clone(&reader);
    ///     async move {
    ///         sigterm.recv().await;
    ///         reader.stop(Duration::from_secs(10)).await
    ///     }
    /// });
    /// while let Some(msg) = incoming.recv().await {
    ///     forward(msg.body).await; // until None: nothing read is lost
    /// }
    /// stopper.await??;
    /// # Ok(()) }
    /// ```
    ///
    /// Leaving the loop first and then calling `stop` still loses nothing
    /// the Reader read (drain the stream until `None` after it), but nobody
    /// makes room meanwhile: the stop waits for its deadline, leaves what
    /// is still in the kernel unread (a Writer counts it `unconfirmed`, not
    /// `delivered`) and returns [`StopError::ConnectionsCut`].
    pub fn incoming(self) -> Result<(Reader, Incoming), StartError> {
        let zero = [
            (self.incoming_capacity == 0, "incoming_capacity"),
            (self.incoming_capacity_bytes == 0, "incoming_capacity_bytes"),
        ];
        if let Some((_, option)) = zero.into_iter().find(|(zero, _)| *zero) {
            return Err(ConfigError::Zero { option }.into());
        }
        let (chan, incoming) = Channel::new(self.incoming_capacity, self.incoming_capacity_bytes);
        Ok((self.launch(ChannelDelivery { chan })?, incoming))
    }

    /// Validates, binds (or adopts systemd's socket), builds the shared
    /// state, starts accepting with `delivery` and tells systemd we are
    /// ready.
    fn launch<D: Deliver>(self, delivery: D) -> Result<Reader, StartError> {
        socket::SocketAddress::parse(&self.path)?;
        let zero = [
            (self.inactivity_timeout.is_zero(), "inactivity_timeout"),
            (self.policy.max_connections == Some(0), "max_connections"),
        ];
        if let Some((_, option)) = zero.into_iter().find(|(zero, _)| *zero) {
            return Err(ConfigError::Zero { option }.into());
        }
        let handle = crate::runtime::handle(self.runtime.as_ref()).map_err(StartError::Runtime)?;
        let _entered = handle.enter();

        let env = if self.systemd {
            SystemdEnv::from_env()
        } else {
            SystemdEnv::default()
        };
        let path = env.resolve_socket_path(&self.path);
        socket::SocketAddress::parse(&path)?;
        // Before anything is bound, so a bad NOTIFY_SOCKET leaves no file.
        let notifier = Notifier::from_env(&env)?;

        // None without systemd: its default environment passes no fds.
        let activated = systemd::take_activation_listener(&env, self.systemd_fd_name.as_deref())?;
        let (std_listener, owned_file) = match activated {
            Some(listener) => (listener, None),
            None => {
                let bound = crate::bind::listen_on(&path, self.socket_mode)?;
                (bound.listener, bound.file)
            }
        };
        if self.read_buffer_size > 0 {
            let _ = socket::set_recv_buffer(&std_listener.as_fd(), self.read_buffer_size);
        }
        let listener = UnixListener::from_std(std_listener).map_err(|source| {
            if let Some(file) = &owned_file {
                let _ = file.remove();
            }
            StartError::Bind {
                path: path.clone(),
                source,
            }
        })?;

        let inner = Arc::new(ReaderInner {
            options: self,
            counters: ReaderCounters::default(),
            phase: PhaseCell::new(),
            tasks: Arc::default(),
            order: Arc::new(OrderBook::default()),
            path,
            owned_file,
            notifier,
            stop_lock: tokio::sync::Mutex::new(false),
        });
        // The spare is taken now, while descriptors are surely available.
        let spare = accept::Spare::new(&listener);
        let delivery = Arc::new(delivery);
        let accept = accept::accept_loop(Arc::clone(&inner), listener, spare, delivery);
        inner.tasks.spawn(&handle, "accept", accept);
        if let Some(n) = &inner.notifier {
            if let Err(e) = n.notify("READY=1") {
                tracing::warn!(error = %e, "failed to send READY=1 to systemd");
            }
        }
        tracing::debug!(path = %inner.path.display(), socket_activated = inner.owned_file.is_none(), "reader started");
        Ok(Reader { inner, handle })
    }
}

/// Receives length-prefixed messages on a Unix socket (Go: `udsipc.Reader`).
///
/// ```
/// use std::time::Duration;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("app.sock");
/// let reader = udsipc::Reader::builder(&path)
///     .max_message_size(1 << 20)
///     .start(|msg: &[u8]| {
///         println!("{} bytes", msg.len());
///         Ok(())
///     })?;
/// let writer = udsipc::Writer::builder(&path).start()?;
/// writer.try_send(b"hello")?;
/// writer.stop_blocking(Duration::from_secs(5))?;
/// reader.stop_blocking(Duration::from_secs(5))?;
/// assert_eq!(writer.metrics().sent, 1);
/// # Ok(())
/// # }
/// ```
pub struct Reader {
    inner: Arc<ReaderInner>,
    handle: Handle,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("path", &self.inner.path)
            .field("metrics", &self.metrics())
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// A builder for a Reader on `path` (Go: `NewReader`'s fallback path;
    /// under systemd with `RUNTIME_DIRECTORY` the file name moves there).
    pub fn builder(path: impl AsRef<Path>) -> ReaderBuilder {
        ReaderBuilder {
            path: path.as_ref().to_owned(),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            inactivity_timeout: DEFAULT_INACTIVITY_TIMEOUT,
            max_accept_errors: DEFAULT_MAX_ACCEPT_ERRORS,
            read_buffer_size: DEFAULT_READ_BUFFER_SIZE,
            on_error: None,
            systemd: true,
            systemd_fd_name: None,
            socket_mode: None,
            policy: Policy::default(),
            incoming_capacity: DEFAULT_INCOMING_CAPACITY,
            incoming_capacity_bytes: DEFAULT_INCOMING_CAPACITY_BYTES,
            handler_may_block: true,
            runtime: None,
        }
    }

    /// A snapshot of the counters (Go: `GetMetrics`).
    pub fn metrics(&self) -> ReaderMetrics {
        self.inner.counters.snapshot()
    }

    /// The socket path in use (after systemd resolution).
    pub fn socket_path(&self) -> &Path {
        &self.inner.path
    }

    /// Whether the listener came from systemd socket activation.
    pub fn is_socket_activated(&self) -> bool {
        // A Reader removes the socket file it made, never systemd's.
        self.inner.owned_file.is_none()
    }

    /// Sends `STATUS=<status>` to systemd; does nothing without `NOTIFY_SOCKET`.
    pub fn notify_status(&self, status: &str) -> std::io::Result<()> {
        let notifier = self.inner.notifier.as_ref();
        notifier.map_or(Ok(()), |n| n.notify(&format!("STATUS={status}")))
    }

    /// Stops gracefully: notifies systemd `STOPPING=1` and closes the
    /// listener (after accepting what waits in its backlog). Each connection
    /// then shuts down its reading side: everything its writer had already
    /// sent, including what waits in the kernel buffer, is delivered, and
    /// anything sent later is refused with `EPIPE`, which a udsipc or Go
    /// Writer retries on its next connection. A frame cut in the middle that
    /// way is reported as truncated. After `timeout`, connections still open
    /// (a slow handler) are cut: [`StopError::ConnectionsCut`]. Removes the
    /// socket file this Reader created. Later calls return `Ok(())`.
    ///
    /// A handler that is running when the deadline passes finishes its call.
    ///
    /// What a stop hands over, by way of delivery:
    ///
    /// - [`incoming`](ReaderBuilder::incoming): every message read, to the
    ///   stream, which yields them all before it ends (`None`), also when
    ///   the deadline cut the connections (they are queued past the
    ///   stream's bounds then). Keep draining the stream while the stop
    ///   runs (stop from another task) and nothing is cut at all.
    /// - [`start_async`](ReaderBuilder::start_async) and
    ///   [`start`](ReaderBuilder::start): every message read is handed to the
    ///   handler before `Ok(())` is returned; when the deadline cuts the
    ///   connections, [`StopError::ConnectionsCut`]'s `unhandled` (and the
    ///   `unhandled` counter) says how many messages were read and not
    ///   handled (an async call dropped unfinished, or left buffered).
    ///
    /// Cancel safety: if this future is dropped before it completes, the
    /// stop turns into a hard one at once.
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

impl Drop for Reader {
    fn drop(&mut self) {
        // Not stopped gracefully: cut everything and remove our socket file.
        if let Ok(stopped) = self.inner.stop_lock.try_lock() {
            if !*stopped {
                self.inner.phase.advance(Phase::Forced);
                if let Some(file) = &self.inner.owned_file {
                    let _ = file.remove();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicked_internal_task_is_reported_by_the_stop() {
        let dir = tempfile::tempdir().unwrap();
        let reader = Reader::builder(dir.path().join("r.sock"))
            .systemd(false)
            .start(|_: &[u8]| Ok(()))
            .unwrap();
        // Stands in for a bug in one of the Reader's own tasks.
        reader
            .inner
            .tasks
            .spawn(&Handle::current(), "connection", async {
                panic!("injected")
            });
        let err = reader.stop(Duration::from_secs(5)).await.unwrap_err();
        match err {
            StopError::TaskPanicked { task, message } => {
                assert_eq!((task, message.as_str()), ("connection", "injected"));
            }
            other => panic!("unexpected: {other:?}"),
        }
    }
}
