//! Counters, kept in atomics and read as plain snapshot structs.
//!
//! This module owns the counter storage and the snapshot types; the Reader
//! and Writer decide when to bump them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A snapshot of a Reader's counters (Go: `Reader.GetMetrics`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReaderMetrics {
    /// Messages the handler accepted (returned `Ok`).
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
}

/// A snapshot of a Writer's counters (Go: `Writer.GetMetrics`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriterMetrics {
    /// Messages written whole to a connection.
    pub sent: u64,
    /// Messages refused because the queue was full.
    pub dropped: u64,
    /// Failed write attempts (each is retried on the next connection).
    pub failed: u64,
    /// Messages accepted and not yet written, failed for good or discarded.
    pub queue_depth: u64,
    /// Successful connections after the first one.
    pub reconnects: u64,
    /// Messages thrown away because a stop's deadline passed first.
    pub discarded: u64,
}

#[derive(Debug, Default)]
pub(crate) struct ReaderCounters {
    pub(crate) received: AtomicU64,
    pub(crate) connections: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) active: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) abandoned: AtomicU64,
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
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct WriterCounters {
    pub(crate) sent: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) discarded: AtomicU64,
}

impl WriterCounters {
    pub(crate) fn snapshot(&self, queue_depth: u64) -> WriterMetrics {
        WriterMetrics {
            sent: self.sent.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            failed: self.failed.load(Relaxed),
            queue_depth,
            reconnects: self.reconnects.load(Relaxed),
            discarded: self.discarded.load(Relaxed),
        }
    }
}
