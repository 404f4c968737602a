//! Fast, wire-compatible Unix-domain-socket IPC: varint length-prefixed
//! messages, as the Go library `github.com/Psiphon-Inc/uds-ipc` sends them.
//!
//! - [`Reader`]: binds a socket (or adopts systemd's), accepts any number of
//!   writers, and hands each message over one of three ways, all with
//!   backpressure: a synchronous handler on bytes borrowed from the
//!   connection's buffer ([`ReaderBuilder::start`], no copy per message; it
//!   may block without holding back other connections), an async handler on
//!   owned bytes ([`ReaderBuilder::start_async`]), or a bounded stream
//!   ([`ReaderBuilder::incoming`]). One writer process's messages keep their
//!   order across its reconnects; `stop` is bounded whatever a handler does.
//! - [`Writer`]: a never-blocking bounded queue in front of a background task
//!   that connects, writes many messages per syscall, waits on a slow reader
//!   instead of reconnecting, tells what the reader has read (`delivered`)
//!   from what only reached the kernel (`sent`), reconnects with exponential
//!   backoff, retries only a message the reader provably did not read whole
//!   (never one twice), gives up on a poison message after a bounded number
//!   of connections, drains on stop and lingers when dropped. One sending
//!   API on tokio `mpsc::Sender`'s model (the table is in [`Writer`]'s
//!   docs): [`Writer::try_send`] (Go's `WriteMessage`), [`Writer::send`],
//!   [`Writer::send_blocking`], [`Writer::send_timeout`] (and its blocking
//!   form), [`Writer::reserve`] / [`Writer::try_reserve`] /
//!   [`Writer::reserve_owned`] (cancel safe), [`Writer::buffered`] for one
//!   producer of many small messages, and `into_sink` (feature `futures`).
//!   Borrowed bytes are copied, owned ones queued as they are: the
//!   argument's type ([`Payload`]) decides.
//! - [`frame`]: the wire format without IO.
//! - [`systemd`]: socket activation, `NOTIFY_SOCKET`, `RUNTIME_DIRECTORY`.
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("app.sock");
//!
//! let seen = Arc::new(AtomicUsize::new(0));
//! let counter = Arc::clone(&seen);
//! let reader = udsipc::Reader::builder(&path)
//!     .inactivity_timeout(Duration::from_secs(30))
//!     .on_error(|e| eprintln!("reader: {e}"))
//!     .start(move |msg: &[u8]| {
//!         counter.fetch_add(msg.len(), Ordering::Relaxed);
//!         Ok(())
//!     })?;
//!
//! let writer = udsipc::Writer::builder(&path).max_buffered_writes(50_000).start()?;
//! writer.try_send(b"hello")?;            // never blocks
//! writer.try_send(vec![0u8; 1000])?;       // owned: no copy
//! writer.stop_blocking(Duration::from_secs(5))?; // drain, then stop
//! reader.stop_blocking(Duration::from_secs(5))?;
//!
//! assert_eq!(seen.load(Ordering::Relaxed), 1005);
//! assert_eq!(reader.metrics().received, 2);
//! # Ok(())
//! # }
//! ```
//!
//! Inside a tokio runtime use `send(..).await` and `stop(..).await`; outside
//! one, the library runs its tasks on a small runtime of its own.
//!
//! # Features
//!
//! | feature | default | what |
//! |---|---|---|
//! | `runtime` | yes | [`Reader`], [`Writer`], [`systemd`] (tokio, nix, tracing) |
//! | `tokio-util` | no | `codec::UvarintCodec`: the framing as a tokio-util `Encoder`/`Decoder` |
//! | `futures` | no | `WriterSink`: the Writer as a `futures::Sink<Bytes>` |
//! | `serde` | no | `Serialize`/`Deserialize` on the metrics and the error kinds |
//! | `metrics` | no | `metrics_export`: the counters as `udsipc_*` series through the `metrics` facade, published from snapshots (nothing per message) |
//!
//! With `default-features = false` the crate is [`frame`] alone: no tokio.
//!
//! # Platforms
//!
//! Linux, where everything is tested (against the Go reference too). On
//! other Unixes (macOS, the BSDs) the crate builds and the Reader and Writer
//! should work over path sockets (untested there); the Linux-only parts are
//! absent or inert: abstract socket names, `SO_PEERCRED` (a Reader with an
//! allow-list then refuses every connection), the `SIOCOUTQ` query behind
//! `delivered`, `MSG_NOSIGNAL` (the process must ignore `SIGPIPE`, as Rust
//! binaries do), abstract systemd notify sockets. Not Windows.

#![deny(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "runtime")]
mod bind;
#[cfg(feature = "tokio-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio-util")))]
pub mod codec;
#[cfg(feature = "runtime")]
pub mod error;
pub mod frame;
#[cfg(feature = "runtime")]
mod gate;
#[cfg(feature = "runtime")]
mod lifecycle;
#[cfg(feature = "runtime")]
mod metrics;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics_export;
#[cfg(feature = "runtime")]
mod policy;
#[cfg(feature = "runtime")]
mod reader;
#[cfg(feature = "runtime")]
mod runtime;
#[cfg(feature = "runtime")]
mod socket;
#[cfg(feature = "runtime")]
mod sys;
#[cfg(feature = "runtime")]
#[cfg_attr(docsrs, doc(cfg(feature = "runtime")))]
pub mod systemd;
#[cfg(feature = "runtime")]
mod writer;

/// The byte-buffer crate of the public API (`Bytes` in [`Writer::send`],
/// [`Message`]), re-exported so callers need not depend on a matching version.
pub use bytes;
/// The runtime crate of the public API (`tokio::runtime::Handle` in the
/// builders' `runtime` option), re-exported for the same reason.
#[cfg(feature = "runtime")]
#[cfg_attr(docsrs, doc(cfg(feature = "runtime")))]
pub use tokio;

#[cfg(feature = "runtime")]
pub use error::{
    ConfigError, HandlerError, ReadStage, ReaderError, StartError, StopError, WriteError,
    WriteFailure, WritePhase, WriterError,
};
#[cfg(feature = "runtime")]
pub use metrics::{ReaderMetrics, WriterMetrics};
#[cfg(feature = "runtime")]
pub use reader::{
    ConnectionInfo, DEFAULT_INACTIVITY_TIMEOUT, DEFAULT_INCOMING_CAPACITY,
    DEFAULT_INCOMING_CAPACITY_BYTES, DEFAULT_MAX_ACCEPT_ERRORS, DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_READ_BUFFER_SIZE, Incoming, Message, PeerCredentials, Reader, ReaderBuilder,
};
#[cfg(feature = "runtime")]
pub use socket::{SocketAddress, max_socket_path_len, replaceable_socket_dir};
#[cfg(feature = "runtime")]
pub use writer::{
    BufferedWriter, DEFAULT_BUFFERED_CAPACITY, DEFAULT_DIAL_TIMEOUT, DEFAULT_INITIAL_BACKOFF,
    DEFAULT_LINGER, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_BACKOFF, DEFAULT_MAX_BUFFERED_BYTES,
    DEFAULT_MAX_BUFFERED_WRITES, DEFAULT_WRITE_BUFFER_SIZE, DEFAULT_WRITE_TIMEOUT, OwnedPermit,
    Payload, Permit, Writer, WriterBuilder, WriterMetricsHandle,
};
#[cfg(feature = "futures")]
#[cfg_attr(docsrs, doc(cfg(feature = "futures")))]
pub use writer::{SinkError, WriterSink};
