//! One connection of a Reader, on tokio: the driver of its [`Machine`],
//! and the [`Deliver`] trait it hands frames to.
//!
//! Every decision (the ordering turn, when to read and how, a drain, the
//! inactivity deadline, how the connection ends) is the machine's; the
//! receive rules live in [`frame::Receiver`](crate::frame::Receiver), and
//! handing messages over in `delivery`. This module only moves bytes,
//! readiness, the phase and time between the socket, the machine and the
//! delivery: the socket's registration, a read through it or directly, a
//! read that waits on a thread of its own, and our reading side's shutdown
//! for a drain.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use super::info::{ConnectionInfo, Socket};
use super::inner::ReaderInner;
use super::machine::{Action, Machine, Via};
use super::order::{Registration, Turn};
use crate::lifecycle::Phase;

/// What a connection task hands its frames to.
pub(crate) trait Deliver: Send + Sync + 'static {
    /// Takes the connection (its machine said [`Action::Deliver`]), hands
    /// over every complete frame `conn.machine.rx` holds, tells the machine how
    /// that ended, and gives the connection back; `None` if the runtime
    /// dropped it (shutting down).
    fn deliver(&self, conn: Conn) -> impl Future<Output = Option<Conn>> + Send + '_;
}

/// The socket's registration with the IO driver, for reads only
/// (`sys::register` with [`Interest::READABLE`]): tokio's
/// `UnixStream` registers for writes too, edge-triggered, so every change of
/// the write room would wake the driver for nothing. A delivery that waits
/// on the socket from a thread of its own drops it meanwhile (else each
/// message would wake the driver too), and registers again after.
pub(crate) type Watch = AsyncFd<Socket>;

/// The per-connection state the driver and a delivery work on.
pub(crate) struct Conn {
    /// The connection's decisions, and its receive buffer.
    pub(crate) machine: Machine,
    pub(crate) info: ConnectionInfo,
    pub(crate) inner: Arc<ReaderInner>,
    pub(crate) phase: watch::Receiver<Phase>,
    pub(crate) socket: Socket,
    /// `None` only while a delivery waits on the socket itself.
    pub(crate) watch: Option<Watch>,
    /// Its place in the order book, held until the connection ends.
    pub(crate) order: Registration,
    /// Set once the connection's task is gone while a thread of the
    /// blocking pool serves it (see `SyncDelivery::on_pool`); one per
    /// connection, so a round allocates nothing for it.
    pub(crate) abandoned: Arc<AtomicBool>,
}

impl Conn {
    /// Feeds the machine the phase, asks it what to do next, and tells
    /// newer connections of the same process what it handed over.
    pub(crate) fn step(&mut self) -> Action {
        self.machine.handle_phase(self.inner.phase.get());
        let action = self.machine.poll_action(now());
        if let Some(n) = self.machine.take_handed_over() {
            self.order.progress.set_handed_over(n);
        }
        action
    }

    /// Makes the read the machine asked for (through the registration's
    /// readiness when there is one, for [`Via::Readiness`]: `WouldBlock`
    /// without a syscall when no event was seen), and feeds it the result;
    /// true if bytes came. Counted for `order` under its lock so a newer
    /// connection's snapshot is exact.
    pub(crate) fn read(&mut self, via: Via) -> bool {
        let watch = self.watch.as_ref().filter(|_| via == Via::Readiness);
        let (socket, rx) = (&self.socket, &mut self.machine.rx);
        // A receiver that holds no buffer (new, or released while idle)
        // would allocate one to read into: first a one-byte peek asks
        // whether bytes, or the end of the stream, are there at all.
        let op = || {
            let mut fill = || {
                if rx.is_released() && peek(socket)? == 0 {
                    return Ok(0);
                }
                rx.fill(|buf| crate::sys::recv_into_spare(&**socket, buf, false))
            };
            match watch {
                Some(w) => w.try_io(Interest::READABLE, |_| fill()),
                None => fill(),
            }
        };
        let got = self.order.progress.read_with(false, op);
        let bytes = matches!(got, Ok(n) if n > 0);
        self.machine.handle_read(got);
        bytes
    }

