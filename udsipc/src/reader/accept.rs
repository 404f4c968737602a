//! The Reader's accept loop: admits connections (peer credentials, the
//! connection cap), numbers them, registers them for ordering and spawns one
//! tracked task per connection; at a graceful stop it accepts what waits in
//! the backlog, then closes the listener.
//!
//! Binding and stopping belong to `reader`; serving a connection to
//! `connection`.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::UnixListener;
use tokio::runtime::Handle;

use super::connection::{Conn, Deliver, now};
use super::info::ConnectionInfo;
use super::inner::ReaderInner;
use super::machine::Machine;
use crate::error::ReaderError;
use crate::lifecycle::Phase;
use crate::policy::PeerCredentials;
use crate::socket;

/// Pause after a failed `accept` that counts toward `max_accept_errors`, as
/// in Go.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// First pause after `accept` ran out of a resource; it doubles with every
/// further failure in a row up to [`RESOURCE_PAUSE_MAX`] (the schedule Go's
/// `net/http` server uses for temporary accept errors).
const RESOURCE_PAUSE_MIN: Duration = Duration::from_millis(5);

/// Longest pause between attempts while `accept` keeps running out of a
/// resource.
const RESOURCE_PAUSE_MAX: Duration = Duration::from_secs(1);

/// What a failed `accept` means for the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The process or the system is out of something (EMFILE, ENFILE,
    /// ENOBUFS, ENOMEM). It passes when connections close or memory is freed,
    /// so it never counts toward `max_accept_errors`: counting it would let
    /// any local user who can hold enough connections open stop the Reader
    /// for good. Shed load if possible, pause (growing), keep accepting.
    Resource {
        /// Out of descriptors (EMFILE, ENFILE): the spare descriptor can be
        /// given up to accept and close the waiting connection.
        descriptors: bool,
    },
    /// That one connection went away before it was accepted (ECONNABORTED)
    /// or the call was interrupted (EINTR): try again at once, uncounted, as
    /// Go's runtime does inside `Accept`.
    Transient,
    /// Anything else says the listening socket itself is broken (EBADF,
    /// EINVAL, ENOTSOCK, EPERM, ...): counted toward `max_accept_errors`, as
    /// Go counts every error its `Accept` returns.
    Counted,
}

fn classify(error: &io::Error) -> Failure {
    use nix::libc;
    match error.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE) => Failure::Resource { descriptors: true },
        Some(libc::ENOBUFS | libc::ENOMEM) => Failure::Resource { descriptors: false },
        Some(libc::ECONNABORTED | libc::EINTR) => Failure::Transient,
        _ => Failure::Counted,
    }
}

/// The pause after `n` (1-based) resource failures in a row: 5 ms doubling,
/// at most 1 s.
fn resource_pause(n: u32) -> Duration {
    RESOURCE_PAUSE_MIN
        .saturating_mul(1u32 << n.saturating_sub(1).min(16))
        .min(RESOURCE_PAUSE_MAX)
}

/// A descriptor held in reserve (a duplicate of the listening socket's), so
/// that when the process runs out of descriptors the Reader can give it up,
/// accept the waiting connection, close it at once (counted as rejected)
/// and take the spare back: writers then see their connection closed
/// instead of waiting in a backlog nobody can empty.
pub(crate) struct Spare(Option<OwnedFd>);

impl Spare {
    /// Takes the spare; done when the Reader starts (not when the accept
    /// task first runs), so it is there before anyone can exhaust the
    /// descriptors.
    pub(crate) fn new(listener: &UnixListener) -> Self {
        Self(listener.as_fd().try_clone_to_owned().ok())
    }

    /// Accepts and closes one waiting connection using the spare
    /// descriptor's slot. Returns whether one was shed.
    async fn shed(&mut self, listener: &UnixListener) -> bool {
        if self.0.take().is_none() {
            // Lost it earlier (someone else took the freed slot): try to
            // get it back for next time.
            self.0 = listener.as_fd().try_clone_to_owned().ok();
            return false;
        }
        // The connection accepted, if any, is closed at once.
        let shed = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(matches!(
                listener.poll_accept(cx),
                std::task::Poll::Ready(Ok(_))
            ))
        })
        .await;
        self.0 = listener.as_fd().try_clone_to_owned().ok();
        shed
    }
}

pub(crate) async fn accept_loop<D: Deliver>(
    inner: Arc<ReaderInner>,
    listener: UnixListener,
    mut spare: Spare,
    delivery: Arc<D>,
) {
    let mut phase = inner.phase.subscribe();
    let mut consecutive = 0u32;
    let mut starved = 0u32;
    while *phase.borrow_and_update() == Phase::Running {
        let accepted = tokio::select! {
            biased;
            _ = phase.changed() => continue,
            r = listener.accept() => r,
        };
        let source = match accepted {
            Ok((stream, _)) => {
                consecutive = 0;
                starved = 0;
                // Out of tokio's registration (for reads and writes) into
                // the connection's own (reads only).
                admit(&inner, stream.into_std(), &delivery);
                continue;
            }
            Err(source) => source,
        };
        let pause = match classify(&source) {
            Failure::Transient => continue,
            Failure::Resource { descriptors } => {
                if descriptors && spare.shed(&listener).await {
                    refuse(
                        &inner,
                        format!("out of file descriptors, closed unread ({source})"),
                    );
                    // Each turn consumed a waiting connection: no busy loop.
                    continue;
                }
                starved = starved.saturating_add(1);
                let pause = resource_pause(starved);
                tracing::warn!(error = %source, ?pause, "accept ran out of a resource; pausing, will keep accepting");
                pause
            }
            Failure::Counted => {
                consecutive += 1;
                tracing::warn!(error = %source, consecutive, "accept failed");
                if consecutive > inner.options.max_accept_errors {
                    inner.report(ReaderError::AcceptGaveUp {
                        consecutive,
                        source,
                    });
                    break;
                }
                ACCEPT_ERROR_PAUSE
            }
        };
        tokio::select! {
            _ = phase.changed() => {}
            () = tokio::time::sleep(pause) => {}
        }
    }
    // The spare is a duplicate of the listening socket: it must not keep
    // the socket open once the loop is done.
    drop(spare);
    // At the start of a graceful stop, the connections still waiting in the
    // backlog are accepted, so what their writers already sent is delivered
    // too (the listener is non-blocking, as tokio gives it back).
    if *phase.borrow() == Phase::Draining {
        if let Ok(listener) = listener.into_std() {
            while let Ok((stream, _)) = listener.accept() {
                admit(&inner, Ok(stream), &delivery);
            }
        }
    }
    // The listener is closed now: from here on connects are refused instead
    // of waiting in a backlog nobody will accept.
}

