//! The one bounded-room gate: producers that find a bounded buffer full
//! wait here (the Writer's queue, the Reader's `incoming()` channel), and
//! whoever frees room wakes them, paying for the wake-up only when someone
//! waits.
//!
//! The waiter registers (counter and `Notify`) before it looks at the room,
//! with `SeqCst` on both sides: either the freeing side sees the waiter, or
//! the waiter's look sees the room freed. A wake-up cannot be missed.

use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::SeqCst;

use tokio::sync::Notify;

/// Producers waiting for room in one bounded buffer.
#[derive(Debug, Default)]
pub(crate) struct RoomGate {
    waiters: AtomicUsize,
    room: Notify,
}

impl RoomGate {
    /// Waits until `has_room()` holds when looked at right after
    /// registering, or until a wake-up (the caller then tries again).
    /// Cancel safe: a dropped wait counts itself out.
    pub(crate) async fn wait(&self, has_room: impl FnOnce() -> bool) {
        let notified = self.room.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        self.waiters.fetch_add(1, SeqCst);
        let _registered = crate::runtime::OnCancel::new(|| {
            self.waiters.fetch_sub(1, SeqCst);
        });
        if !has_room() {
            notified.await;
        }
    }

    /// Whether anyone waits (read after the room was freed).
    pub(crate) fn has_waiters(&self) -> bool {
        self.waiters.load(SeqCst) > 0
    }

    /// Wakes every waiter.
    pub(crate) fn wake(&self) {
        self.room.notify_waiters();
    }
}
