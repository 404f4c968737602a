//! One lifecycle for the Reader and the Writer: where each is in its life
//! ([`Phase`]), the tasks it runs ([`Tasks`]), and the shape of a bounded
//! stop (drain until a deadline, then force, then abandon what still runs
//! after a short fixed grace).
//!
//! This module owns no sockets and no queues; the Reader and Writer decide
//! what draining and forcing mean for them. It follows tokio-util's split
//! of stopping (a watched phase, like a cancellation token) from waiting (a
//! task tracker), with two additions: a panicked task is recorded with its
//! message so the stop can report it, and waiting is always bounded.

use std::future::Future;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::error::StopError;

/// How a stop went ([`stop_sequence`]), for the half that ran it to report.
pub(crate) struct Stopped<T> {
    /// What `before_force` returned, if the deadline passed.
    pub(crate) forced: Option<T>,
    /// Tasks still running after the forced stop and its grace (abandoned).
    pub(crate) stuck: usize,
    /// [`StopError::TaskPanicked`] for the first task that panicked, if
    /// any.
    pub(crate) panicked: Option<StopError>,
}

/// THE stop sequence of both halves: once only (a later stop gets `None`,
/// after the first has ended); `begin`, then the phase `Draining` until
/// `timeout` from now (none if too large for the clock); if tasks still
/// run then, `before_force` (counts taken before anything is cut), the
/// phase `Forced`, and a fixed [`FORCE_GRACE`] after which the tasks still
/// running are abandoned. A stop whose future is dropped half-way forces
/// (and runs `on_cancel`) instead of draining for ever.
pub(crate) async fn stop_sequence<T>(
    once: &tokio::sync::Mutex<bool>,
    phase: &PhaseCell,
    tasks: &Tasks,
    timeout: Duration,
    begin: impl FnOnce(),
    before_force: impl FnOnce() -> T,
    mut on_cancel: impl FnMut(),
) -> Option<Stopped<T>> {
    let mut stopped = once.lock().await;
    if *stopped {
        return None;
    }
    *stopped = true;
    let cancelled = crate::runtime::OnCancel::new(|| {
        phase.advance(Phase::Forced);
        on_cancel();
    });
    begin();
    phase.advance(Phase::Draining);
    // A timeout too large for the clock waits as good as for ever.
    let forever = Instant::now() + Duration::from_secs(u32::MAX.into());
    let deadline = Instant::now().checked_add(timeout).unwrap_or(forever);
    let drained = tasks.idle_by(deadline).await;
    let mut forced = None;
    let mut stuck = 0;
    if !drained {
        forced = Some(before_force());
        phase.advance(Phase::Forced);
        if !tasks.idle_by(Instant::now() + FORCE_GRACE).await {
            stuck = tasks.live();
        }
    }
    cancelled.disarm();
    Some(Stopped {
        forced,
        stuck,
        panicked: tasks.panicked(),
    })
}

/// How long a forced stop waits for tasks to notice it before it gives up on
/// them (a handler blocked in a system call cannot be interrupted). `stop(d)`
/// returns within `d` plus this bound.
pub(crate) const FORCE_GRACE: Duration = Duration::from_millis(250);

/// Where a Reader or Writer is in its life. Phases only move forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    /// Accepting work.
    Running,
    /// A graceful stop is under way: finish what was taken, take nothing new.
    Draining,
    /// The deadline passed (or the owner was dropped): stop at once.
    Forced,
}

/// The phase, shared by an owner and its tasks.
#[derive(Debug)]
pub(crate) struct PhaseCell {
    tx: watch::Sender<Phase>,
    /// The same phase, for [`get`](Self::get) on hot paths: a plain load,
    /// where the channel's `borrow` takes a read lock (two atomic
    /// read-modify-writes, a measurable part of a 64-byte message).
    now: AtomicU8,
}

impl PhaseCell {
    pub(crate) fn new() -> Self {
        Self {
            tx: watch::channel(Phase::Running).0,
            now: AtomicU8::new(Phase::Running as u8),
        }
    }

    /// The phase now.
    pub(crate) fn get(&self) -> Phase {
        match self.now.load(Ordering::Acquire) {
            0 => Phase::Running,
            1 => Phase::Draining,
            _ => Phase::Forced,
        }
    }