/// Reads the peer's credentials from the kernel (`SO_PEERCRED`).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn peer_of(stream: &UnixStream) -> Result<PeerCredentials, String> {
    use nix::sys::socket::{getsockopt, sockopt};
    getsockopt(stream, sockopt::PeerCredentials)
        .map(|c| PeerCredentials {
            pid: c.pid(),
            uid: c.uid(),
            gid: c.gid(),
        })
        .map_err(|e| e.to_string())
}

/// `SO_PEERCRED` is Linux's: elsewhere the credentials are unknown (and a
/// Reader with an allow-list refuses every connection).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn peer_of(_stream: &UnixStream) -> Result<PeerCredentials, String> {
    Err("peer credentials (SO_PEERCRED) are read on Linux only".to_owned())
}

/// Counts and reports a connection closed unread.
fn refuse(inner: &ReaderInner, reason: String) {
    inner.counters.rejected.fetch_add(1, Relaxed);
    inner.report(ReaderError::PeerRejected { reason });
}

/// Admits a connection and spawns its task, or closes it unread (refused
/// before a single byte is read; a stream that cannot be made non-blocking
/// too).
fn admit<D: Deliver>(inner: &Arc<ReaderInner>, stream: io::Result<UnixStream>, delivery: &Arc<D>) {
    if let Err(reason) = spawn_connection(inner, stream, delivery) {
        refuse(inner, reason);
    }
}

/// Admits a connection and spawns its task; or the reason it is closed
/// unread.
fn spawn_connection<D: Deliver>(
    inner: &Arc<ReaderInner>,
    stream: io::Result<UnixStream>,
    delivery: &Arc<D>,
) -> Result<(), String> {
    let stream = (stream.and_then(|s| s.set_nonblocking(true).map(|()| s)))
        .map_err(|e| format!("could not take over the socket: {e}"))?;
    let open = inner.counters.active.load(Relaxed) as usize;
    let peer = peer_of(&stream);
    inner
        .options
        .policy
        .admit(peer.clone(), open)
        .map_err(|r| r.to_string())?;
    if inner.options.read_buffer_size > 0 {
        let _ = socket::set_recv_buffer(&stream, inner.options.read_buffer_size);
    }
    let socket = Arc::new(stream);
    let watch = crate::sys::register(Arc::clone(&socket), Interest::READABLE)
        .map_err(|e| format!("could not register the socket for reads: {e}"))?;
    // Counted as accepted only once it will be served (a refused one is
    // counted in `rejected` alone).
    let id = inner.counters.connections.fetch_add(1, Relaxed) + 1;
    let peer = peer.ok();
    let (order, turn) = inner.order.admit(peer.map(|p| p.pid), &socket);
    let handle = Handle::current();
    // Counted down when the Conn drops.
    inner.counters.active.fetch_add(1, Relaxed);
    let conn = Conn {
        machine: Machine::new(
            inner.options.max_message_size,
            inner.options.inactivity_timeout,
            now(),
            turn.is_free(),
        ),
        info: ConnectionInfo { id, peer },
        phase: inner.phase.subscribe(),
        inner: Arc::clone(inner),
        socket,
        watch: Some(watch),
        order,
        abandoned: Arc::default(),
    };
    let delivery = Arc::clone(delivery);
    let serve = super::connection::serve(conn, delivery, turn);
    inner.tasks.spawn(&handle, "connection", serve);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_errors_never_count_toward_max_accept_errors() {
        use nix::libc;
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            let failure = classify(&io::Error::from_raw_os_error(errno));
            assert!(matches!(failure, Failure::Resource { .. }), "{errno}");
        }
        assert_eq!(
            classify(&io::Error::from_raw_os_error(libc::ECONNABORTED)),
            Failure::Transient
        );
        for errno in [libc::EBADF, libc::EINVAL, libc::ENOTSOCK, libc::EPERM] {
            assert_eq!(
                classify(&io::Error::from_raw_os_error(errno)),
                Failure::Counted,
                "{errno}"
            );
        }
    }

    #[test]
    fn resource_pause_grows_from_5ms_to_at_most_1s() {
        assert_eq!(resource_pause(1), Duration::from_millis(5));
        assert_eq!(resource_pause(2), Duration::from_millis(10));
        assert_eq!(resource_pause(8), Duration::from_millis(640));
        assert_eq!(resource_pause(9), Duration::from_secs(1));
        assert_eq!(resource_pause(u32::MAX), Duration::from_secs(1));
    }
}
