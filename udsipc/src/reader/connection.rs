//! One connection of a Reader: waits its turn behind older connections of
//! the same writer process, then reads, hands frames to the delivery, and
//! ends on end of stream, a protocol violation, an expired deadline or a
//! stop.
//!
//! The receive rules (buffering, parsing, deadlines, end-of-stream
//! classification) live in [`frame::Receiver`](crate::frame::Receiver);
//! handing messages over lives in `delivery`. This module only moves bytes
//! and time between the socket, the receiver and the delivery.

use std::io;
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::time::Instant;

use super::delivery::{Conn, Deliver, Stop, forced};
use super::info::{ConnectionInfo, Socket};
use super::inner::ReaderInner;
use super::io::{ReadHow, Watch, begin_drain, read, readable, ready};
use super::order::{Progress, Registration, Turn};
use crate::error::{ReadStage, ReaderError};
use crate::frame::{Expired, Receiver};
use crate::lifecycle::Phase;

/// How a connection ended.
enum End {
    /// Clean close, idle timeout, drained, or forced stop: not an error.
    Quiet,
    /// Counted in `errors` and reported.
    Error(ReaderError),
}

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
    let mut phase = inner.phase.subscribe();
    if !turn.is_free() {
        // Older connections of this writer process hand over what they hold
        // first (see `order`); a forced stop ends the wait.
        tokio::select! {
            biased;
            () = forced(&mut phase) => return,
            () = turn.wait() => {}
        }
    }
    let rx = Receiver::new(
        inner.config.max_message_size,
        inner.config.inactivity_timeout,
        Instant::now().into_std(),
    );
    let mut conn = Conn {
        rx,
        info,
        inner,
        phase,
        flavor: Handle::current().runtime_flavor(),
        socket,
        watch: Some(watch),
        progress: registration.as_ref().map(|r| Arc::clone(r.progress())),
        pending_read: None,
        abandoned: Arc::default(),
    };
    let progress = registration.as_ref().map(Registration::progress);
    if let End::Error(e) = run(&mut conn, &*delivery, progress).await {
        conn.inner.report(e);
    }
}

async fn run<D: Deliver>(conn: &mut Conn, delivery: &D, progress: Option<&Arc<Progress>>) -> End {
    let timeout = conn.inner.config.inactivity_timeout;
    let mut draining = false;
    loop {
        // Hand over every complete frame before reading again.
        if let Err(stop) = delivery.deliver(conn).await {
            return match stop {
                Stop::Protocol(e) => End::Error(ReaderError::Protocol(e)),
                Stop::Read(source) => read_error(&conn.rx, source),
                Stop::Quiet => End::Quiet,
            };
        }
        if let Some(p) = progress {
            p.set_handed_over(conn.rx.handed_over());
        }
        match *conn.phase.borrow() {
            Phase::Forced => return End::Quiet,
            Phase::Draining if !draining => {
                draining = true;
                begin_drain(&conn.socket);
            }
            _ => {}
        }

        let got = match conn.pending_read.take() {
            Some(got) => got,
            None => read(&conn.socket, &mut conn.rx, progress, ready(&conn.watch)),
        };
        match got {
            Ok(0) => return at_eof(&mut conn.rx),
            Ok(_) => {
                // Stay fair to other connections on this worker.
                tokio::task::consume_budget().await;
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return read_error(&conn.rx, source),
        }
        if draining {
            // tokio's WouldBlock may only mean "no readiness event seen
            // yet": ask the kernel itself. After `begin_drain` it answers
            // with data, then end of stream.
            match read(&conn.socket, &mut conn.rx, progress, ReadHow::Now) {
                Ok(0) => return at_eof(&mut conn.rx),
                Ok(_) => {
                    tokio::task::consume_budget().await;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && conn.rx.buffered() == 0 => {
                    return End::Quiet;
                }
                Err(_) => {}
            }
        }
        conn.rx.on_idle(Instant::now().into_std());
        if let Some(p) = progress {
            // Every whole frame read is handed over: the rest of what was
            // read is the start of a frame, which holds no newer connection
            // back (see `order`).
            p.set_handed_over(conn.rx.read_total());
        }
        let wake = conn.rx.poll_timeout().filter(|_| !draining);
        tokio::select! {
            biased;
            changed = conn.phase.changed() => {
                if changed.is_err() {
                    return End::Quiet;
                }
            }
            ready = readable(&conn.watch) => {
                // The readiness stays set: the next read clears it if it
                // finds nothing.
                if let Err(source) = ready {
                    return read_error(&conn.rx, source);
                }
            }
            () = sleep_until(wake), if wake.is_some() => {
                // Bytes already in the kernel arrived in time, even if this
                // task has not been told yet (a loaded machine): take them
                // before judging the connection inactive.
                match read(&conn.socket, &mut conn.rx, progress, ReadHow::Now) {
                    Ok(0) => return at_eof(&mut conn.rx),
                    Ok(_) => continue,
                    Err(_) => {}
                }
                if let Some(expired) = conn.rx.handle_timeout(Instant::now().into_std()) {
                    return match expired {
                        // Go-exact: quiet while waiting for (or inside) a
                        // prefix, an error inside a body.
                        Expired::Idle => End::Quiet,
                        Expired::InsideBody { expected, got } => {
                            End::Error(ReaderError::BodyTimeout { timeout, expected, got })
                        }
                    };
                }
            }
        }
    }
}

async fn sleep_until(at: Option<std::time::Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(Instant::from_std(at)).await;
    }
}

/// The peer closed: clean at a frame boundary, an error inside a frame.
fn at_eof(rx: &mut Receiver) -> End {
    match rx.finish() {
        Ok(()) => End::Quiet,
        Err(e) => End::Error(ReaderError::Protocol(e)),
    }
}

fn read_error(rx: &Receiver, source: io::Error) -> End {
    let stage = if rx.inside_body() {
        ReadStage::Body
    } else {
        ReadStage::Prefix
    };
    End::Error(ReaderError::Read { stage, source })
}
