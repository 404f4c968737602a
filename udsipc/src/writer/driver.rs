//! The writer task: a thin tokio driver around the state machine. It dials,
//! writes, samples the socket, waits for readiness, messages, phase changes
//! and the machine's timer, and publishes counters and reports. Every
//! decision is the machine's.
//!
//! What the writer task and a producer writing by itself share under the
//! engine lock (`Engine`): the machine and the open connection.

use std::io::{self, IoSlice};
use std::os::unix::net::UnixStream as StdStream;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::UnixStream;
use tokio::time::Instant;

use super::WriterInner;
use super::batch::IOV_PER_CALL;
use super::machine::{Action, Machine, Sample, Wait};
use crate::lifecycle::Phase;
use crate::socket;

/// Connects to the reader: the one place the Writer dials.
async fn connect(inner: &WriterInner) -> io::Result<Conn> {
    let stream = tokio::time::timeout(
        inner.opts.dial_timeout,
        socket::connect(&inner.opts.cfg.path),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "dial timeout"))??;
    if inner.opts.write_buffer_size > 0 {
        // As in Go, a refused buffer size is not a reason to fail.
        let _ = socket::set_send_buffer(&stream, inner.opts.write_buffer_size);
    }
    Conn::new(stream)
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

fn lock(inner: &WriterInner) -> std::sync::MutexGuard<'_, Engine> {
    // A panic while acting leaves the machine as it was at its last
    // complete step: poisoning is ignored (the task's guard accounts).
    inner.engine.lock().unwrap_or_else(|p| p.into_inner())
}

/// Called by a producer that just queued a message into an empty queue:
/// when nothing else holds the machine and it allows a direct write
/// ([`Machine::take_direct`]), writes what is queued on this thread, now,
/// instead of waking the task to do it. Never blocks and never calls the
/// error callback. Returns whether the task must still be woken (the
/// machine's [`Machine::wake_task`]).
pub(super) fn write_now(inner: &WriterInner) -> bool {
    if inner.phase.get() != Phase::Running {
        return true;
    }
    let Ok(mut guard) = inner.engine.try_lock() else {
        return true;
    };
    let Engine { m, conn } = &mut *guard;
    let Some(conn) = conn.as_ref() else {
        return true;
    };
    if !m.take_direct(now()) {
        return true;
    }
    inner.queue.take_all(m.pending_mut());
    // A test's panic request is left to the task (the panic must happen
    // there, not in the producer's thread).
    #[cfg(test)]
    if super::tests::panic_requested(m.pending_mut()) {
        return true;
    }
    let last = loop {
        match m.poll_action(now()) {
            Action::Write => write_once(m, conn),
            Action::Sample => m.handle_sample(now(), sample(conn.socket(), false)),
            last => break last,
        }
    };
    publish_counters(inner, m);
    m.wake_task(last)
}

/// Runs the Writer until its machine is done.
pub(super) async fn run(inner: Arc<WriterInner>) {
    let mut phase = inner.phase.subscribe();
    // Counts and logs what is left if this future is dropped unfinished (a
    // runtime shutting down) or unwinds (a panic).
    let mut guard = Leftovers {
        inner: &inner,
        finished: false,
    };
    let mut seen = Phase::Running;
    loop {
        // Act until the machine has to wait (or dial), holding the engine.
        let next = {
            let mut e = lock(&inner);
            act(&inner, &mut e, &mut phase, &mut seen)
        };
        match next {
            Next::Dial => {
                #[cfg(test)]
                super::tests::dial_gate(&inner.opts.cfg.path).await;
                let dial = connect(&inner);
                tokio::pin!(dial);
                // A drain lets the dial finish (it is bounded by the dial
                // timeout); only a forced stop abandons it.
                let dialed = loop {
                    tokio::select! {
                        biased;
                        _ = phase.changed() => {
                            if *phase.borrow() == Phase::Forced {
                                break None;
                            }
                        }
                        r = &mut dial => break Some(r),
                    }
                };
                let mut e = lock(&inner);
                let e = &mut *e;
                match dialed {
                    Some(Ok(c)) => {
                        e.conn = Some(c);
                        e.m.handle_connected(now());
                    }
                    Some(Err(err)) => e.m.handle_dial_failed(now(), err),
                    None => apply_phase(&inner, &mut e.m, Phase::Forced),
                }
            }
            Next::Wait(w, timer, conn) => {
                let woke = wait(&inner, &mut phase, conn.as_ref(), w, timer).await;
                let mut e = lock(&inner);
                let e = &mut *e;
                match woke {
                    Woke::Writable if w.writable => e.m.handle_writable(now()),
                    // The reader read: look how far (the readiness was
                    // cleared before this sample, so a read after it wakes
                    // the next wait).
                    Woke::Writable | Woke::HangUp => {
                        if let Some(c) = e.conn.as_ref() {
                            e.m.handle_sample(now(), sample(c.socket(), woke == Woke::HangUp));
                        }
                    }
                    Woke::Other => {}
                }
            }
            Next::Done => break,
        }
    }
    let mut e = lock(&inner);
    publish(&inner, &mut e.m);
    if e.m.was_forced() {
        inner.forced.store(true, Relaxed);
    }
    let s = e.m.stats();
    if s.discarded > 0 || s.unconfirmed > 0 {
        tracing::warn!(
            discarded = s.discarded,
            unconfirmed = s.unconfirmed,
            path = %inner.opts.cfg.path.display(),
            "udsipc writer finished with messages it could not deliver"
        );
    }
    e.conn = None;
    drop(e);
    guard.finished = true;
}

