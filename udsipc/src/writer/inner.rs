//! The Writer handle and the state it shares with its task and producers:
//! the queue, the engine (machine and connection), counters, phase, and
//! the stop sequence.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::runtime::Handle;

use super::engine::Engine;
use super::queue::Queue;
use crate::error::{StopError, WriterError};
use crate::lifecycle::{Phase, PhaseCell, Tasks, stop_sequence};
use crate::metrics::{WriterCounters, WriterMetrics};

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
    pub(super) inner: Arc<WriterInner>,
    pub(super) handle: Handle,
}

pub(super) type ErrorCallback = dyn Fn(&WriterError) + Send + Sync;

/// The Writer's shared state.
///
/// # Locks
///
/// Order: `engine`, then the queue's own lock (the task takes messages out
/// of the queue while it holds the engine); never the other way round: a
/// producer pushes (queue lock, released) and only then tries the engine.
/// `deadline` is taken alone.
///
/// The engine lock is held across the `sendmsg` and the `SIOCOUTQ` sample
/// it drives: a write and its accounting in the machine are one step, or
/// a producer writing by itself could interleave bytes with the task.
/// Nobody ever waits for it but the task: producers only `try_lock` it
/// (and leave the message to the task when it is busy).
pub(super) struct WriterInner {
    pub(super) queue: Queue,
    /// The machine and the connection: the task's, lent to a producer that
    /// finds it idle (see `driver::write_now`). See the lock order above.
    pub(super) engine: Mutex<Engine>,
    pub(super) counters: WriterCounters,
    pub(super) phase: PhaseCell,
    /// When a drain must end (set before the phase becomes `Draining`).
    pub(super) deadline: Mutex<Option<std::time::Instant>>,
    /// The task ended by discarding (its deadline passed).
    pub(super) forced: AtomicBool,
    pub(super) tasks: Arc<Tasks>,
    pub(super) path: PathBuf,
    pub(super) dial_timeout: Duration,
    pub(super) write_buffer_size: u32,
    pub(super) linger: Duration,
    pub(super) on_error: Option<Arc<ErrorCallback>>,
    /// Whether a stop (or a drop's linger) has begun.
    pub(super) stop_lock: tokio::sync::Mutex<bool>,
}

impl WriterInner {
    pub(super) fn report(&self, error: WriterError) {
        tracing::debug!(%error, context = error.context(), "writer error");
        if let Some(cb) = &self.on_error {
            crate::runtime::call_guarded("writer on_error", || cb(&error));
        }
    }

    pub(super) fn deadline(&self) -> Option<std::time::Instant> {
        *self.deadline.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes the queue and starts the drain, to end by `timeout` from now.
    pub(super) fn begin_stop(&self, timeout: Duration) {
        self.queue.close();
        let now = tokio::time::Instant::now().into_std();
        let deadline = now
            .checked_add(timeout)
            .unwrap_or(now + Duration::from_secs(86_400 * 365));
        *self.deadline.lock().unwrap_or_else(|p| p.into_inner()) = Some(deadline);
        self.phase.advance(Phase::Draining);
    }

    pub(super) async fn stop(self: Arc<Self>, timeout: Duration) -> Result<(), StopError> {
        let before = self.counters.snapshot(0);
        let queued_discards_before = self.counters.queued_discards();
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
            self.forced.store(true, Relaxed);
        }
        if let Some(p) = stopped.panicked {
            return Err(StopError::TaskPanicked {
                task: p.task,
                message: p.message,
            });
        }
        let after = self.counters.snapshot(0);
        let discarded = self.counters.queued_discards() - queued_discards_before;
        let unconfirmed = after.unconfirmed - before.unconfirmed;
        if self.forced.load(Relaxed) || discarded > 0 {
            return Err(StopError::DeadlineExceeded {
                discarded,
                unconfirmed,
            });
        }
        Ok(())
    }
}

impl WriterInner {
    /// Closes the queue and discards what it holds, from outside the task
    /// (gone or stuck): counted in `discarded`; returns how many.
    pub(super) fn discard_queue(&self) -> u64 {
        self.queue.close();
        let n = self.queue.discard_all() as u64;
        self.counters.discarded_outside.fetch_add(n, Relaxed);
        n
    }

    pub(super) fn metrics(&self) -> WriterMetrics {
        self.counters.snapshot(self.queue.depth() as u64)
    }
}
