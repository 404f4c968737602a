//! The Reader: binds (or adopts systemd's socket), accepts connections, runs
//! one task per connection, and stops gracefully.
//!
//! This module owns the listener, the accept loop and the stop protocol;
//! per-connection reading lives in `connection`, the wire rules in `frame`.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::runtime::Handle;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::error::{ConfigError, HandlerError, ReaderError, StartError, StopError};
use crate::lifecycle::Phase;
use crate::metrics::{ReaderCounters, ReaderMetrics};
use crate::policy::{Peer, Policy};
use crate::socket::{self, OwnedSocketFile};
use crate::systemd::{self, Notifier, SystemdEnv};

/// Default maximum message size: 10 MiB (Go: `WithMaxMessageSize`).
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 10 << 20;
/// Default inactivity timeout: 10 s (Go: `WithInactivityTimeout`).
pub const DEFAULT_INACTIVITY_TIMEOUT: Duration = Duration::from_secs(10);
/// Default consecutive accept errors before giving up: 10 (Go: `WithMaxAcceptErrors`).
pub const DEFAULT_MAX_ACCEPT_ERRORS: u32 = 10;
/// Default `SO_RCVBUF`: 256 KiB (Go: `WithReadBufferSize`).
pub const DEFAULT_READ_BUFFER_SIZE: u32 = 256 << 10;
/// Pause after a failed `accept`, as in Go.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

type Handler = dyn Fn(&[u8], &ConnectionInfo) -> Result<(), HandlerError> + Send + Sync;

/// Which connection a message arrived on, for handlers started with
/// [`ReaderBuilder::start_with_info`].
///
/// Messages of one connection reach the handler in the order they were
/// sent; messages of different connections may interleave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The connection's number within this Reader, from 1 in accept order.
    pub id: u64,
    /// The peer's process, user and group ids as the kernel saw them at
    /// `connect` (`SO_PEERCRED`); `None` if it could not be read.
    pub peer: Option<PeerCredentials>,
}

/// A peer's process, user and group ids (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerCredentials {
    /// Process id.
    pub pid: i32,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}
type ErrorCallback = dyn Fn(&ReaderError) + Send + Sync;

/// Settings a running Reader reads.
#[derive(Debug, Clone)]
pub(crate) struct ReaderConfig {
    pub(crate) max_message_size: u64,
    pub(crate) inactivity_timeout: Duration,
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
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            inactivity_timeout: DEFAULT_INACTIVITY_TIMEOUT,
            max_accept_errors: DEFAULT_MAX_ACCEPT_ERRORS,
            read_buffer_size: DEFAULT_READ_BUFFER_SIZE,
            on_error: None,
            systemd: true,
            systemd_fd_name: None,
            socket_mode: None,
            policy: Policy::default(),
            runtime: None,
        }
    }

    /// Largest accepted message; a longer declared length closes the
    /// connection before any of it is buffered. Zero rejects every non-empty
    /// message. Default 10 MiB.
    pub fn max_message_size(mut self, bytes: u64) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// How long a connection may take to deliver one whole message (or to
    /// start the next) before it is closed. Must be above zero. Default 10 s.
    pub fn inactivity_timeout(mut self, timeout: Duration) -> Self {
        self.inactivity_timeout = timeout;
        self
    }

    /// How many `accept` failures in a row are tolerated (with a 100 ms pause
    /// after each) before the Reader stops accepting. Default 10.
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
    /// Taking a socket-activated fd unsets `LISTEN_FDS`, `LISTEN_PID` and
    /// `LISTEN_FDNAMES`; start such a Reader before other threads touch the
    /// environment.
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
    /// before it starts listening.
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

    /// Binds the socket (or adopts the systemd-activated one), starts
    /// accepting, notifies systemd `READY=1`, and calls `handler` with each
    /// message body.
    ///
    /// The handler runs on the connection's task and gets a slice of the
    /// connection's buffer, valid only during the call. Returning an error
    /// counts it and keeps the connection; a panic is caught and counted the
    /// same way.
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
        socket::validate_path(&self.path)?;
        if self.inactivity_timeout.is_zero() {
            return Err(ConfigError::ZeroDuration {
                option: "inactivity_timeout",
            }
            .into());
        }
        if self.policy.max_connections == Some(0) {
            return Err(ConfigError::ZeroSize {
                option: "max_connections",
            }
            .into());
        }
        let handle = crate::runtime::handle(self.runtime.as_ref()).map_err(StartError::Runtime)?;
        let _entered = handle.enter();

        let env = if self.systemd {
            SystemdEnv::from_env()
        } else {
            SystemdEnv::default()
        };
        let path = env.resolve_socket_path(&self.path);
        socket::validate_path(&path)?;
        // Before anything is bound, so a bad NOTIFY_SOCKET leaves no file.
        let notifier = Notifier::from_env(&env)?;

        let activated = if self.systemd {
            systemd::take_activation_listener(&env, self.systemd_fd_name.as_deref())?
        } else {
            None
        };
        let (std_listener, owned_file) = match activated {
            Some(listener) => (listener, None),
            None => {
                socket::ensure_parent_dir(&path)?;
                socket::clear_stale_socket(&path)?;
                let listener =
                    socket::bind_listener(&path, self.socket_mode).map_err(|source| {
                        StartError::Bind {
                            path: path.clone(),
                            source,
                        }
                    })?;
                let owned = OwnedSocketFile::record(&path).map_err(|source| StartError::Bind {
                    path: path.clone(),
                    source,
                })?;
                (listener, Some(owned))
            }
        };
        if self.read_buffer_size > 0 {
            let _ = socket::set_recv_buffer(&std_listener.as_fd(), self.read_buffer_size);
        }
        let socket_activated = owned_file.is_none();
        let listener = UnixListener::from_std(std_listener).map_err(|source| {
            if let Some(file) = &owned_file {
                let _ = file.remove();
            }
            StartError::Bind {
                path: path.clone(),
                source,
            }
        })?;

        let (phase_tx, _) = watch::channel(Phase::Running);
        let inner = Arc::new(ReaderInner {
            handler: Box::new(handler),
            on_error: self.on_error,
            config: ReaderConfig {
                max_message_size: self.max_message_size,
                inactivity_timeout: self.inactivity_timeout,
            },
            counters: ReaderCounters::default(),
            phase: phase_tx,
            all_closed: Notify::new(),
            max_accept_errors: self.max_accept_errors,
            read_buffer_size: self.read_buffer_size,
            policy: self.policy,
            path,
            owned_file,
            socket_activated,
            notifier,
            stop_lock: tokio::sync::Mutex::new(false),
            accept_task: std::sync::Mutex::new(None),
        });
        let task = handle.spawn(accept_loop(Arc::clone(&inner), listener));
        *inner.accept_task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        if let Some(n) = &inner.notifier {
            if let Err(e) = n.ready() {
                tracing::warn!(error = %e, "failed to send READY=1 to systemd");
            }
        }
        tracing::debug!(path = %inner.path.display(), socket_activated, "reader started");
        Ok(Reader { inner, handle })
    }
}

