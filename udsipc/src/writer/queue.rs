//! The Writer's bounded message queue.
//!
//! Producers push without blocking (or wait for room in the async form); the
//! writer task takes everything queued in one lock and writes it in batches.
//! This module owns the queue's memory: small messages (borrowed ones, and
//! owned ones up to [`COPY_OWNED_MAX`]) are copied, with their length
//! prefix, back to back into a shared [`Arena`], so a steady-state push neither
//! allocates nor makes a queue entry: a run of them becomes one [`Item`]
//! when the writer task takes it, written straight from the arena. Larger
//! owned messages (`Bytes`) are queued as they are, never copied.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::arena::Arena;
use crate::error::WriteError;
use crate::frame::varint_len;
use crate::gate::RoomGate;

/// Copied frames larger than this get their own allocation instead.
const ARENA_MAX_FRAME: usize = 16 * 1024;
/// Owned messages up to this size are copied into the arena too: copying
/// them costs less than a queue entry of their own, and the batch would
/// copy them once anyway. Larger ones stay as they are: when the producer
/// runs far ahead of the socket, copies land in fresh arena memory, and
/// its page faults cost more than the entry saves (measured at 1 KiB).
pub(crate) const COPY_OWNED_MAX: usize = 256;

/// Producers waiting for room are woken at least every this many
/// completed batches.
const WAKE_EVERY: usize = 8;

/// A message to queue: borrowed (copied in) or owned (kept when large).
#[derive(Debug)]
pub enum Body<'a> {
    /// The caller's bytes, copied into the queue.
    Borrowed(&'a [u8]),
    /// Bytes the queue may keep as they are.
    Owned(Bytes),
}

impl std::ops::Deref for Body<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Body::Borrowed(b) => b,
            Body::Owned(b) => b,
        }
    }
}

/// One queued message, or a run of small messages framed back to back.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    /// The body, or the whole frame (prefix and body) when `framed`, or the
    /// frames of `count` messages back to back.
    pub(crate) bytes: Bytes,
    /// Whether `bytes` already starts with the length prefix.
    pub(crate) framed: bool,
    /// Messages in `bytes`: more than one only for a framed run.
    pub(crate) count: u32,
    /// Connections that ended before the reader could have read this
    /// message whole (it was retried after each); 0 for a run.
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
            count: 1,
            attempts: 0,
            sent: false,
        }
    }

    /// `count` framed messages back to back.
    pub(crate) fn run(frames: Bytes, count: u32) -> Self {
        Self {
            count,
            ..Self::new(frames, true)
        }
    }

    /// The body's length in bytes (of a single message).
    pub(crate) fn body_len(&self) -> usize {
        match crate::frame::decode_varint(&self.bytes) {
            Ok(Some((len, _))) if self.framed => len as usize,
            _ => self.bytes.len(),
        }
    }

    /// Prefix plus body, in bytes (all the frames of a run).
    pub(crate) fn frame_len(&self) -> usize {
        if self.framed {
            self.bytes.len()
        } else {
            frame_len_of(self.bytes.len())
        }
    }

    /// How many whole messages the first `offset` bytes of the frames hold,
    /// and where the last of them ends.
    pub(crate) fn whole_within(&self, offset: usize) -> (u32, usize) {
        if self.framed {
            return frames_within(&self.bytes, self.count, offset);
        }
        let len = self.frame_len();
        if len <= offset { (1, len) } else { (0, 0) }
    }

    /// Splits off the first `n` messages of a run and returns them; `self`
    /// keeps the rest. `None`, and `self` untouched, unless `0 < n < count`:
    /// a split never leaves an empty item on either side (an empty run in
    /// the queue would be written as nothing, forever).
    pub(crate) fn split_front(&mut self, n: u32) -> Option<Item> {
        if !self.framed {
            return None;
        }
        let at = (0..n.min(self.count)).fold(0, |at, _| at + frame_len_at(&self.bytes[at..]));
        self.split_front_at(n, at)
    }

    /// [`split_front`](Self::split_front) when the `n` messages are known
    /// to end at byte `at` (from [`whole_within`](Self::whole_within)).
    pub(crate) fn split_front_at(&mut self, n: u32, at: usize) -> Option<Item> {
        if !self.framed || n == 0 || n >= self.count || at == 0 || at >= self.bytes.len() {
            return None;
        }
        self.count -= n;
        Some(Item {
            bytes: self.bytes.split_to(at),
            count: n,
            ..*self
        })
    }

    /// Splits off the last message of a run and returns it; `self` keeps
    /// the others. `None` for a single message.
    pub(crate) fn split_last(&mut self) -> Option<Item> {
        let mut front = self.split_front(self.count.checked_sub(1)?)?;
        std::mem::swap(self, &mut front);
        Some(front)
    }
}

