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
//! `Conn::rx`, and tells the machine how it ended with a `Stop`.

use std::future::Future;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::runtime::RuntimeFlavor;
use tokio::sync::watch;

use super::channel::{Channel, Full};
use super::info::{ConnectionInfo, Message, Socket};
use super::inner::ReaderInner;
use super::io::{ReadHow, Watch, read, read_waiting, ready, watch};
use super::machine::{Machine, Stop};
use super::order::Progress;
use crate::error::{HandlerError, ReaderError};
use crate::frame::Receiver;
use crate::lifecycle::{Phase, panic_message};

/// The synchronous handler type.
pub(crate) type SyncHandler =
    dyn Fn(&[u8], &ConnectionInfo) -> Result<(), HandlerError> + Send + Sync;

/// What a connection task hands its frames to.
pub(crate) trait Deliver: Send + Sync + 'static {
    /// Hands over every complete frame `conn.rx()` holds, then returns
    /// `Ok`; `Err` ends the connection.
    fn deliver<'a>(
        &'a self,
        conn: &'a mut Conn,
    ) -> impl Future<Output = Result<(), Stop>> + Send + 'a;
}

/// The per-connection state delivery works on.
#[derive(Debug)]
pub(crate) struct Conn {
    /// The connection's decisions, and its receive buffer.
    pub(crate) machine: Machine,
    pub(crate) info: ConnectionInfo,
    pub(crate) inner: Arc<ReaderInner>,
    pub(crate) phase: watch::Receiver<Phase>,
    pub(crate) flavor: RuntimeFlavor,
    pub(crate) socket: Socket,
    /// `None` only while a delivery waits on the socket itself.
    pub(crate) watch: Option<Watch>,
    pub(crate) progress: Option<Arc<Progress>>,
    /// A read made by a delivery that ended its burst (end of stream, an
    /// error, or nothing to read), for the connection loop to act on.
    pub(crate) pending_read: Option<io::Result<usize>>,
    /// Set once the connection's task is gone while a dedicated thread
    /// serves it (see `SyncDelivery::dedicate`); one per connection, so a
    /// round allocates nothing for it.
    pub(crate) abandoned: Arc<AtomicBool>,
}

impl Conn {
    /// The receive buffer.
    pub(crate) fn rx(&mut self) -> &mut Receiver {
        self.machine.receiver_mut()
    }
}

/// Resolves once the phase is `Forced` (or its sender is gone).
pub(crate) async fn forced(phase: &mut watch::Receiver<Phase>) {
    loop {
        if *phase.borrow_and_update() == Phase::Forced {
            return;
        }
        if phase.changed().await.is_err() {
            return;
        }
    }
}

/// Counts and reports one handler outcome.
fn account(inner: &ReaderInner, result: Result<(), HandlerError>, received: &mut u64) {
    match result {
        Ok(()) => *received += 1,
        Err(e) => inner.report(ReaderError::Handler(e)),
    }
}

/// A handler call whose panic becomes a handler error.
fn call_sync(
    handler: &SyncHandler,
    body: &[u8],
    info: &ConnectionInfo,
) -> Result<(), HandlerError> {
    match catch_unwind(AssertUnwindSafe(|| handler(body, info))) {
        Ok(result) => result,
        Err(payload) => {
            Err(format!("handler panicked: {}", panic_message(payload.as_ref())).into())
        }
    }
}

/// The synchronous handler on borrowed bytes.
///
/// A handler may block, and must then hold back only its own connection
/// (which reads nothing more meanwhile: backpressure), never the others nor
/// a stop's deadline. So calls never run inline on a tokio worker: a worker
/// stuck inside a task also stops polling the IO driver and starves every
/// other connection, even with other workers idle.
///
/// A connection with frames to hand over takes one of the Reader's few
/// dedicated slots if one is free: it leaves the IO driver and moves to a
/// thread of the blocking pool, which calls the handler, reads, and waits
/// on the socket itself (woken by the kernel, not through the driver and a
/// worker) until it has been silent for [`LINGER`]; then it registers again
/// and waits in its task. A busy stream so pays no hand-off at all, and a
/// message that arrives while its connection lingers is read at once.
/// Without a free slot, a batch of calls (every complete frame of up to
/// [`BURST_READS`] reads) runs inside `block_in_place` on a multi-thread
/// runtime (which first hands the worker's other tasks, and the driver, to
/// another thread), or on the blocking pool on a current-thread runtime:
/// one thread hand-off per burst, not per message.
pub(crate) struct SyncDelivery {
    pub(crate) handler: Arc<SyncHandler>,
    /// The user promised the handler never blocks: call it inline.
    pub(crate) inline: bool,
    /// This Reader's connections on a thread of their own now.
    pub(crate) dedicated: Arc<AtomicUsize>,
    /// At most this many at once, per Reader (a slot is only a speed-up: a
    /// client holding them all slows other connections down to the burst
    /// path, and holds no more than this many threads).
    pub(crate) dedicated_max: usize,
}