/// State shared by the Reader handle, its accept loop and its connections.
pub(crate) struct ReaderInner {
    pub(crate) handler: Box<Handler>,
    on_error: Option<Arc<ErrorCallback>>,
    pub(crate) config: ReaderConfig,
    pub(crate) counters: ReaderCounters,
    phase: watch::Sender<Phase>,
    all_closed: Notify,
    max_accept_errors: u32,
    read_buffer_size: u32,
    policy: Policy,
    path: PathBuf,
    owned_file: Option<OwnedSocketFile>,
    socket_activated: bool,
    notifier: Option<Notifier>,
    stop_lock: tokio::sync::Mutex<bool>,
    accept_task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl ReaderInner {
    /// Counts (where Go counts) and reports an error.
    pub(crate) fn report(&self, error: ReaderError) {
        if !matches!(
            error,
            ReaderError::AcceptGaveUp { .. } | ReaderError::PeerRejected { .. }
        ) {
            self.counters.errors.fetch_add(1, Relaxed);
        }
        tracing::debug!(%error, context = error.context(), "reader error");
        if let Some(cb) = &self.on_error {
            crate::runtime::call_guarded("reader on_error", || cb(&error));
        }
    }

    async fn stop(self: Arc<Self>, timeout: Duration) -> Result<(), StopError> {
        let mut stopped = self.stop_lock.lock().await;
        if *stopped {
            return Ok(());
        }
        *stopped = true;
        // If this future is dropped before it finishes, stop hard instead of
        // leaving connections draining with no deadline.
        let cancelled = crate::runtime::OnCancel::new(|| {
            self.phase.send_replace(Phase::Forced);
            if let Some(file) = &self.owned_file {
                let _ = file.remove();
            }
        });
        let deadline = Instant::now() + timeout;
        if let Some(n) = &self.notifier {
            let _ = n.stopping();
        }
        self.phase.send_replace(Phase::Draining);
        let accept = self
            .accept_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = accept {
            let _ = task.await;
        }
        let mut result = Ok(());
        if !self.wait_all_closed(Some(deadline)).await {
            let cut = self.counters.active.load(Relaxed);
            self.phase.send_replace(Phase::Forced);
            self.wait_all_closed(None).await;
            result = Err(StopError::ConnectionsCut {
                connections: cut,
                abandoned: 0,
            });
        }
        if let Some(file) = &self.owned_file {
            if let Err(source) = file.remove() {
                if result.is_ok() {
                    result = Err(StopError::Cleanup {
                        path: file.path().to_owned(),
                        source,
                    });
                }
            }
        }
        cancelled.disarm();
        tracing::debug!(path = %self.path.display(), ?result, "reader stopped");
        result
    }

    /// Waits until no connection is open; `false` if the deadline came first.
    async fn wait_all_closed(&self, deadline: Option<Instant>) -> bool {
        loop {
            let notified = self.all_closed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.counters.active.load(Relaxed) == 0 {
                return true;
            }
            match deadline {
                Some(d) => {
                    if tokio::time::timeout_at(d, notified).await.is_err() {
                        return self.counters.active.load(Relaxed) == 0;
                    }
                }
                None => notified.await,
            }
        }
    }
}

/// Decrements the open-connection count when a connection task ends, even by
/// panic or abort.
struct ActiveGuard(Arc<ReaderInner>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if self.0.counters.active.fetch_sub(1, Relaxed) == 1 {
            self.0.all_closed.notify_waiters();
        }
    }
}

