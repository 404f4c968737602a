//! The bounded channel behind [`Incoming`]: connections push every frame of
//! a read in one lock, the consumer takes everything queued in one lock and
//! hands it out from its own batch. Its memory is two queues that trade
//! places, so in steady state neither side allocates or takes a lock per
//! message.
//!
//! Room is bounded twice: in messages and in body bytes. A message larger
//! than the byte bound is still taken when nothing else is held (else it
//! could never pass). A forced stop pushes what connections have already
//! read regardless of room (an unbounded [`Channel::push`]): those messages were
//! taken off the socket, and are handed out rather than dropped.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{AcqRel, Acquire, SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::frame::Receiver;
use crate::gate::RoomGate;

use super::info::{ConnectionInfo, Message};
use super::lock;

/// The shared half of the channel.
#[derive(Debug)]
pub(crate) struct Channel {
    state: Mutex<State>,
    capacity: usize,
    /// The bound on the body bytes held.
    capacity_bytes: usize,
    /// Messages pushed and not yet handed out by [`Incoming`] (queued, or
    /// in the consumer's batch): what counts against the capacity.
    held: AtomicUsize,
    /// The body bytes of those messages.
    held_bytes: AtomicUsize,
    /// Connections waiting for room.
    room: RoomGate,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Message>,
    /// The consumer, waiting for a message.
    waker: Option<Waker>,
    /// Every connection is done: once the queue is empty, the stream ends.
    closed: bool,
    /// [`Incoming`] was dropped: pushes are refused.
    abandoned: bool,
}

impl Channel {
    /// A channel of `capacity` messages (at least 1) and `capacity_bytes`
    /// body bytes, and its consumer.
    pub(crate) fn new(capacity: usize, capacity_bytes: usize) -> (Arc<Self>, Incoming) {
        let capacity = capacity.max(1);
        let chan = Arc::new(Self {
            state: Mutex::new(State {
                queue: VecDeque::with_capacity(capacity),
                ..State::default()
            }),
            capacity,
            capacity_bytes,
            held: AtomicUsize::new(0),
            held_bytes: AtomicUsize::new(0),
            room: RoomGate::default(),
        });
        let incoming = Incoming {
            chan: Arc::clone(&chan),
            batch: VecDeque::with_capacity(capacity),
        };
        (chan, incoming)
    }

    /// Moves the complete frames `rx` holds into the queue, as messages of
    /// connection `info`, as many as there is room for, in one lock;
    /// returns how many (0 without room: wait with [`wait_room`](Self::wait_room)
    /// and try again), or `None` once nobody consumes ([`Incoming`] was
    /// dropped). A frame is taken from `rx` only if its body fits
    /// the bytes there is room for (any size when nothing is held), so
    /// nothing is taken that is not pushed; one that breaks the framing is
    /// left there for the caller to find. `unbounded` pushes every frame,
    /// whatever the room: for a forced stop, which must not drop what a
    /// connection has already read.
    pub(crate) fn push(
        &self,
        rx: &mut Receiver,
        info: ConnectionInfo,
        unbounded: bool,
    ) -> Option<usize> {
        let mut st = lock(&self.state);
        if st.abandoned {
            return None;
        }
        // Read under the lock: no other push can add meanwhile, and the
        // consumer only ever makes more room, so this never overshoots.
        let held = self.held.load(Acquire);
        let held_bytes = self.held_bytes.load(Acquire);
        let room = match unbounded {
            true => usize::MAX,
            false => self.capacity.saturating_sub(held),
        };
        let (mut n, mut bytes) = (0, 0);
        while n < room {
            let room_bytes = match unbounded || held + n == 0 {
                true => usize::MAX,
                false => self.capacity_bytes.saturating_sub(held_bytes + bytes),
            };
            if !matches!(rx.next_len(), Ok(Some(len)) if len <= room_bytes) {
                break;
            }
            let Ok(Some(body)) = rx.next_owned() else {
                break;
            };
            bytes += body.len();
            st.queue.push_back(Message {
                body,
                connection: info,
            });
            n += 1;
        }
        if n == 0 {
            return Some(0);
        }
        // Counted under the lock: the consumer's swap (under it too) never
        // hands out a message not counted yet.
        self.held_bytes.fetch_add(bytes, AcqRel);
        self.held.fetch_add(n, AcqRel);
        wake_consumer(st);
        Some(n)
    }