/// How many of the first `count` frames of `frames` end within `offset`
/// bytes, and where the last of them ends.
fn frames_within(frames: &[u8], count: u32, offset: usize) -> (u32, usize) {
    let (mut n, mut at) = (0, 0);
    while n < count {
        let end = at + frame_len_at(&frames[at..]);
        if end > offset {
            break;
        }
        (n, at) = (n + 1, end);
    }
    (n, at)
}

/// The whole length (prefix and body) of the frame that starts `frames`,
/// which this module wrote (a minimal, valid prefix).
fn frame_len_at(frames: &[u8]) -> usize {
    match crate::frame::decode_varint(frames) {
        Ok(Some((len, n))) => n + len as usize,
        _ => unreachable!("a run holds only frames this queue encoded"),
    }
}

/// The whole length (prefix and body) of a message of `body_len` bytes.
pub(crate) fn frame_len_of(body_len: usize) -> usize {
    varint_len(body_len as u64) + body_len
}

#[derive(Debug)]
struct State {
    items: VecDeque<Item>,
    /// Frames copied in; those not cut yet are not yet an item.
    arena: Arena,
    /// Slots held by permits (`reserve_slot`) and not yet spent or
    /// released: they count against the capacity but not in `depth`.
    reserved: usize,
    /// Frame bytes (prefixes and bodies) of the messages counted in
    /// `depth`, pushed and finished with them; kept only with a byte limit
    /// (under this lock, which every push takes anyway: no atomic per
    /// message).
    bytes: usize,
    closed: bool,
}

/// A bounded multi-producer, single-consumer queue of messages.
#[derive(Debug)]
pub(crate) struct Queue {
    /// Taken last: the writer task takes messages out while it holds the
    /// engine lock (see `WriterInner`); nothing else is locked under it.
    state: Mutex<State>,
    /// Messages accepted and not yet written, failed for good or discarded
    /// (including those the writer task has taken but not finished).
    depth: AtomicUsize,
    /// The bound in messages (`max_buffered_writes`).
    pub(super) capacity: usize,
    /// The byte limit (`usize::MAX`: none, and `bytes` is not kept).
    pub(super) byte_capacity: usize,
    /// Completions seen while producers were waiting.
    completions_while_waiting: AtomicUsize,
    /// Notified when a message may have been queued since the last
    /// `take_all` found the queue empty (or the queue was closed).
    pub(super) data_ready: Notify,
    /// Producers waiting for room.
    room: RoomGate,
    /// Wake-ups asked of the writer task by producers (tests only).
    #[cfg(test)]
    pub(crate) producer_wakes: AtomicUsize,
}

impl Queue {
    /// A queue of at most `capacity` messages and `max_bytes` frame bytes
    /// (`usize::MAX`: no byte bound). With a byte bound, a message that
    /// would take the queued bytes past it is refused (`BufferFull`), except
    /// into a queue that holds no bytes, which takes any one message; arena
    /// chunks then grow only to half the bound (at least
    /// [`CHUNK_MIN`](crate::writer::arena::CHUNK_MIN)), so that what the
    /// queue holds stays near it.
    pub(crate) fn new(capacity: usize, max_bytes: usize) -> Self {
        Self {
            state: Mutex::new(State {
                items: VecDeque::new(),
                arena: Arena::new(max_bytes / 2),
                reserved: 0,
                bytes: 0,
                closed: false,
            }),
            depth: AtomicUsize::new(0),
            capacity,
            byte_capacity: max_bytes,
            completions_while_waiting: AtomicUsize::new(0),
            data_ready: Notify::new(),
            room: RoomGate::default(),
            #[cfg(test)]
            producer_wakes: AtomicUsize::new(0),
        }
    }

    fn tracks_bytes(&self) -> bool {
        self.byte_capacity != usize::MAX
    }

    /// Whether `count` more messages of `frame_len` bytes in all fit now:
    /// any number into a queue that holds none, any size into one that
    /// holds no bytes (always, without a byte limit).
    fn fits(&self, st: &State, count: usize, frame_len: usize) -> bool {
        let used = self.used(st);
        (used == 0 || used + count <= self.capacity)
            && (st.bytes == 0 || st.bytes.saturating_add(frame_len) <= self.byte_capacity)
    }