/// How a blocking-pool task that served a connection ended without handing
/// it back: a panic of this crate's code (handler panics are caught) goes
/// on unwinding in the connection's task, where it is recorded; a cancelled
/// one means the runtime is shutting down: nothing left to serve.
fn joined(e: tokio::task::JoinError) -> Stop {
    if e.is_panic() {
        std::panic::resume_unwind(e.into_panic());
    }
    Stop::Quiet
}

/// Frames handed over between checks for a forced stop, a gone task and the
/// end of a slice.
const CHECK_EVERY: u32 = 256;

/// Reads a sync delivery may make in one burst before it hands control back
/// to the connection loop (which then checks deadlines and yields).
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

/// What a burst of sync delivery works on, movable to a blocking thread.
struct Burst {
    rx: Receiver,
    info: ConnectionInfo,
    inner: Arc<ReaderInner>,
    phase: watch::Receiver<Phase>,
    socket: Socket,
    watch: Option<Watch>,
    progress: Option<Arc<Progress>>,
    pending_read: Option<io::Result<usize>>,
    /// Set once the connection's task is gone (dropped with its runtime, or
    /// aborted): a dedicated thread then stops serving.
    abandoned: Arc<AtomicBool>,
}

/// Marks a burst abandoned when the task waiting for it is dropped before
/// the burst came back ([`disarm`](Self::disarm)ed once it did: the flag is
/// the connection's, for every round).
struct Abandon(Option<Arc<AtomicBool>>);

impl Abandon {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if let Some(flag) = &self.0 {
            flag.store(true, Relaxed);
        }
    }
}