    /// Waits until a push might take a message of `need` body bytes (room,
    /// or the consumer is gone).
    pub(crate) async fn wait_room(&self, need: usize) {
        // The gate's order pairs with `handed_out`'s look at its waiters.
        self.room
            .wait(|| self.fits(need) || lock(&self.state).abandoned)
            .await;
    }

    /// Whether a message of `need` body bytes fits now.
    fn fits(&self, need: usize) -> bool {
        let held = self.held.load(SeqCst);
        held == 0
            || (held < self.capacity
                && self.held_bytes.load(SeqCst).saturating_add(need) <= self.capacity_bytes)
    }

    /// A message of `bytes` body bytes left the consumer's hands.
    fn handed_out(&self, bytes: usize) {
        // Bytes first: a waiter that sees the count fall sees them too.
        let held_bytes = self.held_bytes.fetch_sub(bytes, SeqCst) - bytes;
        let held = self.held.fetch_sub(1, SeqCst) - 1;
        // Waiters are woken once half the room is free, so that each
        // wake-up refills a good part of it (or at once for a channel of 1),
        // and always once nothing is held (a message larger than half the
        // byte bound then fits).
        let half_free = held <= self.capacity / 2 && held_bytes <= self.capacity_bytes / 2;
        if self.room.has_waiters() && (half_free || held == 0) {
            self.room.wake();
        }
    }

    /// No connection will push again: the stream ends once drained.
    pub(crate) fn close(&self) {
        let mut st = lock(&self.state);
        st.closed = true;
        wake_consumer(st);
    }
}

/// Wakes the consumer if it waits, once the lock is released.
fn wake_consumer(mut st: MutexGuard<'_, State>) {
    let waker = st.waker.take();
    drop(st);
    if let Some(w) = waker {
        w.wake();
    }
}

/// The messages of a Reader started with
/// [`ReaderBuilder::incoming`](crate::ReaderBuilder::incoming), in arrival
/// order per connection, with backpressure: while this stream is not read,
/// connections stop reading once its capacity is reached.
///
/// It ends (`None`) once the Reader has stopped and every connection has
/// handed over what it had: drain it until then, and nothing the Reader
/// read is lost (see [`ReaderBuilder::incoming`](crate::ReaderBuilder::incoming)).
/// Dropping it while the Reader runs makes every connection close at its
/// next message, and what is queued is lost (though counted `received`);
/// stop the Reader and drain until `None` to lose nothing.
///
/// It implements [`futures_core::Stream`], and [`recv`](Self::recv) for use
/// without a stream combinator crate.
#[derive(Debug)]
pub struct Incoming {
    chan: Arc<Channel>,
    /// Taken from the channel in one swap, handed out one by one.
    batch: VecDeque<Message>,
}

impl Incoming {
    /// The next message; `None` once the Reader has stopped and drained.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a message is never lost by dropping this future.
    pub async fn recv(&mut self) -> Option<Message> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next message (the `Stream` method, usable directly).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        match self.take(Some(cx.waker())) {
            Some(m) => Poll::Ready(m),
            None => Poll::Pending,
        }
    }

    /// The next message if one is waiting, without waiting.
    pub fn try_recv(&mut self) -> Option<Message> {
        self.take(None).flatten()
    }

    /// The next message, `Some(None)` at the end, or `None` (with `waker`
    /// registered, if given) when nothing is queued yet.
    fn take(&mut self, waker: Option<&Waker>) -> Option<Option<Message>> {
        if self.batch.is_empty() {
            let mut st = lock(&self.chan.state);
            if st.queue.is_empty() {
                if st.closed {
                    return Some(None);
                }
                if let Some(w) = waker {
                    match &st.waker {
                        Some(old) if old.will_wake(w) => {}
                        _ => st.waker = Some(w.clone()),
                    }
                }
                return None;
            }
            std::mem::swap(&mut self.batch, &mut st.queue);
        }
        let m = self.batch.pop_front()?;
        self.chan.handed_out(m.body.len());
        Some(Some(m))
    }
}