/// What the task does once it lets go of the engine.
enum Next {
    Dial,
    /// Wait for this, until the timer, watching this connection.
    Wait(Wait, Option<Instant>, Option<Conn>),
    Done,
}

/// Applies phase changes, takes messages and does every action that needs
/// no waiting; returns the first that does.
fn act(
    inner: &WriterInner,
    e: &mut Engine,
    phase: &mut tokio::sync::watch::Receiver<Phase>,
    seen: &mut Phase,
) -> Next {
    let m = &mut e.m;
    loop {
        // A phase change seen while busy (e.g. writing) is applied here.
        let current = *phase.borrow_and_update();
        if current != *seen {
            apply_phase(inner, m, current);
            *seen = current;
        }
        if m.wants_messages() {
            inner.queue.take_all(m.pending_mut());
        }
        #[cfg(test)]
        super::tests::maybe_panic(m.pending_mut());
        let action = m.poll_action(now());
        publish(inner, m);
        match action {
            Action::Dial => return Next::Dial,
            // The machine writes and samples only while connected, which
            // it learns from this task with the connection in hand.
            Action::Write => write_once(m, e.conn.as_ref().expect("connected")),
            Action::Sample => m.handle_sample(
                now(),
                sample(e.conn.as_ref().expect("connected").socket(), false),
            ),
            Action::Close => {
                e.conn = None;
                m.handle_closed(now());
            }
            Action::Wait(w) => {
                let (timer, room) = m.arm(w);
                if let Some(c) = e.conn.as_mut() {
                    if room {
                        c.watch_room();
                    } else {
                        c.room = None;
                    }
                }
                return Next::Wait(w, timer.map(Instant::from_std), e.conn.clone());
            }
            Action::Done => return Next::Done,
        }
    }
}

/// One `writev` of what the machine offers, and its outcome.
fn write_once(m: &mut Machine, c: &Conn) {
    let result = {
        let mut iov = [IoSlice::new(&[]); IOV_PER_CALL];
        let n = m.iovecs(&mut iov);
        send_vectored(c.socket(), &iov[..n])
    };
    let result = result.and_then(|n| match n {
        0 => Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "socket accepted no bytes",
        )),
        n => Ok(n),
    });
    match result {
        Ok(n) => m.handle_written(now(), n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => m.handle_would_block(now()),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
        // What the reader left unread tells a reader that shut its side
        // (EPIPE, maybe to read on) from one that read everything.
        Err(e) => m.handle_write_error(now(), e, sample(c.socket(), false)),
    }
}

