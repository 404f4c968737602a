//! One connection of a Reader, on tokio: the driver of its [`Machine`].
//!
//! Every decision (the ordering turn, when to read and how, a drain, the
//! inactivity deadline, how the connection ends) is the machine's; the
//! receive rules live in [`frame::Receiver`](crate::frame::Receiver), and
//! handing messages over in `delivery`. This module only moves bytes,
//! readiness, the phase and time between the socket, the machine and the
//! delivery.

use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::time::Instant;

use super::delivery::{Conn, Deliver, now};
use super::info::{ConnectionInfo, Socket};
use super::inner::ReaderInner;
use super::io::{Watch, begin_drain, readable};
use super::machine::{Action, Machine};
use super::order::{Registration, Turn};
use crate::lifecycle::Phase;

/// Serves one connection until it ends.
pub(crate) async fn serve<D: Deliver>(
    socket: Socket,
    watch: Watch,
    inner: Arc<ReaderInner>,
    info: ConnectionInfo,
    delivery: Arc<D>,
    registration: Option<Registration>,
    turn: Turn,
) {
    let config = &inner.config;
    let machine = Machine::new(
        config.max_message_size,
        config.inactivity_timeout,
        now(),
        turn.is_free(),
    );
    let mut conn = Conn {
        machine,
        info,
        phase: inner.phase.subscribe(),
        inner,
        flavor: Handle::current().runtime_flavor(),
        socket,
        watch: Some(watch),
        progress: registration.as_ref().map(|r| Arc::clone(r.progress())),
        abandoned: Arc::default(),
    };
    // Polled only while the machine waits for its turn.
    let mut turn = std::pin::pin!(turn.wait());
    loop {
        match conn.step() {
            Action::WaitTurn => tokio::select! {
                biased;
                gone = changed(&mut conn.phase) => conn.machine.handle_phase(gone),
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
                    gone = changed(&mut conn.phase) => conn.machine.handle_phase(gone),
                    // The readiness stays set: the next read clears it if
                    // it finds nothing.
                    ready = readable(&conn.watch) => conn.machine.handle_readable(ready),
                    () = sleep_until(wake), if wake.is_some() => conn.machine.handle_timeout(),
                }
            }
            Action::Close => {
                // Whole messages read and never handed over (a forced stop
                // cut the delivery short): counted, for the stop to report.
                let mut left = 0;
                while let Ok(Some(_)) = conn.rx().next_borrowed() {
                    left += 1;
                }
                if left > 0 {
                    let unhandled = &conn.inner.counters.unhandled;
                    unhandled.fetch_add(left, std::sync::atomic::Ordering::Relaxed);
                }
                if let Some(e) = conn.machine.poll_report() {
                    conn.inner.report(e);
                }
                return;
            }
        }
    }
}

/// Resolves on a change of the Reader's phase (read at the next step):
/// `Forced` if the Reader is gone (it is not while the connection holds
/// its state), else `Running`, which changes nothing.
async fn changed(phase: &mut watch::Receiver<Phase>) -> Phase {
    match phase.changed().await {
        Ok(()) => Phase::Running,
        Err(_) => Phase::Forced,
    }
}

async fn sleep_until(at: Option<std::time::Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(Instant::from_std(at)).await;
    }
}
