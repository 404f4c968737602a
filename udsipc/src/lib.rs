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
//!   of connections, drains on stop and lingers when dropped.
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
//! writer.write_message(b"hello")?;            // never blocks
//! writer.write_bytes(vec![0u8; 1000])?;       // owned: no copy
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

#![deny(unsafe_code)]

mod accept;
mod batch;
mod bind;
mod connection;
mod delivery;
pub mod error;
pub mod frame;
mod lifecycle;
mod metrics;
mod order;
mod policy;
mod queue;
mod reader;
mod runtime;
mod socket;
mod sys;
pub mod systemd;
mod writer;

pub use delivery::{Incoming, Message};
pub use error::{
    ConfigError, HandlerError, ReadStage, ReaderError, StartError, StopError, WriteError,
    WriteFailure, WritePhase, WriterError,
};
pub use metrics::{ReaderMetrics, WriterMetrics};
pub use reader::{
    ConnectionInfo, DEFAULT_INACTIVITY_TIMEOUT, DEFAULT_INCOMING_CAPACITY,
    DEFAULT_MAX_ACCEPT_ERRORS, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_READ_BUFFER_SIZE, PeerCredentials,
    Reader, ReaderBuilder,
};
pub use socket::{SocketAddress, max_socket_path_len, replaceable_socket_dir};
pub use writer::{
    DEFAULT_DIAL_TIMEOUT, DEFAULT_INITIAL_BACKOFF, DEFAULT_LINGER, DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_BACKOFF, DEFAULT_MAX_BUFFERED_WRITES, DEFAULT_WRITE_BUFFER_SIZE,
    DEFAULT_WRITE_TIMEOUT, Writer, WriterBuilder, WriterMetricsHandle,
};
