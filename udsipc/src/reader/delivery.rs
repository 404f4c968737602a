//! The three ways messages leave a connection, behind one trait: a
//! synchronous handler on borrowed bytes, an async handler on owned bytes,
//! and a bounded stream ([`Incoming`]).
//!
//! Each way applies backpressure the same way: the connection reads nothing
//! more until what it holds has been handed over, so a slow consumer fills
//! the socket, then the Writer's queue, then the producers see `BufferFull`
//! or wait.
//!
//! This module owns handing messages over and counting them; the
//! connection's decisions (reading, deadlines, how it ends) belong to
//! `machine`, and its receive buffer too: a delivery takes frames from
//! `Machine::rx`, and tells the machine how it ended with a `Stop`.

use std::any::Any;
use std::future::Future;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::runtime::RuntimeFlavor;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::channel::Channel;
use super::connection::{Conn, Deliver, begin_drain, now};
use super::info::{ConnectionInfo, Message};
use super::inner::ReaderInner;
use super::machine::{Action, Stop};
use crate::error::{HandlerError, ReaderError};
use crate::lifecycle::{Phase, panic_message};
use crate::runtime::OnCancel;

/// The synchronous handler type.
pub(crate) type SyncHandler =
    dyn Fn(&[u8], &ConnectionInfo) -> Result<(), HandlerError> + Send + Sync;

/// Counts and reports one handler outcome: 1 if it handled the message.
fn account(inner: &ReaderInner, result: Result<(), HandlerError>) -> u64 {
    match result {
        Ok(()) => 1,
        Err(e) => {
            inner.report(ReaderError::Handler(e));
            0
        }
    }
}

/// A handler's panic, as a handler error.
fn panicked(payload: Box<dyn Any + Send>) -> HandlerError {
    format!("handler panicked: {}", panic_message(payload.as_ref())).into()
}

/// The synchronous handler on borrowed bytes.
///
/// A handler may block, and must then hold back only its own connection
/// (which reads nothing more meanwhile: backpressure), never the others nor
/// a stop's deadline. So calls never run inline on a tokio worker: a worker
/// stuck inside a task also stops polling the IO driver and starves every
/// other connection, even with other workers idle.
///
/// Wherever the handler runs, the connection goes with it and is driven
/// there as its task drives it (the machine decides; this only hands frames
/// over, reads and waits), so one thread hand-off serves a whole burst of
/// traffic, not one message. A connection with frames to hand over takes
/// one of the Reader's few dedicated slots if one is free: it leaves the IO
/// driver and moves to a thread of the blocking pool, which also waits on
/// the socket itself (woken by the kernel, not through the driver and a
/// worker) until it has been silent for [`LINGER`]; then it registers again
/// and waits in its task. A busy stream so pays no hand-off at all, and a
/// message that arrives while its connection lingers is read at once.
/// Without a free slot, up to [`BURST_READS`] reads run inside
/// `block_in_place` on a multi-thread runtime (which first hands the
/// worker's other tasks, and the driver, to another thread), or on the
/// blocking pool on a current-thread runtime.
pub(crate) struct SyncDelivery {
    pub(crate) handler: Arc<SyncHandler>,
    /// The slots of this Reader's connections on a thread of their own: at
    /// most this many at once, per Reader (a slot is only a speed-up: a
    /// client holding them all slows other connections down to the burst
    /// path, and holds no more than this many threads).
    pub(crate) dedicated: Arc<Semaphore>,
}

/// Frames handed over between checks for a forced stop, a gone task and the
/// end of a slice.
const CHECK_EVERY: u32 = 256;

/// Reads a sync delivery may make in one burst before it hands the
/// connection back to its task (which then waits, and yields).
const BURST_READS: usize = 64;

/// A dedicated connection goes back to its task once it has had nothing to
/// read for this long (a stream of 1,000 messages a second or more stays).
/// The wait is the socket's receive timeout, which the kernel rounds up to
/// its tick (up to 10 ms): an inactivity deadline that falls within that
/// tick is judged up to a tick late.
pub(crate) const LINGER: Duration = Duration::from_millis(2);

/// A dedicated connection also goes back to its task after serving this
/// long without a pause, and queues for a thread again: a busy stream never
/// keeps a thread of a small blocking pool from the other connections.
pub(crate) const SLICE: Duration = Duration::from_millis(10);