impl futures_core::Stream for Incoming {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.poll_recv(cx)
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        let dropped = {
            let mut st = lock(&self.chan.state);
            st.abandoned = true;
            std::mem::take(&mut st.queue)
        };
        drop(dropped);
        // Connections waiting for room learn nobody consumes anymore.
        self.chan.room.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: ConnectionInfo = ConnectionInfo { id: 1, peer: None };

    /// A connection's receive buffer holding the frames of `bodies`.
    fn frames(bodies: impl Iterator<Item = Vec<u8>>) -> Receiver {
        let mut wire = Vec::new();
        for body in bodies {
            crate::frame::encode_frame(&body, &mut wire);
        }
        let timeout = std::time::Duration::from_secs(10);
        let mut rx = Receiver::new(u64::MAX, timeout, std::time::Instant::now());
        rx.fill(|buf| {
            buf.extend_from_slice(&wire);
            Ok::<_, std::io::Error>(wire.len())
        })
        .unwrap();
        rx
    }

    /// One-byte messages `0`, `1`, ... numbered by `range`.
    fn msgs(range: std::ops::Range<u8>) -> Receiver {
        frames(range.map(|i| vec![i]))
    }

    /// Messages of `len` bytes, each filled with its number.
    fn sized(range: std::ops::Range<u8>, len: usize) -> Receiver {
        frames(range.map(|i| vec![i; len]))
    }

    fn bodies(incoming: &mut Incoming) -> Vec<u8> {
        std::iter::from_fn(|| incoming.try_recv())
            .map(|m| m.body[0])
            .collect()
    }

    #[test]
    fn a_push_takes_only_what_fits_and_nothing_more_from_its_source() {
        let (chan, mut incoming) = Channel::new(3, usize::MAX);
        let mut source = msgs(0..5);
        assert_eq!(chan.push(&mut source, INFO, false), Some(3));
        // The source still holds the two that did not fit (2 bytes each).
        assert_eq!(source.buffered(), 4);
        assert_eq!(chan.push(&mut source, INFO, false), Some(0));
        assert_eq!(bodies(&mut incoming), [0, 1, 2]);
        assert_eq!(chan.push(&mut source, INFO, false), Some(2));
        assert_eq!(bodies(&mut incoming), [3, 4]);
    }

    #[test]
    fn connections_pushing_at_once_never_overshoot_the_capacity() {
        let (chan, mut incoming) = Channel::new(64, usize::MAX);
        std::thread::scope(|s| {
            for _ in 0..4 {
                let chan = &chan;
                s.spawn(move || {
                    let mut source = msgs(0..100);
                    while source.buffered() > 0 {
                        match chan.push(&mut source, INFO, false) {
                            Some(0) => std::thread::yield_now(),
                            Some(_) => {}
                            None => unreachable!(),
                        }
                        assert!(chan.held.load(Acquire) <= 64);
                    }
                });
            }
            let mut got = 0;
            while got < 400 {
                if incoming.try_recv().is_some() {
                    got += 1;
                }
                assert!(chan.held.load(Acquire) <= 64);
            }
        });
    }

    #[test]
    fn messages_in_the_consumers_batch_count_against_the_capacity() {
        let (chan, mut incoming) = Channel::new(2, usize::MAX);
        let mut source = msgs(0..4);
        assert_eq!(chan.push(&mut source, INFO, false), Some(2));
        // One handed out; the other waits in the consumer's batch.
        assert_eq!(incoming.try_recv().unwrap().body[0], 0);
        assert_eq!(chan.push(&mut source, INFO, false), Some(1));
        assert_eq!(chan.push(&mut source, INFO, false), Some(0));
        assert_eq!(bodies(&mut incoming), [1, 2]);
    }

