//! The Reader's accept loop: admits connections (peer credentials, the
//! connection cap), numbers them, registers them for ordering and spawns one
//! tracked task per connection; at a graceful stop it accepts what waits in
//! the backlog, then closes the listener.
//!
//! Binding and stopping belong to `reader`; serving a connection to
//! `connection`.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::runtime::Handle;

use crate::delivery::Deliver;
use crate::error::ReaderError;
use crate::lifecycle::Phase;
use crate::policy::Peer;
use crate::reader::{ConnectionInfo, PeerCredentials, ReaderInner};
use crate::socket;

/// Pause after a failed `accept`, as in Go.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

pub(crate) async fn accept_loop<D: Deliver>(
    inner: Arc<ReaderInner>,
    listener: UnixListener,
    delivery: Arc<D>,
    handle: Handle,
) {
    let mut phase = inner.phase.subscribe();
    let mut consecutive = 0u32;
    loop {
        if *phase.borrow_and_update() != Phase::Running {
            break;
        }
        let accepted = tokio::select! {
            biased;
            _ = phase.changed() => continue,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _)) => {
                consecutive = 0;
                spawn_connection(&inner, stream, &delivery, &handle);
            }
            Err(source) => {
                consecutive += 1;
                tracing::warn!(error = %source, consecutive, "accept failed");
                if consecutive > inner.max_accept_errors {
                    inner.report(ReaderError::AcceptGaveUp {
                        consecutive,
                        source,
                    });
                    break;
                }
                tokio::select! {
                    _ = phase.changed() => {}
                    () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                }
            }
        }
    }
    if *phase.borrow() == Phase::Draining {
        accept_backlog(&inner, listener, &delivery, &handle);
    }
    // The listener is closed now: from here on connects are refused instead
    // of waiting in a backlog nobody will accept.
}

/// At the start of a graceful stop, accepts the connections still waiting in
/// the listen backlog, so what their writers already sent is delivered too.
fn accept_backlog<D: Deliver>(
    inner: &Arc<ReaderInner>,
    listener: UnixListener,
    delivery: &Arc<D>,
    handle: &Handle,
) {
    let Ok(listener) = listener.into_std() else {
        return;
    };
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    while let Ok((stream, _)) = listener.accept() {
        let adopted = stream
            .set_nonblocking(true)
            .and_then(|()| UnixStream::from_std(stream));
        if let Ok(stream) = adopted {
            spawn_connection(inner, stream, delivery, handle);
        }
    }
}

/// Reads the peer's credentials from the kernel (`SO_PEERCRED`).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn peer_of(stream: &UnixStream) -> Result<Peer, String> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    getsockopt(stream, PeerCredentials)
        .map(|c| Peer {
            pid: c.pid(),
            uid: c.uid(),
            gid: c.gid(),
        })
        .map_err(|e| e.to_string())
}

/// `SO_PEERCRED` is Linux's: elsewhere the credentials are unknown (and a
/// Reader with an allow-list refuses every connection).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn peer_of(_stream: &UnixStream) -> Result<Peer, String> {
    Err("peer credentials (SO_PEERCRED) are read on Linux only".to_owned())
}

/// Counts an open connection down when its task ends, however it ends.
struct Active(Arc<ReaderInner>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.counters.active.fetch_sub(1, Relaxed);
    }
}

fn spawn_connection<D: Deliver>(
    inner: &Arc<ReaderInner>,
    stream: UnixStream,
    delivery: &Arc<D>,
    handle: &Handle,
) {
    let open = inner.counters.active.load(Relaxed) as usize;
    let peer = peer_of(&stream);
    let credentials = peer.as_ref().ok().map(|p| PeerCredentials {
        pid: p.pid,
        uid: p.uid,
        gid: p.gid,
    });
    if let Err(refusal) = inner.policy.admit(peer, open) {
        // Closed before a single byte is read.
        drop(stream);
        inner.counters.rejected.fetch_add(1, Relaxed);
        inner.report(ReaderError::PeerRejected {
            reason: refusal.to_string(),
        });
        return;
    }
    let id = inner.counters.connections.fetch_add(1, Relaxed) + 1;
    let info = ConnectionInfo {
        id,
        peer: credentials,
    };
    if inner.read_buffer_size > 0 {
        let _ = socket::set_recv_buffer(&stream, inner.read_buffer_size);
    }
    let stream = Arc::new(stream);
    let (registration, turn) = inner.order.admit(credentials.map(|c| c.pid), &stream);
    inner.counters.active.fetch_add(1, Relaxed);
    let active = Active(Arc::clone(inner));
    let conn_inner = Arc::clone(inner);
    let delivery = Arc::clone(delivery);
    inner.tasks.spawn(handle, "connection", async move {
        let _active = active;
        crate::connection::serve(stream, conn_inner, info, delivery, registration, turn).await;
    });
}