/// Applies a phase change to the machine.
fn apply_phase(inner: &WriterInner, m: &mut Machine, phase: Phase) {
    match phase {
        Phase::Running => {}
        Phase::Draining => {
            // The queue is closed: this takes everything that will ever come.
            inner.queue.take_all(m.pending_mut());
            let deadline =
                (*inner.deadline.lock().unwrap_or_else(|p| p.into_inner())).unwrap_or_else(now);
            m.handle_stop(now(), deadline);
        }
        Phase::Forced => {
            // A force may come before the drain was seen (a stop cancelled
            // at once): the queue is closed either way, so take what it
            // still holds, or the discard would miss it.
            inner.queue.close();
            inner.queue.take_all(m.pending_mut());
            m.handle_force(now());
        }
    }
}

/// Copies the machine's counters, reports and freed queue slots out.
fn publish(inner: &WriterInner, m: &mut Machine) {
    publish_counters(inner, m);
    while let Some(error) = m.poll_report() {
        inner.report(error);
    }
}

/// Copies the machine's counters and freed queue slots out.
fn publish_counters(inner: &WriterInner, m: &mut Machine) {
    let (s, c) = (m.stats(), &inner.counters);
    for (counter, value) in [
        (&c.sent, s.sent),
        (&c.delivered, s.delivered),
        (&c.failed, s.failed),
        (&c.unconfirmed, s.unconfirmed),
        (&c.discarded, s.discarded),
        (&c.retried, s.retried),
        (&c.reconnects, s.reconnects),
        (&c.backpressure, s.backpressure),
        (&c.refused, s.refused),
    ] {
        counter.store(value, Relaxed);
    }
    let (n, bytes) = m.take_freed();
    inner.queue.complete(n, bytes);
}

/// How often room is polled when it could not be registered for (out of
/// descriptors).
const ROOM_POLL: Duration = Duration::from_millis(1);

#[derive(PartialEq)]
enum Woke {
    Writable,
    HangUp,
    Other,
}

