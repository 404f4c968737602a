//! The Writer's bounded message queue.
//!
//! Producers push without blocking (or wait for room in the async form); the
//! writer task takes everything queued in one lock and writes it in batches.
//! This module owns the queue's memory: borrowed messages are copied, with
//! their length prefix, into a shared arena so that steady-state pushes do
//! not allocate; owned messages (`Bytes`) are queued as they are.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::Notify;

use crate::frame::{MAX_VARINT_LEN, encode_varint, varint_len};

/// Size of each arena chunk for copied messages.
const ARENA_CHUNK: usize = 256 * 1024;
/// Copied frames larger than this get their own allocation instead.
const ARENA_MAX_FRAME: usize = 16 * 1024;

/// Producers waiting for room are woken at least every this many
/// completed batches.
const WAKE_EVERY: usize = 8;

/// One queued message.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    /// The body, or the whole frame (prefix and body) when `framed`.
    pub(crate) bytes: Bytes,
    /// Whether `bytes` already starts with the length prefix.
    pub(crate) framed: bool,
    /// Connections that ended before the reader could have read this
    /// message whole (it was retried after each).
    pub(crate) attempts: u32,
    /// Whether it was written whole once already (counted in `sent`, its
    /// queue slot freed): a retry of it does not count again.
    pub(crate) sent: bool,
}

impl Item {
    /// A message just accepted into the queue.
    pub(crate) fn new(bytes: Bytes, framed: bool) -> Self {
        Self {
            bytes,
            framed,
            attempts: 0,
            sent: false,
        }
    }

    /// The body's length in bytes.
    pub(crate) fn body_len(&self) -> usize {
        if self.framed {
            self.bytes.len() - varint_len_of_frame(&self.bytes)
        } else {
            self.bytes.len()
        }
    }

    /// Prefix plus body, in bytes.
    pub(crate) fn frame_len(&self) -> usize {
        if self.framed {
            self.bytes.len()
        } else {
            varint_len(self.bytes.len() as u64) + self.bytes.len()
        }
    }
}

/// The length of the varint prefix that starts `frame`.
fn varint_len_of_frame(frame: &[u8]) -> usize {
    frame
        .iter()
        .position(|b| b & 0x80 == 0)
        .map_or(frame.len(), |i| i + 1)
}

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `capacity` messages are queued.
    Full,
    /// The queue was closed by a stop.
    Closed,
}

#[derive(Debug)]
struct State {
    items: VecDeque<Item>,
    arena: BytesMut,
    closed: bool,
}

/// A bounded multi-producer, single-consumer queue of messages.
#[derive(Debug)]
pub(crate) struct Queue {
    state: Mutex<State>,
    /// Messages accepted and not yet written, failed for good or discarded
    /// (including those the writer task has taken but not finished).
    depth: AtomicUsize,
    /// Slots held by permits (`reserve_slot`) and not yet spent or
    /// released: they count against the capacity but not in `depth`.
    /// Changed only under the state lock, read without it by `wait_room`.
    reserved: AtomicUsize,
    capacity: usize,
    /// Producers waiting for room are woken once the depth is down to this,
    /// so that each wake-up refills a good part of the queue instead of one
    /// batch's worth (or after `WAKE_EVERY` completions, so that producers
    /// that never wait cannot keep a waiting one out forever).
    low_water: usize,
    /// Completions seen while producers were waiting.
    completions_while_waiting: AtomicUsize,
    room_waiters: AtomicUsize,
    data_ready: Notify,
    room: Notify,
}