async fn accept_loop(inner: Arc<ReaderInner>, listener: UnixListener) {
    let mut phase = inner.phase.subscribe();
    let mut consecutive = 0u32;
    loop {
        if *phase.borrow_and_update() != Phase::Running {
            break;
        }
        let accepted = tokio::select! {
            biased;
            _ = phase.changed() => continue,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _)) => {
                consecutive = 0;
                spawn_connection(&inner, stream);
            }
            Err(source) => {
                consecutive += 1;
                tracing::warn!(error = %source, consecutive, "accept failed");
                if consecutive > inner.max_accept_errors {
                    inner.report(ReaderError::AcceptGaveUp {
                        consecutive,
                        source,
                    });
                    break;
                }
                tokio::select! {
                    _ = phase.changed() => {}
                    () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                }
            }
        }
    }
    if *phase.borrow() == Phase::Draining {
        accept_backlog(&inner, listener);
    }
    // The listener is closed now: from here on connects are refused instead
    // of waiting in a backlog nobody will accept.
}

/// At the start of a graceful stop, accepts the connections still waiting in
/// the listen backlog, so what their writers already sent is delivered too.
fn accept_backlog(inner: &Arc<ReaderInner>, listener: UnixListener) {
    let Ok(listener) = listener.into_std() else {
        return;
    };
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    while let Ok((stream, _)) = listener.accept() {
        let adopted = stream
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UnixStream::from_std(stream));
        if let Ok(stream) = adopted {
            spawn_connection(inner, stream);
        }
    }
}

/// Reads the peer's credentials from the kernel (`SO_PEERCRED`).
fn peer_of(stream: &tokio::net::UnixStream) -> Result<Peer, String> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    getsockopt(stream, PeerCredentials)
        .map(|c| Peer {
            pid: c.pid(),
            uid: c.uid(),
            gid: c.gid(),
        })
        .map_err(|e| e.to_string())
}

fn spawn_connection(inner: &Arc<ReaderInner>, stream: tokio::net::UnixStream) {
    let open = inner.counters.active.load(Relaxed) as usize;
    let peer = peer_of(&stream);
    let credentials = peer.as_ref().ok().map(|p| PeerCredentials {
        pid: p.pid,
        uid: p.uid,
        gid: p.gid,
    });
    if let Err(refusal) = inner.policy.admit(peer, open) {
        // Closed before a single byte is read.
        drop(stream);
        inner.counters.rejected.fetch_add(1, Relaxed);
        inner.report(ReaderError::PeerRejected {
            reason: refusal.to_string(),
        });
        return;
    }
    let id = inner.counters.connections.fetch_add(1, Relaxed) + 1;
    let info = ConnectionInfo {
        id,
        peer: credentials,
    };
    if inner.read_buffer_size > 0 {
        let _ = socket::set_recv_buffer(&stream, inner.read_buffer_size);
    }
    inner.counters.active.fetch_add(1, Relaxed);
    let guard = ActiveGuard(Arc::clone(inner));
    let phase = inner.phase.subscribe();
    let conn_inner = Arc::clone(inner);
    tokio::spawn(async move {
        let _guard = guard;
        crate::connection::serve(stream, conn_inner, info, phase).await;
    });
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
/// writer.write_message(b"hello")?;
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
        ReaderBuilder::new(path.as_ref().to_owned())
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
        self.inner.socket_activated
    }

    /// Sends `STATUS=<status>` to systemd; does nothing without `NOTIFY_SOCKET`.
    pub fn notify_status(&self, status: &str) -> std::io::Result<()> {
        match &self.inner.notifier {
            Some(n) => n.status(status),
            None => Ok(()),
        }
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
    /// If this future is dropped before it completes, the stop turns into a
    /// hard one at once.
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
                self.inner.phase.send_replace(Phase::Forced);
                if let Some(task) = self
                    .inner
                    .accept_task
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                {
                    task.abort();
                }
                if let Some(file) = &self.inner.owned_file {
                    let _ = file.remove();
                }
            }
        }
    }
}