    /// Moves forward to `phase`; never back.
    pub(crate) fn advance(&self, phase: Phase) {
        self.tx.send_if_modified(|now| {
            if phase > *now {
                *now = phase;
                // Under the channel's lock: stores are ordered as changes.
                self.now.store(phase as u8, Ordering::Release);
                true
            } else {
                false
            }
        });
    }

    /// A receiver that wakes on every change.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Phase> {
        self.tx.subscribe()
    }
}

/// The tasks of one Reader or Writer: counted while they run, their panics
/// recorded, waited for with a deadline.
#[derive(Debug, Default)]
pub(crate) struct Tasks {
    live: AtomicUsize,
    idle: Notify,
    panicked: Mutex<Option<StopError>>,
}

impl Tasks {
    /// Runs `fut` on `handle` as a tracked task named `task`. A panic inside
    /// it (which tokio catches) is logged, and the first one recorded, by a
    /// small second task that waits on its join handle; the count falls
    /// when that one ends however it ends (also when the runtime drops both
    /// unfinished).
    pub(crate) fn spawn<F>(self: &Arc<Self>, handle: &Handle, task: &'static str, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.live.fetch_add(1, Ordering::SeqCst);
        let guard = TaskGuard(Arc::clone(self));
        let run = handle.spawn(fut);
        handle.spawn(async move {
            let Err(Ok(payload)) = run.await.map_err(|e| e.try_into_panic()) else {
                return;
            };
            let message = panic_message(payload.as_ref());
            tracing::error!(task, %message, "a udsipc task panicked");
            let mut panicked = guard.0.panicked.lock().unwrap_or_else(|p| p.into_inner());
            panicked.get_or_insert(StopError::TaskPanicked { task, message });
        });
    }

    /// Tasks running now.
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// The first panic recorded, taken (a stop reports it once).
    pub(crate) fn panicked(&self) -> Option<StopError> {
        self.panicked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Waits until no task runs; `false` if `deadline` came first.
    pub(crate) async fn idle_by(&self, deadline: Instant) -> bool {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.live() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.live() == 0;
            }
        }
    }
}

/// Keeps a [`Tasks`] count up while alive.
#[derive(Debug)]
pub(crate) struct TaskGuard(Arc<Tasks>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if self.0.live.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_only_move_forward() {
        let cell = PhaseCell::new();
        cell.advance(Phase::Forced);
        cell.advance(Phase::Draining);
        assert_eq!(cell.get(), Phase::Forced);
    }

    #[test]
    fn get_reads_each_phase_as_the_channel_has_it() {
        let cell = PhaseCell::new();
        let rx = cell.subscribe();
        for phase in [Phase::Running, Phase::Draining, Phase::Forced] {
            cell.advance(phase);
            assert_eq!(cell.get(), phase);
            assert_eq!(*rx.borrow(), phase);
        }
    }

    #[tokio::test]
    async fn a_panicking_task_is_recorded_with_its_message_and_counted_out() {
        let tasks = Arc::new(Tasks::default());
        tasks.spawn(&Handle::current(), "test", async { panic!("boom") });
        assert!(
            tasks
                .idle_by(Instant::now() + Duration::from_secs(30))
                .await
        );
        match tasks.panicked() {
            Some(StopError::TaskPanicked { task, message }) => {
                assert_eq!((task, message.as_str()), ("test", "boom"));
            }
            other => panic!("unexpected: {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_a_stuck_task_ends_at_the_deadline() {
        let tasks = Arc::new(Tasks::default());
        tasks.spawn(&Handle::current(), "stuck", std::future::pending());
        let deadline = Instant::now() + Duration::from_secs(5);
        assert!(!tasks.idle_by(deadline).await);
        assert_eq!(Instant::now(), deadline);
        assert_eq!(tasks.live(), 1);
    }

    #[test]
    fn a_task_dropped_by_a_runtime_that_shuts_down_is_counted_out() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let tasks = Arc::new(Tasks::default());
        tasks.spawn(rt.handle(), "pending", std::future::pending());
        drop(rt);
        assert_eq!(tasks.live(), 0);
        assert!(tasks.panicked().is_none());
    }
}