impl Queue {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                items: VecDeque::with_capacity(capacity.min(1024)),
                arena: BytesMut::new(),
                closed: false,
            }),
            depth: AtomicUsize::new(0),
            reserved: AtomicUsize::new(0),
            capacity,
            low_water: capacity / 2,
            completions_while_waiting: AtomicUsize::new(0),
            room_waiters: AtomicUsize::new(0),
            data_ready: Notify::new(),
            room: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state half-made
        // (each critical section is a push or a swap), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn admit(&self, st: &State) -> Result<(), Refused> {
        if st.closed {
            return Err(Refused::Closed);
        }
        if self.used() >= self.capacity {
            return Err(Refused::Full);
        }
        Ok(())
    }

    /// Queued messages plus held slots: what counts against the capacity.
    fn used(&self) -> usize {
        self.depth.load(Ordering::SeqCst) + self.reserved.load(Ordering::SeqCst)
    }

    fn enqueue(&self, st: &mut State, item: Item) {
        let was_empty = st.items.is_empty();
        st.items.push_back(item);
        self.depth.fetch_add(1, Ordering::AcqRel);
        if was_empty {
            self.data_ready.notify_one();
        }
    }

    /// Copies `body` into the queue.
    pub(crate) fn push_copy(&self, body: &[u8]) -> Result<(), Refused> {
        let frame_len = varint_len(body.len() as u64) + body.len();
        if frame_len > ARENA_MAX_FRAME {
            // Large: copy outside the lock, then admit.
            if self.used() >= self.capacity {
                return Err(Refused::Full);
            }
            let bytes = Bytes::copy_from_slice(body);
            return self.push_owned(bytes).map_err(|(r, _)| r);
        }
        let mut st = self.lock();
        self.admit(&st)?;
        if st.arena.capacity() - st.arena.len() < frame_len {
            // Reuses the chunk in place when every message cut from it has
            // been written; otherwise starts a new chunk.
            st.arena.reserve(ARENA_CHUNK);
        }
        let mut prefix = [0u8; MAX_VARINT_LEN];
        let n = encode_varint(body.len() as u64, &mut prefix);
        st.arena.put_slice(&prefix[..n]);
        st.arena.put_slice(body);
        let bytes = st.arena.split().freeze();
        self.enqueue(&mut st, Item::new(bytes, true));
        Ok(())
    }

    /// Queues `body` without copying; hands it back when refused.
    pub(crate) fn push_owned(&self, body: Bytes) -> Result<(), (Refused, Bytes)> {
        let mut st = self.lock();
        if let Err(r) = self.admit(&st) {
            return Err((r, body));
        }
        self.enqueue(&mut st, Item::new(body, false));
        Ok(())
    }

    /// Holds one slot of the capacity for a later `push_reserved` (or
    /// `release_reserved`): no other push can take it meanwhile.
    pub(crate) fn reserve_slot(&self) -> Result<(), Refused> {
        let st = self.lock();
        self.admit(&st)?;
        self.reserved.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Queues `body` into a slot held by `reserve_slot`, without copying.
    /// The slot is spent either way; a closed queue hands `body` back.
    pub(crate) fn push_reserved(&self, body: Bytes) -> Result<(), Bytes> {
        let mut st = self.lock();
        if st.closed {
            drop(st);
            self.release_reserved();
            return Err(body);
        }
        // The slot becomes the message's. Released first, so that a lock-free
        // reader of `used()` may see one less (and retry under the lock),
        // never one more (and wait for a wake-up that may not come).
        self.reserved.fetch_sub(1, Ordering::SeqCst);
        self.enqueue(&mut st, Item::new(body, false));
        Ok(())
    }

    /// Gives back a slot held by `reserve_slot` that will not be used.
    pub(crate) fn release_reserved(&self) {
        {
            let _st = self.lock();
            self.reserved.fetch_sub(1, Ordering::SeqCst);
        }
        // SeqCst pairs with `wait_room` as in `complete`. One slot freed is
        // worth a wake-up: nothing else may come to wake a waiter.
        if self.room_waiters.load(Ordering::SeqCst) > 0 {
            self.room.notify_waiters();
        }
    }

    /// Waits until `try_push` might succeed (room or closed).
    pub(crate) async fn wait_room(&self) {
        let notified = self.room.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // SeqCst pairs with `complete`: either it sees this waiter, or this
        // check sees its decrement; a wake-up cannot be missed.
        self.room_waiters.fetch_add(1, Ordering::SeqCst);
        // Counted out even if this future is dropped while waiting.
        let _registered = crate::runtime::OnCancel::new(|| {
            self.room_waiters.fetch_sub(1, Ordering::SeqCst);
        });
        let has_room = self.used() < self.capacity || self.lock().closed;
        if !has_room {
            notified.await;
        }
    }

    /// Moves every queued message to the back of `into`.
    pub(crate) fn take_all(&self, into: &mut VecDeque<Item>) {
        let mut st = self.lock();
        if into.is_empty() {
            std::mem::swap(into, &mut st.items);
        } else {
            into.extend(st.items.drain(..));
        }
    }

    /// Resolves when a message may have been queued since the last
    /// `take_all` found the queue empty (or the queue was closed).
    pub(crate) async fn data_ready(&self) {
        self.data_ready.notified().await;
    }

    /// `n` taken messages are finished with (written, or discarded).
    pub(crate) fn complete(&self, n: usize) {
        if n == 0 {
            return;
        }
        let depth = self.depth.fetch_sub(n, Ordering::SeqCst) - n;
        // A waiter saw `depth >= capacity`; the depth only falls from there
        // while the writer makes progress, down to 0 at worst, so it always
        // reaches the low-water mark (or `close` wakes everyone).
        if self.room_waiters.load(Ordering::SeqCst) > 0 {
            let seen = self
                .completions_while_waiting
                .fetch_add(1, Ordering::Relaxed);
            if depth <= self.low_water || seen % WAKE_EVERY == WAKE_EVERY - 1 {
                self.room.notify_waiters();
            }
        }
    }

    /// Refuses further pushes and wakes everyone waiting.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.data_ready.notify_one();
        self.room.notify_waiters();
    }

    /// Messages accepted and not yet finished with.
    pub(crate) fn depth(&self) -> usize {
        self.depth.load(Ordering::Acquire)
    }

    /// Drops every queued message (after a forced stop); returns how many.
    pub(crate) fn discard_all(&self) -> usize {
        let mut st = self.lock();
        let n = st.items.len();
        st.items.clear();
        st.arena = BytesMut::new();
        drop(st);
        self.complete(n);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_framed_and_full_queue_refuses() {
        let q = Queue::new(2);
        q.push_copy(b"ab").unwrap();
        q.push_owned(Bytes::from_static(b"cde")).unwrap();
        assert_eq!(q.push_copy(b"x"), Err(Refused::Full));
        let mut out = VecDeque::new();
        q.take_all(&mut out);
        assert_eq!(out[0].bytes.as_ref(), &[2, b'a', b'b']);
        assert!(out[0].framed);
        assert_eq!(out[1].frame_len(), 4);
        // Taken but unfinished messages still count against the capacity.
        assert_eq!(q.push_copy(b"x"), Err(Refused::Full));
        q.complete(2);
        q.push_copy(b"x").unwrap();
    }

    #[test]
    fn closed_queue_refuses_and_hands_back() {
        let q = Queue::new(4);
        q.close();
        let (r, b) = q.push_owned(Bytes::from_static(b"m")).unwrap_err();
        assert_eq!(r, Refused::Closed);
        assert_eq!(b.as_ref(), b"m");
    }

    fn poll_once(f: std::pin::Pin<&mut impl std::future::Future>) -> bool {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        f.poll(&mut cx).is_ready()
    }

    #[test]
    fn waiting_producer_wakes_at_half_empty_not_at_each_batch() {
        let q = Queue::new(4);
        for _ in 0..4 {
            q.push_owned(Bytes::from_static(b"m")).unwrap();
        }
        let mut out = VecDeque::new();
        q.take_all(&mut out);
        let wait = q.wait_room();
        tokio::pin!(wait);
        assert!(!poll_once(wait.as_mut()));
        q.complete(1); // depth 3: room, but above the low-water mark
        assert!(!poll_once(wait.as_mut()));
        q.complete(1); // depth 2 = capacity / 2
        assert!(poll_once(wait.as_mut()));
    }

    #[test]
    fn producers_that_never_wait_cannot_starve_a_waiting_one() {
        let q = Queue::new(4);
        let mut out = VecDeque::new();
        for _ in 0..4 {
            q.push_owned(Bytes::from_static(b"m")).unwrap();
        }
        let wait = q.wait_room();
        tokio::pin!(wait);
        assert!(!poll_once(wait.as_mut()));
        let mut woken = false;
        for _ in 0..WAKE_EVERY {
            // One message written, and at once another producer refills.
            q.take_all(&mut out);
            q.complete(1);
            q.push_owned(Bytes::from_static(b"m")).unwrap();
            woken = poll_once(wait.as_mut());
            if woken {
                break;
            }
        }
        assert!(woken);
    }

    #[test]
    fn a_reserved_slot_counts_against_the_capacity_and_its_push_is_never_full() {
        let q = Queue::new(2);
        q.reserve_slot().unwrap();
        q.push_copy(b"a").unwrap();
        assert_eq!(q.push_copy(b"b"), Err(Refused::Full), "the slot is held");
        assert_eq!(q.reserve_slot(), Err(Refused::Full));
        assert_eq!(q.depth(), 1, "a held slot is not a queued message");
        q.push_reserved(Bytes::from_static(b"c")).unwrap();
        assert_eq!(q.depth(), 2);
        let mut out = VecDeque::new();
        q.take_all(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].bytes.as_ref(), b"c");
    }

    #[test]
    fn a_released_slot_can_be_taken_again_and_wakes_a_waiting_producer() {
        let q = Queue::new(1);
        q.reserve_slot().unwrap();
        let wait = q.wait_room();
        tokio::pin!(wait);
        assert!(!poll_once(wait.as_mut()));
        q.release_reserved();
        assert!(poll_once(wait.as_mut()));
        q.push_copy(b"a").unwrap();
    }

    #[test]
    fn a_push_into_a_slot_of_a_closed_queue_hands_back_and_frees_the_slot() {
        let q = Queue::new(1);
        q.reserve_slot().unwrap();
        q.close();
        assert_eq!(
            q.push_reserved(Bytes::from_static(b"m"))
                .unwrap_err()
                .as_ref(),
            b"m"
        );
        assert_eq!(q.used(), 0);
        assert_eq!(q.reserve_slot(), Err(Refused::Closed));
    }

    #[test]
    fn large_copies_bypass_the_arena() {
        let q = Queue::new(4);
        let big = vec![7u8; ARENA_MAX_FRAME + 1];
        q.push_copy(&big).unwrap();
        let mut out = VecDeque::new();
        q.take_all(&mut out);
        assert!(!out[0].framed);
        assert_eq!(out[0].bytes.len(), big.len());
    }
}
