//! Reading a connection's socket into its receiver: the readiness
//! registration, a read through it or directly, a read that waits on a
//! thread of its own, and our reading side's shutdown for a drain. Used by
//! the connection task and by a delivery that serves a connection from a
//! thread of its own.

use std::io;
use std::sync::Arc;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::info::Socket;
use super::order::Progress;
use crate::frame::Receiver;

/// The socket's registration with the IO driver, for reads only: tokio's
/// `UnixStream` registers for writes too, edge-triggered, so every change of
/// the write room would wake the driver for nothing. A delivery that waits
/// on the socket from a thread of its own drops it meanwhile (else each
/// message would wake the driver too), and registers again after.
pub(crate) type Watch = AsyncFd<crate::sys::Shared>;

/// Registers `socket` for reads.
pub(crate) fn watch(socket: &Socket) -> io::Result<Watch> {
    crate::sys::register_shared(socket, Interest::READABLE)
}

/// Waits until the IO driver says the socket is readable (the readiness
/// stays set: the next read through it clears it if it finds nothing).
pub(crate) async fn readable(watch: &Option<Watch>) -> io::Result<()> {
    match watch {
        Some(w) => w.readable().await.map(drop),
        // Registered again by every delivery that dropped it.
        None => unreachable!("a connection waiting in its task is registered"),
    }
}

/// Reads through the registration's readiness when there is one.
pub(crate) fn ready(watch: &Option<Watch>) -> ReadHow<'_> {
    watch.as_ref().map_or(ReadHow::Now, ReadHow::Ready)
}

#[derive(Clone, Copy)]
pub(crate) enum ReadHow<'a> {
    /// Through tokio's readiness (WouldBlock without a syscall when no
    /// event was seen).
    Ready(&'a Watch),
    /// A direct non-blocking `recv`, whatever tokio last saw.
    Now,
}

/// Reads what the socket has into the receiver; counted for `order` under
/// its lock so a newer connection's snapshot is exact.
pub(crate) fn read(
    socket: &Socket,
    rx: &mut Receiver,
    progress: Option<&Arc<Progress>>,
    how: ReadHow<'_>,
) -> io::Result<usize> {
    // A receiver that holds no buffer (new, or released while idle) would
    // allocate one to read into: first a one-byte peek asks whether bytes,
    // or the end of the stream, are there at all.
    let mut op = || {
        let mut fill = || {
            if rx.is_released() && peek(socket)? == 0 {
                return Ok(0);
            }
            rx.fill(|buf| crate::sys::recv_into_spare(&**socket, buf))
        };
        match how {
            ReadHow::Ready(watch) => watch.try_io(Interest::READABLE, |_| fill()),
            ReadHow::Now => fill(),
        }
    };
    match progress {
        Some(p) => p.read_with(|| {
            let r = op();
            (*r.as_ref().unwrap_or(&0), r)
        }),
        None => op(),
    }
}

/// [`read`] that waits on this thread for bytes (a socket made to wait by
/// `sys::set_waiting`, up to its timeout: then `WouldBlock`), for a
/// connection served by a thread of its own. The receiver must hold a
/// buffer already (see [`read`]'s peek). `WouldBlock` at once while a newer
/// connection of the same process waits to measure this one (see `order`):
/// the connection then goes back to its task, which reads without waiting.
pub(crate) fn read_waiting(
    socket: &Socket,
    rx: &mut Receiver,
    progress: Option<&Arc<Progress>>,
) -> io::Result<usize> {
    let mut op = || rx.fill(|buf| crate::sys::recv_into_spare_waiting(&**socket, buf));
    match progress {
        Some(p) => p
            .read_waiting_with(|| {
                let r = op();
                (*r.as_ref().unwrap_or(&0), r)
            })
            .unwrap_or_else(|| Err(io::ErrorKind::WouldBlock.into())),
        None => op(),
    }
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