    /// Counts `count` more messages of `frame_len` bytes in all.
    fn count_in(&self, st: &mut State, count: usize, frame_len: usize) {
        if self.tracks_bytes() {
            st.bytes += frame_len;
        }
        self.depth.fetch_add(count, Ordering::AcqRel);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state half-made
        // (each critical section is a push or a swap), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether one message of `frame_len` bytes may be queued now: while
    /// the queue is open, and (`bounded`) if it fits.
    fn admit(&self, st: &State, frame_len: usize, bounded: bool) -> Result<(), WriteError<()>> {
        if st.closed {
            Err(WriteError::Stopped(()))
        } else if bounded && !self.fits(st, 1, frame_len) {
            Err(WriteError::BufferFull(()))
        } else {
            Ok(())
        }
    }

    /// Queued messages plus held slots: what counts against the capacity.
    fn used(&self, st: &State) -> usize {
        self.depth.load(Ordering::SeqCst) + st.reserved
    }

    /// Queues `item`; whether the queue was empty (the writer task then
    /// needs waking, by the caller).
    fn enqueue(&self, st: &mut State, item: Item) -> bool {
        Self::seal(st);
        let was_empty = st.items.is_empty();
        self.count_in(st, item.count as usize, item.frame_len());
        st.items.push_back(item);
        was_empty
    }

    /// Wakes the writer task for messages a caller queued without waking
    /// it (see [`push`](Self::push)).
    pub(crate) fn wake_writer(&self) {
        #[cfg(test)]
        self.producer_wakes.fetch_add(1, Ordering::Relaxed);
        self.data_ready.notify_one();
    }

    /// Makes the arena's uncut frames an item (before anything queued after
    /// them, or when the writer takes the queue).
    fn seal(st: &mut State) {
        let n = st.arena.frames;
        if n > 0 {
            st.items.push_back(Item::run(st.arena.cut(), n));
        }
    }

    /// Queues one message without waking the writer task: the one push of
    /// a single message. Returns whether the queue was empty (the caller
    /// then hands the message on: `WriterInner::queued` writes it at once
    /// or wakes the task); refused, the body is handed back.
    ///
    /// Borrowed bodies are copied into the arena (large ones into an
    /// allocation of their own, made outside the lock and only if the
    /// message would be admitted); owned ones up to [`COPY_OWNED_MAX`] are
    /// copied too, larger ones queued as they are. `reserved`: into a slot
    /// held by [`reserve_slot`](Self::reserve_slot), spent either way (no
    /// bound applies; a closed queue refuses).
    pub(crate) fn push<'a>(
        &self,
        body: Body<'a>,
        reserved: bool,
    ) -> Result<bool, WriteError<Body<'a>>> {
        let frame_len = frame_len_of(body.len());
        let copy = match body {
            Body::Borrowed(b) if frame_len > ARENA_MAX_FRAME => {
                if !reserved {
                    if let Err(e) = self.admit(&self.lock(), frame_len, true) {
                        return Err(e.map(|()| body));
                    }
                }
                Some(Bytes::copy_from_slice(b))
            }
            _ => None,
        };
        let mut st = self.lock();
        if reserved {
            // The slot becomes the message's (or, closed, is given back:
            // `close` woke every waiter already).
            st.reserved -= 1;
        }
        if let Err(e) = self.admit(&st, frame_len, !reserved) {
            return Err(e.map(|()| body));
        }
        Ok(match (body, copy) {
            // (A copy is always above `COPY_OWNED_MAX`.)
            (_, Some(bytes)) | (Body::Owned(bytes), None) if bytes.len() > COPY_OWNED_MAX => {
                self.enqueue(&mut st, Item::new(bytes, false))
            }
            (body, _) => self.append(&mut st, &body, frame_len),
        })
    }

    /// Appends one frame to the arena's run (admitted by the caller); whether
    /// the queue was empty, as [`enqueue`](Self::enqueue).
    fn append(&self, st: &mut State, body: &[u8], frame_len: usize) -> bool {
        if !st.arena.has_room(frame_len) {
            // The run so far becomes an item first (so it is not copied).
            Self::seal(st);
            st.arena.next_chunk(frame_len);
        }
        let was_empty = st.items.is_empty() && st.arena.frames == 0;
        st.arena.put_frame(body);
        self.count_in(st, 1, frame_len);
        was_empty
    }

    /// Queues the frames `arena` holds uncut (a producer's own) as one run,
    /// cut from it, without waking the writer task (as [`push`](Self::push)):
    /// whether the queue was empty. Taken whole when that many more
    /// messages and their bytes fit, or into an empty queue whatever their
    /// number and size, or with `past_bounds` whenever the queue is open (a
    /// batch that cannot wait: bounded by the batch's own size). Else its
    /// first messages that fit are cut and taken and the others stay in
    /// `arena`, so that a run makes progress whenever a single message
    /// could (producers that keep the queue above half full cannot starve
    /// it); all stay when not even the first fits. Never an empty run;
    /// an empty `arena` is `Ok(false)` even once the queue is closed.
    pub(crate) fn push_run(
        &self,
        arena: &mut Arena,
        past_bounds: bool,
    ) -> Result<bool, WriteError<()>> {
        if arena.frames == 0 {
            return Ok(false); // nothing to queue (nor to refuse)
        }
        let mut st = self.lock();
        self.admit(&st, 0, false)?; // open
        let (mut n, mut at) = (arena.frames, arena.uncut().len());
        if !past_bounds && !self.fits(&st, n as usize, at) {
            let room = self.capacity.saturating_sub(self.used(&st));
            let byte_room = match st.bytes {
                0 => usize::MAX,
                queued => self.byte_capacity.saturating_sub(queued),
            };
            let most = n.min(u32::try_from(room).unwrap_or(u32::MAX));
            (n, at) = frames_within(arena.uncut(), most, byte_room);
        }
        if n == 0 {
            return Ok(false);
        }
        Ok(self.enqueue(&mut st, Item::run(arena.cut_to(n, at), n)))
    }

    /// Holds one slot of the capacity for a later reserved `push` (or
    /// `release_reserved`): no other push can take it meanwhile. With a
    /// byte limit, a slot is given while the queued bytes are below it, and
    /// its message is then taken whatever its size.
    pub(crate) fn reserve_slot(&self) -> Result<(), WriteError<()>> {
        let mut st = self.lock();
        self.admit(&st, 1, true)?;
        st.reserved += 1;
        Ok(())
    }

    /// Gives back a slot held by `reserve_slot` that will not be used.
    pub(crate) fn release_reserved(&self) {
        self.lock().reserved -= 1;
        // `wait_room` looks under the lock, after it registered: it sees
        // this slot free, or this sees it waiting. One slot freed is worth
        // a wake-up: nothing else may come to wake a waiter.
        if self.room.has_waiters() {
            self.room.wake();
        }
    }

    /// Waits until a push of `count` messages of `frame_len` bytes in all
    /// might succeed (room, or closed), until `deadline` (`None`: never):
    /// whether it did not time out.
    pub(crate) async fn wait_room(
        &self,
        count: usize,
        frame_len: usize,
        deadline: Option<Instant>,
    ) -> bool {
        // The gate's order pairs with `complete`'s look at its waiters.
        let wait = self.room.wait(|| {
            let st = self.lock();
            st.closed || self.fits(&st, count, frame_len)
        });
        match deadline {
            None => {
                wait.await;
                true
            }
            Some(at) => tokio::time::timeout_at(at, wait).await.is_ok(),
        }
    }

    /// Moves every queued message to the back of `into`.
    pub(crate) fn take_all(&self, into: &mut VecDeque<Item>) {
        let mut st = self.lock();
        Self::seal(&mut st);
        if into.is_empty() {
            std::mem::swap(into, &mut st.items);
        } else {
            into.extend(st.items.drain(..));
        }
    }

    /// `n` taken messages of `bytes` frame bytes in all are finished with
    /// (written, or discarded).
    pub(crate) fn complete(&self, n: usize, bytes: usize) {
        if n == 0 {
            return;
        }
        let queued = if self.tracks_bytes() {
            let mut st = self.lock();
            // Saturating: a miscount must not wrap into a bound that
            // refuses every push for good.
            st.bytes = st.bytes.saturating_sub(bytes);
            st.bytes
        } else {
            0
        };
        let before = self
            .depth
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |d| {
                Some(d.saturating_sub(n))
            })
            .unwrap_or_else(|d| d);
        let depth = before.saturating_sub(n);
        // Waiters are woken once the depth is down to half the capacity, so
        // that each wake-up refills a good part of the queue instead of one
        // batch's worth, or after `WAKE_EVERY` completions, so that
        // producers that never wait cannot keep a waiting one out forever.
        // A waiter saw `depth >= capacity`; the depth only falls from there
        // while the writer makes progress, down to 0 at worst, so it always
        // reaches half (or `close` wakes everyone).
        if self.room.has_waiters() {
            let seen = self
                .completions_while_waiting
                .fetch_add(1, Ordering::Relaxed);
            let bytes_low = self.tracks_bytes() && queued <= self.byte_capacity / 2;
            if depth <= self.capacity / 2 || bytes_low || seen % WAKE_EVERY == WAKE_EVERY - 1 {
                self.room.wake();
            }
        }
    }

    /// Refuses further pushes and wakes everyone waiting.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.data_ready.notify_one();
        self.room.wake();
    }

    /// Messages accepted and not yet finished with.
    pub(crate) fn depth(&self) -> usize {
        self.depth.load(Ordering::Acquire)
    }

    /// Drops every queued message (after a forced stop); returns how many.
    pub(crate) fn discard_all(&self) -> usize {
        let mut st = self.lock();
        Self::seal(&mut st);
        let n = st.items.iter().map(|i| i.count as usize).sum();
        let bytes = st.items.iter().map(Item::frame_len).sum();
        st.items.clear();
        st.arena.clear();
        drop(st);
        self.complete(n, bytes);
        n
    }
}