    #[test]
    fn the_stream_ends_after_the_last_message_once_closed() {
        let (chan, mut incoming) = Channel::new(4, usize::MAX);
        chan.push(&mut msgs(7..8), INFO, false).unwrap();
        chan.close();
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(matches!(incoming.poll_recv(&mut cx), Poll::Ready(Some(m)) if m.body[0] == 7));
        assert!(matches!(incoming.poll_recv(&mut cx), Poll::Ready(None)));
    }

    #[test]
    fn a_dropped_consumer_refuses_pushes_and_releases_waiting_connections() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (chan, incoming) = Channel::new(1, usize::MAX);
        chan.push(&mut msgs(0..1), INFO, false).unwrap();
        let waiting = {
            let chan = Arc::clone(&chan);
            rt.spawn(async move { chan.wait_room(1).await })
        };
        drop(incoming);
        rt.block_on(waiting).unwrap();
        let pushed = chan.push(&mut msgs(1..2), INFO, false);
        assert_eq!(pushed, None);
    }

    #[test]
    fn a_pending_consumer_is_woken_by_a_push() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (chan, mut incoming) = Channel::new(4, usize::MAX);
        let consumer = rt.spawn(async move { incoming.recv().await.map(|m| m.body[0]) });
        // Let the consumer register its waker first.
        rt.block_on(tokio::task::yield_now());
        chan.push(&mut msgs(9..10), INFO, false).unwrap();
        assert_eq!(rt.block_on(consumer).unwrap(), Some(9));
    }

    #[test]
    fn a_push_stops_at_the_byte_bound_and_room_comes_back_as_bytes_leave() {
        let (chan, mut incoming) = Channel::new(100, 10);
        let mut source = sized(0..6, 4);
        // 4 + 4 fit in 10; a third of 4 would not.
        assert_eq!(chan.push(&mut source, INFO, false), Some(2));
        assert_eq!(chan.push(&mut source, INFO, false), Some(0));
        assert!(!chan.fits(4));
        assert_eq!(incoming.try_recv().unwrap().body[0], 0);
        assert!(chan.fits(4));
        assert_eq!(chan.push(&mut source, INFO, false), Some(1));
        assert_eq!(bodies(&mut incoming), [1, 2]);
        assert_eq!(chan.held_bytes.load(Acquire), 0);
    }

    #[test]
    fn a_message_larger_than_the_byte_bound_passes_alone() {
        let (chan, mut incoming) = Channel::new(100, 10);
        let mut source = frames([vec![0; 4], vec![1; 64], vec![2; 4]].into_iter());
        assert_eq!(chan.push(&mut source, INFO, false), Some(1));
        assert!(!chan.fits(64));
        assert_eq!(bodies(&mut incoming), [0]);
        assert!(chan.fits(64));
        // Alone: nothing else is taken with it.
        assert_eq!(chan.push(&mut source, INFO, false), Some(1));
        assert_eq!(bodies(&mut incoming), [1]);
        assert_eq!(chan.push(&mut source, INFO, false), Some(1));
    }

    #[test]
    fn a_forced_push_takes_everything_whatever_the_room() {
        let (chan, mut incoming) = Channel::new(2, 8);
        let mut source = sized(0..5, 4);
        assert_eq!(chan.push(&mut source, INFO, false), Some(2));
        assert_eq!(chan.push(&mut source, INFO, false), Some(0));
        assert_eq!(chan.push(&mut source, INFO, true), Some(3));
        assert_eq!(bodies(&mut incoming), [0, 1, 2, 3, 4]);
        assert_eq!(chan.held.load(Acquire), 0);
    }

    #[test]
    fn a_waiter_for_a_large_message_is_woken_once_nothing_is_held() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (chan, mut incoming) = Channel::new(100, 16);
        let mut source = sized(0..4, 4);
        assert_eq!(chan.push(&mut source, INFO, false), Some(4));
        let waiting = {
            let chan = Arc::clone(&chan);
            rt.spawn(async move { chan.wait_room(15).await })
        };
        rt.block_on(tokio::task::yield_now());
        assert!(!waiting.is_finished());
        assert_eq!(bodies(&mut incoming), [0, 1, 2, 3]);
        rt.block_on(waiting).unwrap();
    }
}