impl SyncDelivery {
    /// Calls the handler for every complete frame and counts them; every
    /// [`CHECK_EVERY`] frames it stops early, leaving the rest buffered, on
    /// a forced stop, when the task is gone, or once `until` has passed.
    fn hand_over(
        handler: &SyncHandler,
        conn: &mut Conn,
        until: Option<Instant>,
    ) -> Result<(), Stop> {
        let (mut n, mut received) = (0u32, 0);
        let result = loop {
            n += 1;
            if n % CHECK_EVERY == 0
                && (conn.inner.phase.get() == Phase::Forced || !conn.stays(until))
            {
                break Ok(());
            }
            match conn.machine.rx.next_borrowed() {
                Ok(Some(body)) => {
                    // Its panic becomes a handler error.
                    let call = catch_unwind(AssertUnwindSafe(|| handler(body, &conn.info)));
                    received += account(&conn.inner, call.unwrap_or_else(|p| Err(panicked(p))));
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(Stop::Protocol(e)),
            }
        };
        if received > 0 {
            conn.inner.counters.received.fetch_add(received, Relaxed);
        }
        result
    }

    /// Drives the connection's machine on this thread, as its task would:
    /// hands frames over, makes up to `reads` reads, and on a dedicated
    /// thread (`until` its slice's end) waits on the socket itself when
    /// there is nothing to read. Gives the connection back to its task for
    /// anything else, once the Reader stops running, or with frames left
    /// when a hand-over was cut short.
    fn drive(handler: &SyncHandler, conn: &mut Conn, mut reads: usize, until: Option<Instant>) {
        loop {
            match conn.step() {
                Action::Deliver | Action::WaitHandler => {
                    let result = Self::hand_over(handler, conn, until);
                    if result.is_ok() && matches!(conn.machine.rx.next_len(), Ok(Some(_))) {
                        return;
                    }
                    conn.machine.handle_delivered(result);
                }
                Action::ShutdownRead => begin_drain(&conn.socket),
                Action::Read(via) if reads > 0 && conn.running(until) => {
                    reads -= 1;
                    conn.read(via);
                }
                Action::Wait if until.is_some() && conn.running(until) && Self::linger(conn) => {}
                _ => return,
            }
        }
    }

    /// Waits on the socket itself for up to [`LINGER`] (the read is the
    /// wait, see `sys::recv_into_spare`); `false` to go back to the
    /// task instead: a deadline within the linger is left to its timer, and
    /// a released buffer to its read.
    fn linger(conn: &mut Conn) -> bool {
        let now = now();
        let due = conn
            .machine
            .poll_timeout()
            .is_some_and(|at| at <= now + LINGER);
        if due || conn.machine.rx.is_released() {
            return false;
        }
        match conn.read_waiting() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
            got => {
                conn.machine.handle_readable(got.map(drop));
                true
            }
        }
    }

    /// Serves the connection on a blocking-pool thread: with a dedicated
    /// slot while it is busy, for a [`SLICE`] at most, out of the IO driver
    /// meanwhile; without, for one burst of [`BURST_READS`] reads.
    async fn on_pool(&self, mut conn: Conn, slot: Option<OwnedSemaphorePermit>) -> Option<Conn> {
        if slot.is_some() {
            // Leaves the driver: the thread waits on the socket itself.
            conn.watch = None;
        }
        // A runtime that shuts down waits for its blocking threads: this one
        // must not keep serving a busy peer after its task is gone.
        let flag = Arc::clone(&conn.abandoned);
        let abandon = OnCancel::new(move || flag.store(true, Relaxed));
        let handler = Arc::clone(&self.handler);
        let task = tokio::task::spawn_blocking(move || {
            if slot.is_some() && crate::sys::set_waiting(&conn.socket, Some(LINGER)).is_ok() {
                // The slice is on the real clock (a paused test clock would
                // never end it); deadlines are on tokio's, as the task's are.
                let until = Some(Instant::now() + SLICE);
                Self::drive(&*handler, &mut conn, usize::MAX, until);
                // Reads never wait without it either (they pass `MSG_DONTWAIT`).
                let _ = crate::sys::set_waiting(&conn.socket, None);
            } else {
                Self::drive(&*handler, &mut conn, BURST_READS, None);
            }
            drop(slot);
            conn
        });
        let done = task.await;
        abandon.disarm();
        // A panic of this crate's code (handler panics are caught) goes on
        // unwinding in the connection's task, where it is recorded; a
        // cancelled task means the runtime is shutting down: nothing left
        // to serve.
        let mut conn = match done {
            Ok(conn) => conn,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => return None,
        };
        if conn.watch.is_none() {
            match crate::sys::register(Arc::clone(&conn.socket), tokio::io::Interest::READABLE) {
                Ok(registered) => conn.watch = Some(registered),
                Err(e) => conn.machine.handle_delivered(Err(Stop::Read(e))),
            }
        }
        Some(conn)
    }
}

