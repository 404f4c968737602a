//! Error types, one enum per concern.
//!
//! - [`ConfigError`]: the caller asked for something invalid (builder misuse).
//! - [`StartError`]: a Reader could not be set up (bind, systemd, runtime).
//! - [`ReaderError`]: what a running Reader reports to its error callback.
//! - [`WriterError`]: what a running Writer reports to its error callback.
//! - [`WriteError`]: a message was refused at the queue; it is handed back.
//! - [`StopError`]: a stop did not finish cleanly.
//!
//! Each callback error names the Go reference's context string through
//! `context()`, so logs can be compared across the two implementations.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::frame::FrameError;

/// The error a message handler returns; the Reader counts it, reports it to
/// the error callback and keeps the connection open.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A builder was given a value it cannot work with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The socket path is empty.
    #[error("invalid socket path: empty path")]
    EmptyPath,
    /// The socket path does not fit in `sockaddr_un.sun_path`.
    #[error(
        "invalid socket path: {path:?} is {len} bytes, longer than the platform limit of {max} bytes (sun_path)"
    )]
    PathTooLong {
        /// The rejected path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The longest path the platform accepts.
        max: usize,
    },
    /// The socket name holds a NUL byte other than a leading one (the
    /// kernel would cut the name there).
    #[error("invalid socket path: {path:?} contains a NUL byte")]
    NulInPath {
        /// The rejected path.
        path: PathBuf,
    },
    /// A timeout, backoff or size option was zero where zero makes no
    /// sense.
    #[error("{option} must be greater than zero")]
    Zero {
        /// The option's builder method name.
        option: &'static str,
    },
}

/// A Reader could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// An option was invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The socket's parent directory could not be created.
    #[error("failed to create the socket directory {dir:?}: {source}")]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The path exists and is not a socket; it was left untouched.
    #[error("refusing to replace {path:?}: it exists and is not a socket")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// A live reader already answers on the path.
    #[error("address in use: a live reader already accepts connections on {path:?}")]
    AddrInUse {
        /// The path.
        path: PathBuf,
    },
    /// The lock beside the path (`<path>.lock`, taken only while a start
    /// or a stop changes the path) stayed held by another process, or
    /// could not be opened, and no live reader answers on the path. Either
    /// another start or stop on this path is under way (try again), or
    /// another user holds or owns that file (in a shared directory: remove
    /// it, or use a directory of your own).
    #[error(
        "cannot take the lock {lock:?}{}: no live reader answers on {path:?}; another reader's start or stop on this path is under way, or another user holds or owns the lock file",
        owner_note(*.owner, .source.as_ref())
    )]
    LockHeld {
        /// The socket path.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// The lock file's owner, if it could be read.
        owner: Option<u32>,
        /// Why it could not be opened (`None`: it was held).
        source: Option<io::Error>,
    },
    /// Removing a stale socket file failed.
    #[error("failed to remove the stale socket {path:?}: {source}")]
    RemoveStale {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The library's own tokio runtime (used when `start` is called outside
    /// any runtime) could not be created.
    #[error("failed to start udsipc's tokio runtime: {0}")]
    Runtime(io::Error),
    /// `bind`/`listen` or a socket option failed.
    #[error("failed to listen on {path:?}: {source}")]
    Bind {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The systemd environment was present but unusable.
    #[error("systemd integration failed: {0}")]
    Systemd(#[from] SystemdError),
}

/// Where the Reader was when it met an IO error or a timeout.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadStage {
    /// Waiting for, or inside, a length prefix.
    Prefix,
    /// Inside a message body.
    Body,
}

/// A problem a running Reader met, passed to its error callback.
///
/// Every variant except [`ReaderError::AcceptGaveUp`] and
/// [`ReaderError::PeerRejected`] is also counted in `errors`, as the Go
/// reference counts them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReaderError {
    /// `accept` failed more times in a row than `max_accept_errors` allows;
    /// the Reader no longer accepts connections (existing ones keep running).
    #[error("accept failed {consecutive} times in a row, no longer accepting: {source}")]
    AcceptGaveUp {
        /// How many consecutive failures there were.
        consecutive: u32,
        /// The last failure.
        source: io::Error,
    },
    /// The peer broke the framing rules; the connection was closed.
    #[error("protocol violation, connection closed: {0}")]
    Protocol(#[from] FrameError),
    /// Reading from the connection failed; the connection was closed.
    #[error("read failed inside a {stage:?}: {source}")]
    Read {
        /// Where in the frame the failure happened.
        stage: ReadStage,
        /// The cause.
        source: io::Error,
    },
    /// The inactivity timeout expired in the middle of a message body; the
    /// connection was closed (a timeout between messages is not an error).
    #[error(
        "inactivity timeout of {timeout:?} expired inside a message body ({got} of {expected} bytes)"
    )]
    BodyTimeout {
        /// The configured inactivity timeout.
        timeout: Duration,
        /// The declared body length.
        expected: u64,
        /// How many body bytes had arrived.
        got: u64,
    },
    /// The handler returned an error; the connection stays open and the
    /// message is not counted as received.
    #[error("handler failed to process a message: {0}")]
    Handler(HandlerError),
    /// A connection was refused by a Reader-side policy (peer credentials or
    /// the connection cap) before any byte was read, or shed (accepted and
    /// closed unread) while the process was out of file descriptors.
    #[error("connection rejected: {reason}")]
    PeerRejected {
        /// Why.
        reason: String,
    },
}