/// A dedicated slot, given back when dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl SyncDelivery {
    /// Calls the handler for every complete frame and counts them; every
    /// [`CHECK_EVERY`] frames it stops early, leaving the rest buffered, on
    /// a forced stop, when the task is gone, or once `until` has passed.
    fn hand_over(
        handler: &SyncHandler,
        b: &mut Burst,
        until: Option<std::time::Instant>,
    ) -> Result<(), Stop> {
        let mut received = 0;
        let mut result = Ok(());
        for n in 1u32.. {
            if n % CHECK_EVERY == 0
                && (*b.phase.borrow() == Phase::Forced
                    || b.abandoned.load(Relaxed)
                    || until.is_some_and(|u| std::time::Instant::now() >= u))
            {
                break;
            }
            match b.rx.next_borrowed() {
                Ok(Some(body)) => {
                    account(&b.inner, call_sync(handler, body, &b.info), &mut received);
                }
                Ok(None) => break,
                Err(e) => {
                    result = Err(Stop::Protocol(e));
                    break;
                }
            }
        }
        if received > 0 {
            b.inner.counters.received.fetch_add(received, Relaxed);
        }
        if let Some(p) = &b.progress {
            p.set_handed_over(b.rx.handed_over());
        }
        result
    }

    /// Hands over every complete frame, then keeps reading and handing over
    /// while the socket has more (up to [`BURST_READS`] reads), so that one
    /// hand-off to a thread that may block serves a whole burst of traffic.
    fn run(handler: &SyncHandler, b: &mut Burst) -> Result<(), Stop> {
        for reads_left in (0..BURST_READS).rev() {
            Self::hand_over(handler, b, None)?;
            if reads_left == 0 || *b.phase.borrow() != Phase::Running {
                break;
            }
            match read(&b.socket, &mut b.rx, b.progress.as_ref(), ready(&b.watch)) {
                Ok(n) if n > 0 => {}
                other => {
                    b.pending_read = Some(other);
                    break;
                }
            }
        }
        Ok(())
    }

    /// On a thread of its own: hands over, reads, and waits on the socket
    /// itself (a blocking wait, woken by the kernel directly), until the
    /// connection has been silent for [`LINGER`], ends, reaches its
    /// inactivity deadline, has been served for a [`SLICE`], or the Reader
    /// stops; the connection's task takes over from there.
    fn run_dedicated(handler: &SyncHandler, b: &mut Burst) -> Result<(), Stop> {
        if crate::sys::set_waiting(&b.socket, Some(LINGER)).is_err() {
            return Self::run(handler, b);
        }
        let result = Self::serve_dedicated(handler, b);
        // Reads never wait without it either (they pass `MSG_DONTWAIT`).
        let _ = crate::sys::set_waiting(&b.socket, None);
        result
    }

    fn serve_dedicated(handler: &SyncHandler, b: &mut Burst) -> Result<(), Stop> {
        // The slice is on the real clock (a paused test clock would never
        // end it); deadlines are on tokio's, as the task's are.
        let until = std::time::Instant::now() + SLICE;
        loop {
            Self::hand_over(handler, b, Some(until))?;
            if *b.phase.borrow() != Phase::Running
                || b.abandoned.load(Relaxed)
                || std::time::Instant::now() >= until
            {
                return Ok(());
            }
            match read(&b.socket, &mut b.rx, b.progress.as_ref(), ReadHow::Now) {
                Ok(n) if n > 0 => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => {
                    b.pending_read = Some(other);
                    return Ok(());
                }
            }
            let now = tokio::time::Instant::now().into_std();
            b.rx.on_idle(now);
            let due = b.rx.poll_timeout().is_some_and(|at| at <= now + LINGER);
            // A deadline within the linger is left to the task's timer.
            if due || b.rx.is_released() {
                return Ok(());
            }
            // The wait is the read itself (see `sys::recv_into_spare_waiting`).
            match read_waiting(&b.socket, &mut b.rx, b.progress.as_ref()) {
                Ok(n) if n > 0 => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => {
                    b.pending_read = Some(other);
                    return Ok(());
                }
            }
        }
    }

    /// Takes a dedicated slot if one is free.
    fn slot(&self) -> Option<Slot> {
        let taken = self.dedicated.fetch_add(1, Relaxed);
        let slot = Slot(Arc::clone(&self.dedicated));
        (taken < self.dedicated_max).then_some(slot)
    }

    /// Serves the connection on a blocking-pool thread while it is busy
    /// (see [`run_dedicated`](Self::run_dedicated)), out of the IO driver
    /// meanwhile.
    async fn dedicate(&self, conn: &mut Conn, slot: Slot) -> Result<(), Stop> {
        let mut burst = Self::lend(conn);
        // Leaves the driver: the thread waits on the socket itself.
        burst.watch = None;
        // A runtime that shuts down waits for its blocking threads: this one
        // must not keep serving a busy peer after its task is gone.
        let abandon = Abandon(Some(Arc::clone(&burst.abandoned)));
        let handler = Arc::clone(&self.handler);
        let task = tokio::task::spawn_blocking(move || {
            let result = Self::run_dedicated(&*handler, &mut burst);
            drop(slot);
            (burst, result)
        });
        let joined_task = task.await;
        abandon.disarm();
        let (burst, result) = match joined_task {
            Ok(done) => done,
            Err(e) => return Err(joined(e)),
        };
        let registered = watch(&burst.socket);
        // The receiver comes back first: an error is then reported with
        // where in a frame the connection was.
        Self::give_back(conn, burst);
        conn.watch = Some(registered.map_err(Stop::Read)?);
        result
    }

    fn lend(conn: &mut Conn) -> Burst {
        Burst {
            rx: std::mem::replace(conn.rx(), Receiver::placeholder()),
            info: conn.info,
            inner: Arc::clone(&conn.inner),
            phase: conn.phase.clone(),
            socket: Arc::clone(&conn.socket),
            watch: conn.watch.take(),
            progress: conn.progress.clone(),
            pending_read: None,
            abandoned: Arc::clone(&conn.abandoned),
        }
    }

    fn give_back(conn: &mut Conn, b: Burst) {
        *conn.rx() = b.rx;
        conn.watch = b.watch;
        conn.pending_read = b.pending_read;
    }
}

impl Deliver for SyncDelivery {
    /// Hands over every complete frame before it returns: a round that
    /// stopped early (the end of a dedicated slice) is followed by another,
    /// so the connection never reads on (and finds the end of the stream)
    /// with messages still buffered. Only a forced stop, or a task given
    /// up, leaves them (to be discarded).
    async fn deliver(&self, conn: &mut Conn) -> Result<(), Stop> {
        loop {
            match conn.rx().ready() {
                Ok(false) => return Ok(()),
                Ok(true) => {}
                Err(e) => return Err(Stop::Protocol(e)),
            }
            if *conn.phase.borrow() == Phase::Forced {
                return Ok(());
            }
            self.round(conn).await?;
        }
    }
}

