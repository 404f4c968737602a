//! Counters, kept in atomics and read as plain snapshot structs.
//!
//! This module owns the counter storage and the snapshot types; the Reader
//! and Writer decide when to bump them.
//!
//! What each counter proves (and does not) is tabled on [`ReaderMetrics`]
//! and [`WriterMetrics`].

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A snapshot of a Reader's counters (Go: `Reader.GetMetrics`).
///
/// # What each counter proves
///
/// The protocol is one-way: a Writer learns from the kernel how far the
/// Reader has read the socket, never whether the Reader's consumer handled a
/// message. So no counter proves "handled" on the Writer's side; each proves
/// exactly this:
///
/// | counter | side | proves | does not prove |
/// |---|---|---|---|
/// | `sent` | Writer | written whole into the socket (in the kernel) | read by anyone |
/// | `delivered` | Writer | read off the socket by the reader process (`SIOCOUTQ` fell past it) | handled, forwarded or stored: it may still sit in the Reader's read-ahead (see [`incoming_capacity_bytes`](crate::ReaderBuilder::incoming_capacity_bytes) for how much) |
/// | `unconfirmed` | Writer | written whole, then the connection ended (or a stop's deadline passed) before its read was confirmed | lost: it may have been read; never retried |
/// | `failed` | Writer | refused on `max_attempts` fresh connections in a row (a poison message); not delivered | - |
/// | `discarded` | Writer | thrown away unwritten (a stop's deadline or a dropped Writer's linger passed, or held unflushed by a `BufferedWriter`): never reached the reader | - |
/// | `dropped` | Writer | refused at `try_send` (queue full): never queued, the caller got it back | - |
/// | `retried` | Writer | written again on a new connection because the old one surely ended before it was read whole | - |
/// | `received` | Reader | handed over: the sync or async handler returned `Ok`, or it entered the `incoming()` queue | handled by the consumer of `incoming()` (it may still be queued; a graceful stop yields it before the stream ends) |
/// | `errors` | Reader | a protocol violation, a read failure or a handler `Err`/panic | - |
/// | `unhandled` | Reader | read whole off a socket and never handed over, because a stop's deadline cut its connection (always 0 with `incoming()`) | - |
/// | `abandoned_handlers` | Reader | a handler call still running when a forced stop returned | that it never finishes |
/// | `connections`, `active_connections`, `rejected_connections` | Reader | connections served, open now, refused by policy before any byte was read | - |
///
/// For a forwarder reading `incoming()`: once the stream has ended (`None`)
/// after a stop, every message any Writer counted `delivered` was counted in
/// the Reader's `received` and came out of the stream, exactly once. Killed
/// instead (`SIGKILL`), it loses at most its read-ahead, which its Writers
/// may have counted `delivered`.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReaderMetrics {
    /// Messages handed over: the handler returned `Ok`, or (for
    /// [`incoming`](crate::ReaderBuilder::incoming)) the message entered the
    /// stream's queue, which a graceful stop yields whole before the stream
    /// ends. Proves read by this process, not handled by the consumer.
    pub received: u64,
    /// Connections accepted and served, in total (refused ones are counted
    /// in `rejected_connections` instead).
    pub connections: u64,
    /// Protocol violations, read failures and handler errors.
    pub errors: u64,
    /// Connections open right now.
    pub active_connections: u64,
    /// Connections closed by a Reader-side policy (peer credentials or the
    /// connection cap) before any byte was read.
    pub rejected_connections: u64,
    /// Handler calls a stop had to leave running: still inside the handler
    /// a short grace after the stop's deadline forced the connections shut.
    pub abandoned_handlers: u64,
    /// Messages read whole off a socket and never handed over, because a
    /// stop's deadline cut their connection: an async handler's call
    /// dropped unfinished, or messages still buffered behind a handler.
    /// Never counted for a Reader feeding `incoming()` (a cut queues what
    /// was read on the stream). A Writer may have counted these
    /// `delivered`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub unhandled: u64,
}