#[cfg(test)]
use crate::Payload;

#[cfg(test)]
impl Queue {
    /// A borrowed push that wakes the writer task itself.
    pub(crate) fn push_copy(&self, body: &[u8]) -> Result<(), tests::Refused> {
        self.push_woken(Body::Borrowed(body)).map_err(|e| e.into())
    }

    /// An owned push that wakes the writer task itself.
    pub(crate) fn push_owned(&self, body: Bytes) -> Result<(), (tests::Refused, Bytes)> {
        self.push_woken(Body::Owned(body))
            .map_err(|e| ((&e).into(), Bytes::back(e.into_inner())))
    }

    /// A push into a held slot, handed back when refused.
    pub(crate) fn push_reserved(&self, body: Bytes) -> Result<(), Bytes> {
        match self.push(Body::Owned(body), true) {
            Ok(_) => Ok(()),
            Err(e) => Err(Bytes::back(e.into_inner())),
        }
    }

    fn push_woken<'a>(&self, body: Body<'a>) -> Result<(), WriteError<Body<'a>>> {
        if self.push(body, false)? {
            self.wake_writer();
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Why a push was refused (the kind of its error).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Refused {
        Full,
        Closed,
    }

    impl<T> From<&WriteError<T>> for Refused {
        fn from(e: &WriteError<T>) -> Self {
            if e.is_buffer_full() {
                Refused::Full
            } else {
                Refused::Closed
            }
        }
    }

    impl<T> From<WriteError<T>> for Refused {
        fn from(e: WriteError<T>) -> Self {
            (&e).into()
        }
    }

    #[test]
    fn copies_are_framed_and_full_queue_refuses() {
        let q = Queue::new(2, usize::MAX);
        q.push_copy(b"ab").unwrap();
        q.push_owned(Bytes::from_static(b"cde")).unwrap();
        assert_eq!(q.push_copy(b"x"), Err(Refused::Full));
        let mut out = VecDeque::new();
        q.take_all(&mut out);
        // Both small messages went into one run, framed back to back.
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].bytes.as_ref(), b"\x02ab\x03cde");
        assert!(out[0].framed);
        assert_eq!((out[0].count, out[0].frame_len()), (2, 7));
        // Taken but unfinished messages still count against the capacity.
        assert_eq!(q.push_copy(b"x"), Err(Refused::Full));
        q.complete(2, 0);
        q.push_copy(b"x").unwrap();
    }

    #[test]
    fn a_large_owned_message_ends_the_run_before_it_and_keeps_the_order() {
        let q = Queue::new(16, usize::MAX);
        let big = Bytes::from(vec![9u8; COPY_OWNED_MAX + 1]);
        q.push_copy(b"a").unwrap();
        q.push_copy(b"b").unwrap();
        q.push_owned(big.clone()).unwrap();
        q.push_copy(b"c").unwrap();
        let mut out = VecDeque::new();
        q.take_all(&mut out);
        let shape: Vec<_> = out.iter().map(|i| (i.count, i.framed)).collect();
        assert_eq!(shape, [(2, true), (1, false), (1, true)]);
        assert_eq!(out[1].bytes, big, "not copied");
        assert_eq!(out[2].bytes.as_ref(), b"\x01c");
    }

    #[test]
    fn a_run_splits_at_message_boundaries() {
        let q = Queue::new(16, usize::MAX);
        for m in [&b"a"[..], b"bb", b"ccc", b"dddd"] {
            q.push_copy(m).unwrap();
        }
        let mut out = VecDeque::new();
        q.take_all(&mut out);
        let mut run = out.pop_front().unwrap();
        assert_eq!(run.count, 4);
        // Frames end at 2, 5, 9, 14.
        assert_eq!(run.whole_within(0), (0, 0));
        assert_eq!(run.whole_within(4), (1, 2));
        assert_eq!(run.whole_within(5), (2, 5));
        assert_eq!(run.whole_within(13), (3, 9));
        let front = run.split_front(1).unwrap();
        assert_eq!((front.count, front.bytes.as_ref()), (1, &b"\x01a"[..]));
        assert_eq!(front.body_len(), 1);
        let last = run.split_last().unwrap();
        assert_eq!((last.count, last.bytes.as_ref()), (1, &b"\x04dddd"[..]));
        assert_eq!((run.count, run.bytes.as_ref()), (2, &b"\x02bb\x03ccc"[..]));
    }

    #[test]
    fn a_split_never_leaves_an_empty_item_on_either_side() {
        let q = Queue::new(usize::MAX, usize::MAX);
        for body in [&b"a"[..], b"bb"] {
            q.push_copy(body).unwrap();
        }
        let mut out = VecDeque::new();
        q.take_all(&mut out);
        let mut run = out.pop_front().unwrap();
        for n in [0, 2, 3] {
            assert!(run.split_front(n).is_none(), "split at {n}");
        }
        assert!(run.split_front_at(2, 5).is_none());
        assert!(run.split_front_at(1, 0).is_none());
        assert_eq!(run.count, 2, "untouched");
        let mut one = run.split_front(1).unwrap();
        assert!(one.split_last().is_none(), "a single message");
        assert!(run.split_last().is_none());
    }

    #[test]
    fn an_empty_run_is_never_queued() {
        // An empty run would be written as nothing, forever (issue 27: a
        // split that took everything handed back an empty rest, which the
        // producer queued). The race itself: tests/buffered_writer.rs.
        let q = Queue::new(4, usize::MAX);
        let mut frames = run_of(4, 1);
        let r = q.push_run(&mut frames, false);
        assert!(matches!(r, Ok(true)), "{r:?}");
        assert_eq!(frames.frames, 0, "taken whole");
        let empty = q.push_run(&mut frames, true);
        assert!(matches!(empty, Ok(false)), "{empty:?}");
        let mut out = VecDeque::new();
        q.take_all(&mut out);
        assert_eq!(out.len(), 1, "no empty run queued");
        assert!(out.iter().all(|i| i.count > 0 && !i.bytes.is_empty()));
    }

    #[test]
    fn arena_chunks_are_reused_once_nothing_cut_from_them_is_held() {
        let q = Queue::new(usize::MAX, usize::MAX);
        let body = [7u8; 1000];
        let per_chunk = crate::writer::arena::CHUNK_MIN / 1002;
        let mut first = None;
        let mut reused = false;
        for _ in 0..16 {
            for _ in 0..per_chunk {
                q.push_copy(&body).unwrap();
            }
            let mut out = VecDeque::new();
            q.take_all(&mut out);
            let at = out[0].bytes.as_ptr();
            match first {
                None => first = Some(at),
                Some(p) if p == at => reused = true,
                Some(_) => {}
            }
            // Written: the items go, and with them the chunk's last users.
            q.complete(per_chunk, 0);
        }
        assert!(reused, "every chunk was fresh memory");
    }

    /// An arena holding `n` frames of `body_len` bytes each, uncut.
    fn run_of(n: u32, body_len: usize) -> Arena {
        let mut arena = Arena::new(0);
        arena.next_chunk(n as usize * (body_len + 1));
        for _ in 0..n {
            arena.put_frame(&vec![b'x'; body_len]);
        }
        arena
    }

    /// What `arena` still holds uncut: (bytes, messages).
    fn left(arena: &Arena) -> (usize, u32) {
        (arena.uncut().len(), arena.frames)
    }

    #[test]
    fn a_run_counts_as_its_messages_and_an_empty_queue_takes_any_run() {
        let q = Queue::new(4, 100);
        // 10-byte frames.
        let run = |n: u32| run_of(n, 9);
        let taken = |r: Result<bool, WriteError<()>>, arena: &Arena| match r {
            Ok(first) if arena.frames == 0 => first,
            other => panic!("not taken whole: {other:?}, {:?} left", left(arena)),
        };
        // Too many messages for an empty queue's bound: taken anyway, alone.
        let mut six = run(6);
        assert!(taken(q.push_run(&mut six, false), &six));
        assert_eq!(q.depth(), 6);
        let mut one = run(1);
        let first = q.push_run(&mut one, false).unwrap();
        assert!(!first);
        assert_eq!(left(&one), (10, 1), "handed back whole");
        assert_eq!(q.depth(), 6, "nothing taken");
        // Past the bounds when asked (a drop that cannot wait).
        assert!(!taken(q.push_run(&mut one, true), &one));
        assert_eq!(q.depth(), 7);
        let mut out = VecDeque::new();
        q.take_all(&mut out);
        assert_eq!(out.iter().map(|i| i.count).collect::<Vec<_>>(), [6, 1]);
        q.complete(7, 70);
        let mut two = run(2);
        assert!(taken(q.push_run(&mut two, false), &two));
        // 2 of 4 slots left: a run of 3 leaves its first 2 in, hands 1 back.
        let mut three = run(3);
        let first = q.push_run(&mut three, false).unwrap();
        assert!(!first);
        assert_eq!(left(&three), (10, 1), "expected a part");
        assert_eq!(q.depth(), 4);
        // By bytes: 60 of 100 queued, a run of 5 x 10 bytes leaves 4 in.
        let by_bytes = Queue::new(100, 100);
        let mut six = run(6);
        taken(by_bytes.push_run(&mut six, false), &six);
        let mut five = run(5);
        by_bytes.push_run(&mut five, false).unwrap();
        assert_eq!(left(&five), (10, 1), "expected a part");
        assert_eq!(by_bytes.depth(), 10);
        q.close();
        assert!(matches!(
            q.push_run(&mut run(1), true),
            Err(WriteError::Stopped(_))
        ));
    }

    #[test]
    fn discarding_counts_every_message_of_every_run() {
        let q = Queue::new(16, usize::MAX);
        q.push_copy(b"a").unwrap();
        q.push_owned(Bytes::from(vec![1u8; COPY_OWNED_MAX + 1]))
            .unwrap();
        q.push_copy(b"b").unwrap();
        q.push_copy(b"c").unwrap();
        assert_eq!(q.depth(), 4);
        assert_eq!(q.discard_all(), 4);
        assert_eq!(q.depth(), 0);
    }

    #[test]
    fn closed_queue_refuses_and_hands_back() {
        let q = Queue::new(4, usize::MAX);
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
        let q = Queue::new(4, usize::MAX);
        for _ in 0..4 {
            q.push_owned(Bytes::from_static(b"m")).unwrap();
        }
        let mut out = VecDeque::new();
        q.take_all(&mut out);
        let wait = q.wait_room(1, 1, None);
        tokio::pin!(wait);
        assert!(!poll_once(wait.as_mut()));
        q.complete(1, 0); // depth 3: room, but above the low-water mark
        assert!(!poll_once(wait.as_mut()));
        q.complete(1, 0); // depth 2 = capacity / 2
        assert!(poll_once(wait.as_mut()));
    }

    #[test]
    fn a_byte_limit_refuses_what_would_pass_it_and_an_empty_queue_takes_any_message() {
        let q = Queue::new(1_000, 100);
        let m60 = vec![1u8; 59]; // a 60-byte frame
        q.push_copy(&m60).unwrap();
        assert_eq!(q.push_copy(&[2u8; 40]), Err(Refused::Full), "60 + 41 > 100");
        q.push_copy(&[3u8; 39]).unwrap(); // 60 + 40 = 100: fits exactly
        assert_eq!(q.push_copy(b"x"), Err(Refused::Full));
        let refused = q.push_owned(Bytes::from(vec![4u8; 1_000])).unwrap_err();
        assert_eq!(refused.0, Refused::Full);
        assert_eq!(
            q.reserve_slot().map_err(Refused::from),
            Err(Refused::Full),
            "no byte left for a permit"
        );
        let mut out = VecDeque::new();
        q.take_all(&mut out);
        // Taken but not written: still counted.
        assert_eq!(q.push_copy(b"x"), Err(Refused::Full));
        q.complete(2, 100);
        // Empty: a message far above the limit is taken, then nothing else.
        q.push_owned(Bytes::from(vec![5u8; 1_000])).unwrap();
        q.push_copy(&vec![6u8; 20_000]).unwrap_err();
        assert_eq!(q.push_copy(b"y"), Err(Refused::Full));
        assert_eq!(q.discard_all(), 1);
        q.push_copy(b"z").unwrap();
        assert_eq!(q.depth(), 1);
    }

    #[test]
    fn a_waiter_for_a_large_message_waits_until_it_fits() {
        let q = Queue::new(1_000, 100);
        q.push_copy(&[1u8; 59]).unwrap(); // 60 bytes
        q.push_copy(&[1u8; 29]).unwrap(); // 30 bytes
        let mut out = VecDeque::new();
        q.take_all(&mut out);
        let wait = q.wait_room(1, 50, None);
        tokio::pin!(wait);
        assert!(!poll_once(wait.as_mut()), "90 + 50 > 100");
        // 60 left: a waiter may be woken (it retries), but a new wait for
        // 50 bytes still finds no room.
        q.complete(1, 30);
        assert_eq!(q.push_copy(&[7u8; 49]), Err(Refused::Full));
        let again = q.wait_room(1, 50, None);
        tokio::pin!(again);
        assert!(!poll_once(again.as_mut()), "60 + 50 > 100");
        q.complete(1, 60); // empty
        assert!(poll_once(again.as_mut()));
        q.push_copy(&[7u8; 49]).unwrap();
    }

    #[test]
    fn without_a_byte_limit_bytes_are_not_counted() {
        let q = Queue::new(2, usize::MAX);
        q.push_copy(&vec![1u8; 100_000]).unwrap();
        q.push_owned(Bytes::from(vec![2u8; 100_000])).unwrap();
        assert_eq!(q.lock().bytes, 0);
        assert_eq!(
            q.push_copy(b"x"),
            Err(Refused::Full),
            "the count still bounds"
        );
    }

    #[test]
    fn producers_that_never_wait_cannot_starve_a_waiting_one() {
        let q = Queue::new(4, usize::MAX);
        let mut out = VecDeque::new();
        for _ in 0..4 {
            q.push_owned(Bytes::from_static(b"m")).unwrap();
        }
        let wait = q.wait_room(1, 1, None);
        tokio::pin!(wait);
        assert!(!poll_once(wait.as_mut()));
        let mut woken = false;
        for _ in 0..WAKE_EVERY {
            // One message written, and at once another producer refills.
            q.take_all(&mut out);
            q.complete(1, 0);
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
        let q = Queue::new(2, usize::MAX);
        q.reserve_slot().unwrap();
        q.push_copy(b"a").unwrap();
        assert_eq!(q.push_copy(b"b"), Err(Refused::Full), "the slot is held");
        assert_eq!(q.reserve_slot().map_err(Refused::from), Err(Refused::Full));
        assert_eq!(q.depth(), 1, "a held slot is not a queued message");
        q.push_reserved(Bytes::from_static(b"c")).unwrap();
        assert_eq!(q.depth(), 2);
        let mut out = VecDeque::new();
        q.take_all(&mut out);
        let wire: Vec<u8> = out.iter().flat_map(|i| i.bytes.to_vec()).collect();
        assert_eq!(wire, [1, b'a', 1, b'c'], "both queued, in order");
        let big = Bytes::from(vec![7u8; COPY_OWNED_MAX + 1]);
        q.complete(2, 0);
        q.reserve_slot().unwrap();
        q.push_reserved(big.clone()).unwrap();
        q.take_all(&mut out);
        assert_eq!(out.back().unwrap().bytes, big, "a large one is not copied");
    }

    #[test]
    fn a_released_slot_can_be_taken_again_and_wakes_a_waiting_producer() {
        let q = Queue::new(1, usize::MAX);
        q.reserve_slot().unwrap();
        let wait = q.wait_room(1, 1, None);
        tokio::pin!(wait);
        assert!(!poll_once(wait.as_mut()));
        q.release_reserved();
        assert!(poll_once(wait.as_mut()));
        q.push_copy(b"a").unwrap();
    }

    #[test]
    fn a_push_into_a_slot_of_a_closed_queue_hands_back_and_frees_the_slot() {
        let q = Queue::new(1, usize::MAX);
        q.reserve_slot().unwrap();
        q.close();
        assert_eq!(
            q.push_reserved(Bytes::from_static(b"m"))
                .unwrap_err()
                .as_ref(),
            b"m"
        );
        assert_eq!(q.used(&q.lock()), 0);
        assert_eq!(
            q.reserve_slot().map_err(Refused::from),
            Err(Refused::Closed)
        );
    }

    #[test]
    fn large_copies_bypass_the_arena() {
        let q = Queue::new(4, usize::MAX);
        let big = vec![7u8; ARENA_MAX_FRAME + 1];
        q.push_copy(&big).unwrap();
        let mut out = VecDeque::new();
        q.take_all(&mut out);
        assert!(!out[0].framed);
        assert_eq!(out[0].bytes.len(), big.len());
    }
}