impl Deliver for SyncDelivery {
    /// Hands over every complete frame before it returns: a round that
    /// stopped early (the end of a dedicated slice) is followed by another,
    /// so the connection never reads on (and finds the end of the stream)
    /// with messages still buffered. Only a forced stop, or a task given
    /// up, leaves them (to be discarded).
    async fn deliver(&self, mut conn: Conn) -> Option<Conn> {
        while conn.machine.delivering() && conn.inner.phase.get() != Phase::Forced {
            // The user promised the handler never blocks: call it inline.
            if !conn.inner.options.handler_may_block {
                Self::drive(&*self.handler, &mut conn, BURST_READS, None);
                continue;
            }
            // A slot only while running: a drain or a stop is the task's.
            let running = conn.inner.phase.get() == Phase::Running;
            let slot = running
                .then(|| Arc::clone(&self.dedicated).try_acquire_owned().ok())
                .flatten();
            let flavor = tokio::runtime::Handle::current().runtime_flavor();
            if slot.is_some() || flavor == RuntimeFlavor::CurrentThread {
                conn = self.on_pool(conn, slot).await?;
            } else {
                let handler = &*self.handler;
                tokio::task::block_in_place(|| Self::drive(handler, &mut conn, BURST_READS, None));
            }
        }
        // Cut short by a forced stop: what is left is discarded.
        conn.machine.handle_delivered(Ok(()));
        Some(conn)
    }
}

/// The async handler on owned bytes: one message at a time per connection,
/// and no reading while its future is pending.
pub(crate) struct AsyncDelivery<F> {
    pub(crate) handler: F,
}

impl<F, Fut> Deliver for AsyncDelivery<F>
where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    async fn deliver(&self, mut conn: Conn) -> Option<Conn> {
        let result = async {
            loop {
                let body = match conn.machine.rx.next_owned() {
                    Ok(Some(body)) => body,
                    Ok(None) => return Ok(()),
                    Err(e) => return Err(Stop::Protocol(e)),
                };
                let mut pending = std::pin::pin!((self.handler)(Message {
                    body,
                    connection: conn.info,
                }));
                // Its panic becomes a handler error.
                let call = std::future::poll_fn(|cx| {
                    catch_unwind(AssertUnwindSafe(|| pending.as_mut().poll(cx)))
                        .unwrap_or_else(|p| Poll::Ready(Err(panicked(p))))
                });
                let result = tokio::select! {
                    biased;
                    _ = conn.phase.wait_for(|p| *p == Phase::Forced) => {
                        // Its call is dropped unfinished: not handled.
                        conn.inner.counters.unhandled.fetch_add(1, Relaxed);
                        return Err(Stop::Quiet);
                    }
                    r = call => r,
                };
                let handled = account(&conn.inner, result);
                conn.inner.counters.received.fetch_add(handled, Relaxed);
            }
        }
        .await;
        conn.machine.handle_delivered(result);
        Some(conn)
    }
}

/// The bounded stream: every frame of a read that fits goes into the
/// channel in one push; the rest waits for room. On a forced stop, what is
/// left in the buffer is pushed whatever the room: it was read off the
/// socket (the Writer may count it delivered), so it is handed out, not
/// dropped; the connection then reads nothing more.
pub(crate) struct ChannelDelivery {
    pub(crate) chan: Arc<Channel>,
}

impl Deliver for ChannelDelivery {
    async fn deliver(&self, mut conn: Conn) -> Option<Conn> {
        let result = async {
            loop {
                let need = match conn.machine.rx.next_len() {
                    Ok(None) => return Ok(()),
                    Ok(Some(len)) => len,
                    Err(e) => return Err(Stop::Protocol(e)),
                };
                let forced_now = *conn.phase.borrow() == Phase::Forced;
                // Frames are taken from the buffer only as the push has room
                // for them: a cancelled wait for room loses nothing.
                match self.chan.push(&mut conn.machine.rx, conn.info, forced_now) {
                    // No room for the next frame: wait.
                    Some(0) => {}
                    // On to the next frame (or to what broke the framing).
                    Some(n) => {
                        conn.inner.counters.received.fetch_add(n as u64, Relaxed);
                        continue;
                    }
                    // The consumer dropped `Incoming`: nobody takes messages.
                    None => return Err(Stop::Quiet),
                }
                // A forced stop ends the wait: the next push takes all.
                tokio::select! {
                    biased;
                    _ = conn.phase.wait_for(|p| *p == Phase::Forced) => {}
                    () = self.chan.wait_room(need) => {}
                }
            }
        }
        .await;
        conn.machine.handle_delivered(result);
        Some(conn)
    }
}

impl Drop for ChannelDelivery {
    fn drop(&mut self) {
        // Dropped with the last connection task: the stream ends once its
        // consumer has taken what is queued.
        self.chan.close();
    }
}
