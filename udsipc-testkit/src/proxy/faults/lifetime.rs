//! Faults on a connection's lifetime rather than its bytes: a close passed
//! on late ([`SlowClose`]), a connection that goes silent and is then cut
//! ([`Timeout`]), one cut after a while ([`ResetPeer`]). They act through
//! [`Fault::close_delay`] and [`Fault::cut_after`], so they fire whether
//! bytes flow or not.

use std::collections::HashSet;
use std::time::Duration;

use super::super::fault::{Chunk, Fault, Verdict};

/// Passes a clean end of stream on only after `delay` (toxiproxy's
/// `slow_close`): the receiver sees the peer linger.
#[derive(Debug, Clone)]
pub struct SlowClose(Duration);

impl SlowClose {
    /// Hold every clean close for `delay`.
    pub fn new(delay: Duration) -> Self {
        Self(delay)
    }
}

impl Fault for SlowClose {
    fn name(&self) -> &str {
        "slow-close"
    }

    fn on_chunk(&mut self, _chunk: &mut Chunk<'_>) -> Verdict {
        Verdict::Pass
    }

    fn close_delay(&mut self, _conn: u64) -> Duration {
        self.0
    }
}

/// Lets no byte through, then cuts the connection `after` it began to
/// apply (toxiproxy's `timeout`); with a zero duration it never cuts and
/// discards everything while it is installed.
#[derive(Debug, Clone)]
pub struct Timeout {
    after: Duration,
    noted: HashSet<u64>,
}

impl Timeout {
    /// Discard everything, and cut after `after` (never if zero).
    pub fn new(after: Duration) -> Self {
        Self {
            after,
            noted: HashSet::new(),
        }
    }
}

impl Fault for Timeout {
    fn name(&self) -> &str {
        "timeout"
    }

    fn on_chunk(&mut self, chunk: &mut Chunk<'_>) -> Verdict {
        let n = chunk.data().len();
        chunk.data_mut().clear();
        if self.noted.insert(chunk.conn()) {
            chunk.note(
                0,
                None,
                format!("{n} bytes discarded (and all that follow)"),
            );
        }
        Verdict::Pass
    }

    fn cut_after(&mut self, _conn: u64) -> Option<Duration> {
        (!self.after.is_zero()).then_some(self.after)
    }
}

/// Cuts every connection (both sides, unread bytes discarded, so a peer
/// with data in flight sees `ECONNRESET`) `after` it began to apply
/// (toxiproxy's `reset_peer`).
#[derive(Debug, Clone)]
pub struct ResetPeer(Duration);

impl ResetPeer {
    /// Cut after `after` (at once if zero).
    pub fn new(after: Duration) -> Self {
        Self(after)
    }
}

impl Fault for ResetPeer {
    fn name(&self) -> &str {
        "reset-peer"
    }

    fn on_chunk(&mut self, _chunk: &mut Chunk<'_>) -> Verdict {
        Verdict::Pass
    }

    fn cut_after(&mut self, _conn: u64) -> Option<Duration> {
        Some(self.0)
    }
}