impl ReaderError {
    /// The context string the Go reference passes to its error callback for
    /// the same situation.
    pub fn context(&self) -> &'static str {
        match self {
            Self::AcceptGaveUp { .. } => "too many consecutive failures in accept loop",
            Self::Protocol(FrameError::TooLarge { .. }) => "message too large",
            Self::Protocol(FrameError::TruncatedBody { .. })
            | Self::BodyTimeout { .. }
            | Self::Read {
                stage: ReadStage::Body,
                ..
            } => "failed to read the complete message",
            Self::Protocol(_) | Self::Read { .. } => "failed to read the length prefix",
            Self::Handler(_) => "handler failed to process a message",
            Self::PeerRejected { .. } => "connection rejected",
        }
    }
}

/// Why a write to the socket failed, as the Go reference classifies it.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteFailure {
    /// The socket stayed full for the whole write timeout: the reader is alive
    /// but not keeping up (Go's `ErrBackpressure`).
    Backpressure,
    /// The connection is gone or was never there (Go's `ErrNoConsumer`).
    NoConsumer,
}

/// When, in the Writer's life, a write failed.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WritePhase {
    /// Normal operation.
    Running,
    /// Re-sending the message whose write failed, right after reconnecting.
    RetryAfterReconnect,
    /// Draining the queue during a graceful stop.
    Draining,
}

/// A problem a running Writer met, passed to its error callback.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriterError {
    /// Connecting to the socket failed (or took longer than the dial timeout);
    /// the Writer retries after its backoff delay.
    #[error("failed to dial socket {path:?}: {source}")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A write met trouble. With [`WriteFailure::NoConsumer`] the
    /// connection died: it is closed, and a message the reader provably did
    /// not read whole is sent first on the next connection. With
    /// [`WriteFailure::Backpressure`] the reader read nothing for the whole
    /// write timeout: reported once per episode, the connection is kept
    /// (a slow reader is not a dead one) and nothing is counted as failed.
    #[error("write failed ({kind:?}) while {phase:?}: {source}")]
    Write {
        /// Backpressure or no consumer.
        kind: WriteFailure,
        /// When it happened.
        phase: WritePhase,
        /// The cause.
        source: io::Error,
    },
    /// The reader closed a fresh connection without reading the first byte
    /// written to it (its peer-credential allow-list or connection cap
    /// refused this writer). Nothing was lost and no message is blamed; the
    /// Writer redials after its backoff delay, which keeps growing while it
    /// is refused. (A reader closing a connection on which everything was
    /// read, e.g. for inactivity, is not an error at all.)
    #[error("the reader at {path:?} closed the connection without reading anything: {source}")]
    Refused {
        /// The socket path.
        path: PathBuf,
        /// How the closed connection showed.
        source: io::Error,
    },
    /// A message was not read whole on `attempts` fresh connections in a
    /// row (e.g. the reader closes on it because it is larger than its
    /// `max_message_size`): it is failed for good, counted in `failed`, and
    /// the queue moves on.
    #[error(
        "a {size}-byte message was given up after {attempts} connections ended before the reader read it whole"
    )]
    MessageFailed {
        /// The message's body size in bytes.
        size: usize,
        /// Connections it was tried on.
        attempts: u32,
    },
    /// A connection died with unread bytes while `messages` messages written
    /// whole on it were not yet known to be read: the reader may or may not
    /// have read them. They are never retried (that could duplicate them)
    /// and are counted in `unconfirmed`.
    #[error(
        "{messages} message(s) (about {approx_bytes} bytes) were written but the connection died before the reader was seen to read them"
    )]
    Unconfirmed {
        /// Messages written whole and not confirmed.
        messages: u64,
        /// Their bytes on the wire, approximately.
        approx_bytes: u64,
    },
}