/// Waits for whatever `w` and the timer allow.
async fn wait(
    inner: &WriterInner,
    phase: &mut tokio::sync::watch::Receiver<Phase>,
    conn: Option<&Conn>,
    w: Wait,
    timer: Option<Instant>,
) -> Woke {
    let read = conn.map(|c| &c.read);
    let room = conn.and_then(|c| c.room.as_ref());
    let sleep = async {
        match timer {
            Some(t) => tokio::time::sleep_until(t).await,
            None => std::future::pending().await,
        }
    };
    let writable = async {
        match (read, room) {
            // Readiness is cleared before the write it allows: a write that
            // finds the socket full again then waits for the next event.
            // The same event (the socket's room changed) is how the reader's
            // reads show, which a wait on the reader watches for.
            (_, Some(r)) if w.writable => r.writable().await.map(|mut g| g.clear_ready()),
            (_, Some(r)) if w.read => {
                let mut g = r.writable().await?;
                if g.ready().is_write_closed() {
                    // Stays set once seen (a peer that shut down without
                    // closing): no more reads to wait for; the timer and
                    // the hang-up watch take over, without a busy loop.
                    std::future::pending::<()>().await;
                }
                g.clear_ready();
                Ok(())
            }
            (Some(_), None) if w.writable => {
                tokio::time::sleep(ROOM_POLL).await;
                Ok(())
            }
            _ => std::future::pending().await,
        }
    };
    let hangup = async {
        match read {
            Some(r) if w.hangup => watch_hangup(r).await,
            _ => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        _ = phase.changed() => Woke::Other,
        r = writable => match r {
            Ok(()) => Woke::Writable,
            Err(_) => Woke::HangUp,
        },
        h = hangup => h,
        () = inner.queue.data_ready.notified(), if w.messages => Woke::Other,
        () = sleep => Woke::Other,
    }
}

/// Resolves when the reader hangs up. Our readers never write, so the read
/// side only ever shows the end of the connection; stray bytes are read and
/// dropped.
async fn watch_hangup(read: &AsyncFd<StdStream>) -> Woke {
    let mut scratch = [0u8; 512];
    loop {
        let Ok(mut guard) = read.readable().await else {
            return Woke::HangUp;
        };
        let ended = guard.ready().is_read_closed()
            || match guard.try_io(|r| io::Read::read(&mut r.get_ref(), &mut scratch)) {
                Ok(Ok(n)) => n == 0,
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => false,
                Ok(Err(_)) => return Woke::HangUp,
                // Nothing to read: readiness cleared, wait for the next event.
                Err(_would_block) => false,
            };
        // The read side ended: a hang-up, unless only the peer's writing
        // half was shut down (then the connection still takes bytes: stop
        // watching).
        if ended && crate::sys::hung_up(read.get_ref()) {
            return Woke::HangUp;
        } else if ended {
            std::future::pending::<()>().await;
        }
    }
}

/// Reads the unread count, then the pending error (this order: a reader
/// that closes sets the error before its queue is purged, so an unread
/// count of 0 caused by a purge always comes with the error).
fn sample(stream: &StdStream, hangup: bool) -> Sample {
    let unread = crate::sys::peer_unread_bytes(stream).ok();
    let error = stream.take_error().ok().flatten();
    Sample {
        unread,
        error,
        hangup,
    }
}

/// `MSG_NOSIGNAL` where the system has it; macOS has not (a host process
/// there must ignore `SIGPIPE`, as Rust binaries do).
#[cfg(not(target_vendor = "apple"))]
const SEND_FLAGS: nix::sys::socket::MsgFlags =
    nix::sys::socket::MsgFlags::MSG_NOSIGNAL.union(nix::sys::socket::MsgFlags::MSG_DONTWAIT);
#[cfg(target_vendor = "apple")]
const SEND_FLAGS: nix::sys::socket::MsgFlags = nix::sys::socket::MsgFlags::MSG_DONTWAIT;

/// `writev` without `SIGPIPE`: `sendmsg` with `MSG_NOSIGNAL`, so a closed
/// peer is an `EPIPE` error even in a host process that does not ignore the
/// signal (Rust binaries do; C programs embedding this library may not).
fn send_vectored(socket: &StdStream, iov: &[IoSlice<'_>]) -> io::Result<usize> {
    use nix::sys::socket::{UnixAddr, sendmsg};
    use std::os::fd::AsRawFd;
    sendmsg::<UnixAddr>(socket.as_raw_fd(), iov, &[], SEND_FLAGS, None).map_err(io::Error::from)
}

/// On an unfinished end of the task (its future dropped by a runtime that
/// shuts down, or a panic), closes the queue and counts what it held as
/// discarded, so no loss is silent.
struct Leftovers<'a> {
    inner: &'a WriterInner,
    finished: bool,
}

impl Drop for Leftovers<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // No callbacks here (this may run while unwinding): counters only.
        let mut e = lock(self.inner);
        e.m.handle_force(now());
        e.conn = None;
        // Every counter the force settled (delivered too: a run read in
        // part is counted then), and the queue slots it freed.
        publish_counters(self.inner, &mut e.m);
        let stats = e.m.stats();
        drop(e);
        let n = self.inner.discard_queue() + stats.discarded;
        tracing::warn!(
            discarded = n,
            path = %self.inner.opts.cfg.path.display(),
            "udsipc writer task ended unfinished (runtime shut down or panic); queued messages discarded"
        );
    }
}

/// The machine and its connection. The task holds the lock while it acts
/// and lets go while it waits; a producer that finds the lock free and the
/// connection idle writes its message itself ([`write_now`]), which saves
/// the wake-up of the task on the way of a lone message.
pub(super) struct Engine {
    pub(super) m: Machine,
    pub(super) conn: Option<Conn>,
}

/// An open connection.
///
/// Registered with the runtime for reads only (the task watches for the
/// reader's hang-up): registered for writes as well, every read by the
/// reader would wake the runtime's IO driver (the socket's room changed,
/// an edge-triggered event) although no task waits for room, which at a
/// moderate rate is one thread wake-up per message for nothing. Room is
/// waited for through a second registration of the socket (a duplicate
/// descriptor), kept while the machine says so ([`Machine::arm`]).
#[derive(Clone)]
pub(super) struct Conn {
    pub(super) read: Arc<AsyncFd<StdStream>>,
    /// The registration for room, while the connection is busy; `None`
    /// when it could not be made (then room is polled, see [`wait`]).
    pub(super) room: Option<Arc<AsyncFd<StdStream>>>,
}

impl Conn {
    pub(super) fn new(stream: UnixStream) -> io::Result<Self> {
        let std = stream.into_std()?;
        Ok(Self {
            read: Arc::new(crate::sys::register(std, Interest::READABLE)?),
            room: None,
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
