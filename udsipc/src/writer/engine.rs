//! What the writer task and a producer writing by itself share under the
//! engine lock: the machine, the open connection and the direct-write
//! window. Data and its small helpers; the driver acts on it.

use std::io;
use std::os::unix::net::UnixStream as StdStream;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::UnixStream;

use super::machine::Machine;

/// The machine and its connection. The task holds the lock while it acts
/// and lets go while it waits; a producer that finds the lock free and the
/// connection idle writes its message itself ([`write_now`]), which saves
/// the wake-up of the task on the way of a lone message.
pub(super) struct Engine {
    pub(super) m: Machine,
    pub(super) conn: Option<Conn>,
    /// Writes producers made by themselves: the window they count in.
    pub(super) direct: Window,
    /// The timer of the task's wait while it waits (`None`: no timer).
    pub(super) armed: Option<std::time::Instant>,
}

impl Engine {
    pub(super) fn new(m: Machine) -> Self {
        Self {
            m,
            conn: None,
            direct: Window::default(),
            armed: None,
        }
    }
}

/// Producers write by themselves at most [`DIRECT_MAX`] times per this
/// long; more often, messages come faster than one write each is worth,
/// and the task batches them.
const DIRECT_WINDOW: Duration = Duration::from_micros(50);
/// See [`DIRECT_WINDOW`]. More than one: a paced producer whose sleep
/// overshot sends messages close together, and each one left to the task
/// waited for a thread's wake-up. 64 B at 10,000 msgs/s, 3 interleaved
/// pairs: p50/p99 12.9-14.8/52-109 µs with one write per window,
/// 9.8-11.9/42-46 µs with four.
const DIRECT_MAX: u32 = 4;

/// Counts events in fixed windows of [`DIRECT_WINDOW`].
#[derive(Debug, Default)]
pub(super) struct Window {
    start: Option<std::time::Instant>,
    count: u32,
}

impl Window {
    /// Counts one more event at `at` if fewer than [`DIRECT_MAX`] were
    /// counted in the window `at` falls in; whether it was counted.
    pub(super) fn take(&mut self, at: std::time::Instant) -> bool {
        if self.start.is_none_or(|s| at - s >= DIRECT_WINDOW) {
            *self = Window {
                start: Some(at),
                count: 0,
            };
        }
        if self.count >= DIRECT_MAX {
            return false;
        }
        self.count += 1;
        true
    }
}

/// An open connection.
///
/// Registered with the runtime for reads only (the task watches for the
/// reader's hang-up): registered for writes as well, every read by the
/// reader would wake the runtime's IO driver (the socket's room changed,
/// an edge-triggered event) although no task waits for room, which at a
/// moderate rate is one thread wake-up per message for nothing. Room is
/// waited for through a second registration of the socket (a duplicate
/// descriptor), made when the socket first fills or the machine waits on
/// the reader's reads (a fresh connection's probe, a drain), and dropped
/// once the reader has read everything.
#[derive(Clone)]
pub(super) struct Conn {
    pub(super) read: Arc<AsyncFd<StdStream>>,
    /// The registration for room, while the connection is busy; `None`
    /// when it could not be made (then room is polled, see [`wait`]).
    pub(super) room: Option<Arc<AsyncFd<StdStream>>>,
    /// `room` was made for a wait on the reader's reads only (dropped at
    /// the next other wait), not for a full socket (kept until all is
    /// read).
    pub(super) room_for_reads: bool,
}

impl Conn {
    pub(super) fn new(stream: UnixStream) -> io::Result<Self> {
        let std = stream.into_std()?;
        Ok(Self {
            read: Arc::new(crate::sys::register(std, Interest::READABLE)?),
            room: None,
            room_for_reads: false,
        })
    }

    /// The socket itself (non-blocking).
    pub(super) fn socket(&self) -> &StdStream {
        self.read.get_ref()
    }

    /// Registers for room, if not yet.
    pub(super) fn watch_room(&mut self) {
        if self.room.is_some() {
            return;
        }
        let registered = self
            .socket()
            .try_clone()
            .and_then(|dup| crate::sys::register(dup, Interest::WRITABLE));
        match registered {
            Ok(fd) => self.room = Some(Arc::new(fd)),
            Err(e) => {
                tracing::debug!(error = %e, "udsipc writer: no registration for room; polling")
            }
        }
    }
}

#[cfg(test)]
mod window_tests {
    use super::*;

    #[test]
    fn a_window_counts_up_to_its_limit_and_starts_again_after_it() {
        let t0 = std::time::Instant::now();
        let mut w = Window::default();
        for i in 0..DIRECT_MAX {
            assert!(w.take(t0 + Duration::from_micros(u64::from(i))), "{i}");
        }
        assert!(
            !w.take(t0 + DIRECT_WINDOW / 2),
            "the limit within the window"
        );
        assert!(w.take(t0 + DIRECT_WINDOW), "a new window");
        assert!(!{
            let mut full = Window::default();
            (0..=DIRECT_MAX).all(|_| full.take(t0))
        });
    }
}