impl WriterError {
    /// The context string the Go reference passes to its error callback for
    /// the same situation (the Go reference has no equivalent of
    /// `Refused`, `MessageFailed` and `Unconfirmed`: theirs are our own).
    pub fn context(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "failed to connect",
            Self::Refused { .. } => "connection refused by the reader",
            Self::MessageFailed { .. } => "message failed",
            Self::Unconfirmed { .. } => "unconfirmed messages",
            Self::Write { phase, .. } => match phase {
                WritePhase::Running => "write failure",
                WritePhase::RetryAfterReconnect => "write failure after reconnect",
                WritePhase::Draining => "write failure during drain",
            },
        }
    }

    /// Go's classification of the failure: a failed connect, like a broken
    /// or refused connection, means there is no consumer.
    pub fn write_failure(&self) -> WriteFailure {
        match self {
            Self::Write { kind, .. } => *kind,
            _ => WriteFailure::NoConsumer,
        }
    }
}

/// A message the Writer did not take; the message is handed back, as tokio's
/// `TrySendError` does.
///
/// `T` is `()` for [`Writer::try_send`](crate::Writer::try_send),
/// whose caller still holds the borrowed bytes, and `Bytes` for the owned
/// forms.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum WriteError<T> {
    /// The queue holds `max_buffered_writes` messages; this one was dropped and
    /// counted in `dropped` (Go's `ErrBufferFull`).
    #[error("send buffer full")]
    BufferFull(T),
    /// The Writer is stopping or stopped and takes no more messages.
    #[error("writer is stopped")]
    Stopped(T),
    /// No room came within the wait's timeout
    /// ([`send_timeout`](crate::Writer::send_timeout),
    /// [`send_timeout_blocking`](crate::Writer::send_timeout_blocking));
    /// not counted as dropped.
    #[error("no room in the send buffer within the timeout")]
    Timeout(T),
}

impl<T> WriteError<T> {
    /// The message that was not taken.
    pub fn into_inner(self) -> T {
        match self {
            Self::BufferFull(t) | Self::Stopped(t) | Self::Timeout(t) => t,
        }
    }

    /// The same error around `f(message)`.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> WriteError<U> {
        match self {
            Self::BufferFull(t) => WriteError::BufferFull(f(t)),
            Self::Stopped(t) => WriteError::Stopped(f(t)),
            Self::Timeout(t) => WriteError::Timeout(f(t)),
        }
    }

    /// Whether the queue was full.
    pub fn is_buffer_full(&self) -> bool {
        matches!(self, Self::BufferFull(_))
    }
}

impl<T> std::fmt::Debug for WriteError<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BufferFull(_) => f.write_str("BufferFull(..)"),
            Self::Stopped(_) => f.write_str("Stopped(..)"),
            Self::Timeout(_) => f.write_str("Timeout(..)"),
        }
    }
}