/// A snapshot of a Writer's counters (Go: `Writer.GetMetrics`).
///
/// Every accepted message ends as exactly one of `delivered`,
/// `unconfirmed`, `failed` or `discarded` (or is still queued or in flight):
/// once a Writer has stopped, their sum is the number of messages it
/// accepted. `sent` says what reached the kernel, `delivered` what the
/// reader has read.
///
/// | counter | proves | does not prove |
/// |---|---|---|
/// | `sent` | written whole into the socket | read by anyone |
/// | `delivered` | read off the socket by the reader process | handled: it may sit in the Reader's read-ahead (a killed forwarder loses at most that; see [`incoming_capacity_bytes`](crate::ReaderBuilder::incoming_capacity_bytes)) |
/// | `unconfirmed` | written whole, read never confirmed | lost (maybe read; never retried) |
/// | `failed` | refused on `max_attempts` fresh connections: not delivered | - |
/// | `discarded` | thrown away unwritten: never reached the reader | - |
/// | `dropped` | refused at `try_send` (queue full), handed back | - |
///
/// [`ReaderMetrics`] tables both sides.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriterMetrics {
    /// Messages handed whole to the kernel (each counted once, even if it
    /// was retried): Go's `sent`. It does not mean the reader got them; see
    /// `delivered`.
    pub sent: u64,
    /// Messages the reader has read from the socket, as the kernel confirms
    /// (on Linux, the socket's unread count falling past them). The reader
    /// may still reject a message it read (e.g. a handler error). A lower
    /// bound while streaming: small messages written together as one run
    /// are counted once the run is read whole (or the connection ends, or a
    /// stop's deadline passes).
    pub delivered: u64,
    /// Messages refused because the queue was full.
    pub dropped: u64,
    /// Messages given up for good: not read whole on `max_attempts` fresh
    /// connections in a row (a poison message). Never counted for being
    /// slow.
    pub failed: u64,
    /// Messages accepted and not yet written whole, failed or discarded.
    pub queue_depth: u64,
    /// Successful connections after the first one.
    pub reconnects: u64,
    /// Messages thrown away before being written whole: a stop's deadline
    /// or a dropped Writer's linger passed first, or a
    /// [`BufferedWriter`](crate::BufferedWriter) still held them (not
    /// flushed) when the Writer stopped.
    pub discarded: u64,
    /// Messages written whole whose read was never confirmed: the
    /// connection died with unread bytes, or a stop's deadline passed.
    /// Maybe read, never retried.
    pub unconfirmed: u64,
    /// Messages sent again on a new connection because the previous one
    /// ended before the reader could have read them whole.
    pub retried: u64,
    /// Backpressure episodes: the reader read nothing for a whole
    /// `write_timeout` while the Writer waited on it (the connection is
    /// kept).
    pub backpressure: u64,
    /// Connections the reader closed without reading the first byte
    /// written to them (refused by its allow-list or connection cap).
    pub refused: u64,
}

#[derive(Debug, Default)]
pub(crate) struct ReaderCounters {
    pub(crate) received: AtomicU64,
    pub(crate) connections: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) active: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) abandoned: AtomicU64,
    pub(crate) unhandled: AtomicU64,
}

impl ReaderCounters {
    pub(crate) fn snapshot(&self) -> ReaderMetrics {
        ReaderMetrics {
            received: self.received.load(Relaxed),
            connections: self.connections.load(Relaxed),
            errors: self.errors.load(Relaxed),
            active_connections: self.active.load(Relaxed),
            rejected_connections: self.rejected.load(Relaxed),
            abandoned_handlers: self.abandoned.load(Relaxed),
            unhandled: self.unhandled.load(Relaxed),
        }
    }
}

/// The Writer's counters: `dropped` is bumped by producers, the rest is
/// published by the writer task from its state machine, plus `discarded`
/// bumped by a stop that had to give up on a stuck task.
#[derive(Debug, Default)]
pub(crate) struct WriterCounters {
    pub(crate) sent: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) discarded: AtomicU64,
    /// Discarded outside the task (after it died or got stuck).
    pub(crate) discarded_outside: AtomicU64,
    /// Held by a `BufferedWriter` when the Writer stopped (never queued, so
    /// not part of a stop's outcome).
    pub(crate) discarded_unflushed: AtomicU64,
    pub(crate) unconfirmed: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) backpressure: AtomicU64,
    pub(crate) refused: AtomicU64,
}

impl WriterCounters {
    /// Queued messages discarded (what a stop reports; not what a
    /// `BufferedWriter` held unflushed, which was never queued).
    pub(crate) fn queued_discards(&self) -> u64 {
        self.discarded.load(Relaxed) + self.discarded_outside.load(Relaxed)
    }

    pub(crate) fn snapshot(&self, queue_depth: u64) -> WriterMetrics {
        WriterMetrics {
            sent: self.sent.load(Relaxed),
            delivered: self.delivered.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            failed: self.failed.load(Relaxed),
            queue_depth,
            reconnects: self.reconnects.load(Relaxed),
            discarded: self.queued_discards() + self.discarded_unflushed.load(Relaxed),
            unconfirmed: self.unconfirmed.load(Relaxed),
            retried: self.retried.load(Relaxed),
            backpressure: self.backpressure.load(Relaxed),
            refused: self.refused.load(Relaxed),
        }
    }
}