impl SyncDelivery {
    /// One round of handing over: on a dedicated thread if a slot is free,
    /// else one burst.
    async fn round(&self, conn: &mut Conn) -> Result<(), Stop> {
        // Only while running: a drain or a stop is the task's to handle.
        if !self.inline && *conn.phase.borrow() == Phase::Running {
            if let Some(slot) = self.slot() {
                return self.dedicate(conn, slot).await;
            }
        }
        let mut burst = Self::lend(conn);
        let result = match conn.flavor {
            _ if self.inline => Self::run(&*self.handler, &mut burst),
            RuntimeFlavor::CurrentThread => {
                let handler = Arc::clone(&self.handler);
                let task = tokio::task::spawn_blocking(move || {
                    let result = Self::run(&*handler, &mut burst);
                    (burst, result)
                });
                match task.await {
                    Ok((back, result)) => {
                        burst = back;
                        result
                    }
                    Err(e) => return Err(joined(e)),
                }
            }
            _ => tokio::task::block_in_place(|| Self::run(&*self.handler, &mut burst)),
        };
        Self::give_back(conn, burst);
        result
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
    async fn deliver(&self, conn: &mut Conn) -> Result<(), Stop> {
        loop {
            let body = match conn.rx().next_owned() {
                Ok(Some(body)) => body,
                Ok(None) => return Ok(()),
                Err(e) => return Err(Stop::Protocol(e)),
            };
            let pending = std::pin::pin!((self.handler)(Message {
                body,
                connection: conn.info,
            }));
            let fut = CatchPanic { fut: pending };
            let result = tokio::select! {
                biased;
                () = forced(&mut conn.phase) => {
                    // Its call is dropped unfinished: not handled.
                    conn.inner.counters.unhandled.fetch_add(1, Relaxed);
                    return Err(Stop::Quiet);
                }
                r = fut => r,
            };
            let mut received = 0;
            account(&conn.inner, result, &mut received);
            if received > 0 {
                conn.inner.counters.received.fetch_add(received, Relaxed);
            }
        }
    }
}

/// A pinned future whose panic becomes a handler error.
struct CatchPanic<'a, Fut> {
    fut: Pin<&'a mut Fut>,
}

impl<Fut: Future<Output = Result<(), HandlerError>>> Future for CatchPanic<'_, Fut> {
    type Output = Result<(), HandlerError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.fut.as_mut();
        match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(p) => p,
            Err(payload) => Poll::Ready(Err(format!(
                "handler panicked: {}",
                panic_message(payload.as_ref())
            )
            .into())),
        }
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
    async fn deliver(&self, conn: &mut Conn) -> Result<(), Stop> {
        loop {
            let need = match conn.rx().next_len() {
                Ok(None) => return Ok(()),
                Ok(Some(len)) => len,
                Err(e) => return Err(Stop::Protocol(e)),
            };
            let forced_now = *conn.phase.borrow() == Phase::Forced;
            // Frames are taken from the buffer only as the push has room
            // for them: a cancelled wait for room loses nothing.
            let mut broken = None;
            let info = conn.info;
            let rx = conn.rx();
            let next = |room: usize| match rx.next_len() {
                Ok(Some(len)) if len <= room => match rx.next_owned() {
                    Ok(Some(body)) => Some(Message {
                        body,
                        connection: info,
                    }),
                    _ => None,
                },
                Ok(_) => None,
                Err(e) => {
                    broken = Some(e);
                    None
                }
            };
            let pushed = match forced_now {
                true => self.chan.push_all(next),
                false => self.chan.push_with(next),
            };
            let wait = match pushed {
                Ok(n) => {
                    conn.inner.counters.received.fetch_add(n as u64, Relaxed);
                    if let Some(e) = broken {
                        return Err(Stop::Protocol(e));
                    }
                    // Nothing fitted the bytes left: wait as for no room.
                    n == 0 && !forced_now
                }
                Err(Full::NoRoom) => true,
                // The consumer dropped `Incoming`: nobody takes messages.
                Err(Full::Abandoned) => return Err(Stop::Quiet),
            };
            if wait {
                // A forced stop ends the wait: the next push takes all.
                tokio::select! {
                    biased;
                    () = forced(&mut conn.phase) => {}
                    () = self.chan.wait_room(need) => {}
                }
            }
        }
    }
}

impl Drop for ChannelDelivery {
    fn drop(&mut self) {
        // Dropped with the last connection task: the stream ends once its
        // consumer has taken what is queued.
        self.chan.close();
    }
}