/// A stop did not finish cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StopError {
    /// A Writer's deadline passed before its queue drained and the reader
    /// read everything: `discarded` messages never written whole were thrown
    /// away (also counted in `discarded`), and `unconfirmed` written ones
    /// were not yet known to be read (also counted in `unconfirmed`; they
    /// stay in the reader's socket buffer, which it may still read).
    #[error(
        "graceful stop deadline exceeded: {discarded} queued message(s) discarded, {unconfirmed} written but not confirmed read"
    )]
    #[non_exhaustive]
    DeadlineExceeded {
        /// Messages discarded.
        discarded: u64,
        /// Messages written whole and not confirmed read.
        unconfirmed: u64,
    },
    /// A Reader's deadline passed before its connections finished draining;
    /// `connections` open connections were cut. Of those, `abandoned` were
    /// inside a handler call that had not returned a short grace after the
    /// cut (a handler blocked in a system call cannot be interrupted): the
    /// stop returned without waiting for them; their sockets close when the
    /// call returns. Also counted in the Reader's `abandoned_handlers`.
    ///
    /// `unhandled` says precisely what the cut cost: whole messages the
    /// Reader had read off a socket and never handed over (an async
    /// handler's call dropped unfinished, or messages still buffered behind
    /// a sync or async handler). Always 0 for a Reader feeding
    /// [`incoming`](crate::ReaderBuilder::incoming): what it read is queued
    /// on the stream anyway, which yields it before it ends. What the cut
    /// left unread in the kernel was never read: a Writer counts it
    /// `unconfirmed`, not `delivered`.
    #[error(
        "graceful stop deadline exceeded: {connections} open connection(s) cut, {abandoned} stuck handler call(s) abandoned, {unhandled} message(s) read and not handled"
    )]
    ConnectionsCut {
        /// Connections cut.
        connections: u64,
        /// Handler calls still running when the stop returned.
        abandoned: u64,
        /// Messages read whole and never handed over (also in the Reader's
        /// `unhandled`).
        unhandled: u64,
    },
    /// An internal task of the Reader or Writer panicked (a bug: please
    /// report it). The stop still completed as far as it could.
    #[error("udsipc {task} task panicked: {message}")]
    TaskPanicked {
        /// Which task.
        task: &'static str,
        /// The panic's message.
        message: String,
    },
    /// The tokio runtime the Reader or Writer ran on was shut down before the
    /// stop could finish; whatever its tasks held was dropped with them.
    #[error("the tokio runtime was shut down before the stop could finish")]
    RuntimeGone,
    /// A blocking stop was called on a current-thread tokio runtime's own
    /// thread, where waiting would deadlock; nothing was stopped. Use the
    /// async `stop(..).await` there.
    #[error(
        "blocking stop called on a current-thread tokio runtime's thread (it would deadlock): use stop(..).await"
    )]
    WouldDeadlock,
    /// Removing the socket file at stop failed.
    #[error("failed to remove the socket file {path:?}: {source}")]
    Cleanup {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// ` (held by another process, owner uid N)` or ` (cannot open it: E, owner
/// uid N)`, for [`StartError::LockHeld`].
fn owner_note(owner: Option<u32>, source: Option<&io::Error>) -> String {
    let owner = owner.map_or(String::new(), |uid| format!(", owned by uid {uid}"));
    match source {
        Some(e) => format!(" (cannot open it: {e}{owner})"),
        None => format!(" (held by another process{owner})"),
    }
}

/// The systemd environment could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SystemdError {
    /// `LISTEN_PID` is not a number.
    #[error("invalid LISTEN_PID {0:?}")]
    InvalidListenPid(String),
    /// `LISTEN_PID` names another process.
    #[error("LISTEN_PID {listen_pid} does not match current PID {pid}")]
    ListenPidMismatch {
        /// The value of `LISTEN_PID`.
        listen_pid: u32,
        /// This process.
        pid: u32,
    },
    /// `LISTEN_FDS` is not a number.
    #[error("invalid LISTEN_FDS {0:?}")]
    InvalidListenFds(String),
    /// More or fewer than one fd was passed and no name selects one.
    #[error("expected 1 socket, got {0} (name the one to use with systemd_fd_name)")]
    FdCount(usize),
    /// No passed fd has the requested name in `LISTEN_FDNAMES`.
    #[error("no socket named {name:?} in LISTEN_FDNAMES {names:?}")]
    NoSuchName {
        /// The requested name.
        name: String,
        /// What `LISTEN_FDNAMES` held.
        names: String,
    },
    /// Another Reader in this process already took the passed socket.
    #[error("the systemd socket (fd {0}) was already taken by another Reader")]
    AlreadyTaken(std::os::fd::RawFd),
    /// The passed fd is not a listening Unix stream socket.
    #[error("fd {fd} is not a listening Unix stream socket: {why}")]
    NotAListener {
        /// The fd.
        fd: std::os::fd::RawFd,
        /// What is wrong with it.
        why: String,
    },
    /// Connecting to `NOTIFY_SOCKET` failed.
    #[error("failed to connect to the systemd notify socket {addr:?}: {source}")]
    Notify {
        /// The value of `NOTIFY_SOCKET`.
        addr: String,
        /// The cause.
        source: io::Error,
    },
}