    /// A read that waits on this thread for bytes (a socket made to wait by
    /// `sys::set_waiting`, up to its timeout: then `WouldBlock`), for a
    /// connection served by a thread of its own. The receiver must hold a
    /// buffer already (see [`read`](Self::read)'s peek). `WouldBlock` at
    /// once while a newer connection of the same process waits to measure
    /// this one (see `order`): the connection then goes back to its task,
    /// which reads without waiting.
    pub(crate) fn read_waiting(&mut self) -> io::Result<usize> {
        let (socket, rx) = (&self.socket, &mut self.machine.rx);
        let op = || rx.fill(|buf| crate::sys::recv_into_spare(&**socket, buf, true));
        self.order.progress.read_with(true, op)
    }

    /// Whether a thread serving the connection may go on: its task is
    /// still there, and `until` (the end of its slice) has not passed.
    pub(crate) fn stays(&self, until: Option<std::time::Instant>) -> bool {
        !self.abandoned.load(Relaxed) && until.is_none_or(|u| std::time::Instant::now() < u)
    }

    /// [`stays`](Self::stays), and the Reader is running: a drain or a
    /// stop is the task's to carry out.
    pub(crate) fn running(&self, until: Option<std::time::Instant>) -> bool {
        self.inner.phase.get() == Phase::Running && self.stays(until)
    }
}

impl Drop for Conn {
    /// Counts the open connection down when it ends, however it ends.
    fn drop(&mut self) {
        self.inner.counters.active.fetch_sub(1, Relaxed);
    }
}

/// tokio's clock (paused in tests), as the machine's `now`.
pub(crate) fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// A one-byte `recv(MSG_PEEK | MSG_DONTWAIT)`: 1 if bytes wait, 0 at the
/// end of the stream, `WouldBlock` if neither.
fn peek(stream: &Socket) -> io::Result<usize> {
    use nix::sys::socket::{MsgFlags, recv};
    use std::os::fd::AsRawFd;
    let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
    recv(stream.as_raw_fd(), &mut [0u8; 1], flags).map_err(io::Error::from)
}

/// Starts a graceful drain of this connection: shuts down our reading side,
/// so the kernel keeps what the peer already sent (we read it all, then end
/// of stream) and refuses anything sent from now on with `EPIPE` at the
/// writer, which keeps the message and retries it on its next connection.
/// The cut is made by the kernel at one instant: nothing is half-accepted.
pub(crate) fn begin_drain(stream: &Socket) {
    use nix::sys::socket::{Shutdown, shutdown};
    use std::os::fd::AsRawFd;
    let _ = shutdown(stream.as_raw_fd(), Shutdown::Read);
}

/// Serves one connection until it ends.
pub(crate) async fn serve<D: Deliver>(mut conn: Conn, delivery: Arc<D>, turn: Turn) {
    // Polled only while the machine waits for its turn.
    let mut turn = std::pin::pin!(turn.wait());
    loop {
        match conn.step() {
            Action::WaitTurn => tokio::select! {
                biased;
                // A phase change is read at the next step (the Reader's phase
                // outlives the connection, which holds it).
                _ = conn.phase.changed() => {}
                () = &mut turn => conn.machine.handle_turn(now()),
            },
            Action::Deliver => match delivery.deliver(conn).await {
                Some(back) => conn = back,
                None => return,
            },
            Action::WaitHandler => unreachable!("a delivery is awaited where it begins"),
            Action::ShutdownRead => begin_drain(&conn.socket),
            Action::Read(via) => {
                if conn.read(via) {
                    // Stay fair to other connections on this worker.
                    tokio::task::consume_budget().await;
                }
            }
            Action::Wait => {
                let wake = conn.machine.poll_timeout();
                tokio::select! {
                    biased;
                    _ = conn.phase.changed() => {}
                    // The readiness stays set: the next read clears it if
                    // it finds nothing. Registered again by every delivery
                    // that dropped it.
                    ready = conn.watch.as_ref().expect("a waiting connection is registered").readable() => {
                        conn.machine.handle_readable(ready.map(drop));
                    }
                    () = sleep_until(Instant::from_std(wake.unwrap_or_else(now))), if wake.is_some() => {
                        conn.machine.handle_timeout();
                    }
                }
            }
            Action::Close => {
                // Whole messages read and never handed over (a forced stop
                // cut the delivery short): counted, for the stop to report.
                let rx = &mut conn.machine.rx;
                let left = std::iter::from_fn(|| rx.next_borrowed().ok()?.map(drop)).count();
                (conn.inner.counters.unhandled).fetch_add(left as u64, Relaxed);
                if let Some(e) = conn.machine.poll_report() {
                    conn.inner.report(e);
                }
                return;
            }
        }
    }
}
