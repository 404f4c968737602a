//! Kernel queries that nix offers only as raw `ioctl`s: the crate's second
//! room with `unsafe` code (the first adopts systemd's fd in `systemd`).
//!
//! Every function here takes a borrowed fd, so the fd is open for the whole
//! call, and passes the kernel a pointer to a local integer of the size the
//! request writes. Besides them: a `recv` into a buffer's spare capacity
//! (no zeroing first), a socket's registration with tokio's IO driver for
//! chosen interests only, and one safe helper that belongs with them: a
//! zero-timeout look for a hang-up.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd};

use nix::libc::c_int;

nix::ioctl_read_bad!(fionread, nix::libc::FIONREAD, c_int);

#[cfg(any(target_os = "linux", target_os = "android"))]
nix::ioctl_read_bad!(siocoutq, nix::libc::TIOCOUTQ, c_int);

/// Bytes waiting in a stream socket's receive queue (`FIONREAD`, also
/// known as `SIOCINQ`): written by the peer, not yet read by us.
pub(crate) fn unread_bytes(socket: &impl AsFd) -> io::Result<usize> {
    let fd = socket.as_fd();
    let mut n: c_int = 0;
    // SAFETY: `fd` is borrowed, so it stays open for the call; FIONREAD
    // writes one `int`, and `n` is a live, aligned `c_int` on our stack.
    unsafe { fionread(fd.as_raw_fd(), &mut n) }.map_err(io::Error::from)?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Bytes we wrote to a stream socket that the peer has not read yet
/// (`SIOCOUTQ`, the same request number as `TIOCOUTQ`), as the kernel
/// accounts them: for a Unix stream socket on Linux, the true size of the
/// buffers still queued at the peer (at least the unread bytes; exactly 0
/// once the peer has read everything, or once it closed and its queue was
/// purged: read the socket's error after this).
///
/// `Unsupported` on systems without the query.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn peer_unread_bytes(socket: &impl AsFd) -> io::Result<u64> {
    let fd = socket.as_fd();
    let mut n: c_int = 0;
    // SAFETY: `fd` is borrowed, so it stays open for the call; SIOCOUTQ
    // writes one `int`, and `n` is a live, aligned `c_int` on our stack. On
    // an fd that is not a socket the kernel refuses without writing.
    unsafe { siocoutq(fd.as_raw_fd(), &mut n) }.map_err(io::Error::from)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// See the Linux version: this system cannot tell.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn peer_unread_bytes(_socket: &impl AsFd) -> io::Result<u64> {
    Err(io::ErrorKind::Unsupported.into())
}

/// A `recv` into the spare capacity of `buf` (none zeroed first, unlike a
/// read into a slice); returns how many bytes it appended (0 at end of
/// stream, `WouldBlock` when nothing is there).
///
/// Without `wait` it never waits. With `wait` it waits on this thread, on
/// a socket made to wait by [`set_waiting`], until bytes, the end of the
/// stream or an error come (`WouldBlock` once its timeout passed with
/// none). One call both waits and reads: a wait that only peeked and a read
/// after it cost a C reader 5 µs more per message (11.0 instead of 6.2 µs
/// at p50, 64 B at 10,000 msgs/s).
pub(crate) fn recv_into_spare(
    socket: &impl AsFd,
    buf: &mut bytes::BytesMut,
    wait: bool,
) -> io::Result<usize> {
    let flags = if wait { 0 } else { nix::libc::MSG_DONTWAIT };
    let fd = socket.as_fd();
    let spare = buf.spare_capacity_mut();
    // SAFETY: `fd` is borrowed, so it stays open for the call; `spare` is
    // the buffer's own writable, allocated memory of `spare.len()` bytes,
    // and `recv` writes at most that many bytes there.
    let got = unsafe {
        nix::libc::recv(
            fd.as_raw_fd(),
            spare.as_mut_ptr().cast(),
            spare.len(),
            flags,
        )
    };
    let n = usize::try_from(got).map_err(|_| io::Error::last_os_error())?;
    let len = buf.len() + n;
    // SAFETY: `recv` initialized exactly the `n` bytes after the old length,
    // which are within the capacity.
    unsafe { buf.set_len(len) };
    Ok(n)
}

/// Whether the peer of `socket` has closed its end entirely (`POLLHUP`) or
/// an error is pending (`POLLERR`), without waiting.
pub(crate) fn hung_up(socket: &impl AsFd) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLOUT)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(_) => fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR)),
        Err(_) => false,
    }
}

/// Registers `socket`, a stream or a shared one, with the current tokio
/// runtime's IO driver for `interest` only (tokio's `UnixStream` always
/// registers for reads and writes). Must be called inside the runtime. A
/// shared socket's registration can be dropped (the socket then leaves the
/// IO driver) and made again while the socket stays open with its other
/// owners.
pub(crate) fn register<S>(
    socket: S,
    interest: tokio::io::Interest,
) -> io::Result<tokio::io::unix::AsyncFd<S>>
where
    S: AsRawFd + std::borrow::Borrow<std::os::unix::net::UnixStream>,
{
    // SAFETY: the `AsyncFd` takes ownership of `socket`, a `UnixStream` or
    // a strong reference to one (the crate's only `Borrow<UnixStream>`
    // types), which owns its descriptor: it stays open, and `as_raw_fd`
    // returns that same descriptor, until the `AsyncFd` drops `socket`.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(socket, interest) }
        .map_err(|e| e.into_parts().1)
}

/// Makes reads of `socket` that may wait (see [`recv_into_spare`]) wait at
/// most `timeout`, through the kernel's own receive timeout (`SO_RCVTIMEO`,
/// coarse: no high-resolution timer armed per wait, which on a virtual
/// machine costs more than the wake-up itself); `None` makes the socket
/// non-blocking again. The reads that must never wait pass `MSG_DONTWAIT`
/// and are not affected either way.
pub(crate) fn set_waiting(
    socket: &std::os::unix::net::UnixStream,
    timeout: Option<std::time::Duration>,
) -> io::Result<()> {
    match timeout {
        Some(t) => {
            socket.set_read_timeout(Some(t))?;
            socket.set_nonblocking(false)
        }
        None => socket.set_nonblocking(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;

    #[test]
    fn unread_bytes_follows_what_the_peer_wrote_and_we_read() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        assert_eq!(unread_bytes(&b).unwrap(), 0);
        a.write_all(&[7; 1000]).unwrap();
        assert_eq!(unread_bytes(&b).unwrap(), 1000);
        let mut buf = [0; 300];
        b.read_exact(&mut buf).unwrap();
        assert_eq!(unread_bytes(&b).unwrap(), 700);
    }

    #[test]
    fn recv_into_spare_appends_exactly_what_arrived_and_says_would_block_after() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut buf = bytes::BytesMut::with_capacity(4096);
        buf.extend_from_slice(b"kept");
        let err = recv_into_spare(&b, &mut buf, false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        a.write_all(b"hello").unwrap();
        assert_eq!(recv_into_spare(&b, &mut buf, false).unwrap(), 5);
        assert_eq!(&buf[..], b"kepthello");
        // Never more than the spare room.
        let mut small = bytes::BytesMut::with_capacity(3);
        a.write_all(b"0123456789").unwrap();
        let n = recv_into_spare(&b, &mut small, false).unwrap();
        assert!(n <= small.capacity() && small.len() == n, "{n}");
        assert_eq!(&small[..], &b"0123456789"[..n]);
        drop(a);
        let mut rest = bytes::BytesMut::with_capacity(64);
        assert_eq!(recv_into_spare(&b, &mut rest, false).unwrap(), 10 - n);
        assert_eq!(
            recv_into_spare(&b, &mut rest, false).unwrap(),
            0,
            "end of stream"
        );
    }

    #[test]
    fn unread_bytes_of_a_file_that_is_not_a_socket_is_answered_safely() {
        let file = std::fs::File::open("/dev/null").unwrap();
        // Not a socket: the kernel answers ENOTTY or 0, never memory unsafety.
        let _ = unread_bytes(&file);
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn peer_unread_bytes_covers_what_was_written_and_falls_to_zero_once_read() {
        let (mut writer, mut reader) = UnixStream::pair().unwrap();
        assert_eq!(peer_unread_bytes(&writer).unwrap(), 0);
        writer.write_all(&[7u8; 1000]).unwrap();
        assert!(peer_unread_bytes(&writer).unwrap() >= 1000);
        let mut buf = [0u8; 400];
        reader.read_exact(&mut buf).unwrap();
        // Partly read: still counted (the buffer is not freed yet).
        assert!(peer_unread_bytes(&writer).unwrap() >= 600);
        let mut rest = [0u8; 600];
        reader.read_exact(&mut rest).unwrap();
        assert_eq!(peer_unread_bytes(&writer).unwrap(), 0);
    }

    #[test]
    fn peer_unread_bytes_of_a_file_that_is_not_a_socket_is_an_error_not_a_number() {
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(peer_unread_bytes(&file).is_err());
    }

    #[tokio::test]
    async fn a_registration_for_reads_only_sees_reads_and_not_room() {
        use tokio::io::Interest;
        let (mut writer, mut reader) = UnixStream::pair().unwrap();
        writer.set_nonblocking(true).unwrap();
        let reads = register(writer.try_clone().unwrap(), Interest::READABLE).unwrap();
        let room = register(writer.try_clone().unwrap(), Interest::WRITABLE).unwrap();
        // Room is there at once; nothing to read.
        room.writable().await.unwrap().clear_ready();
        let nothing = tokio::time::timeout(std::time::Duration::from_millis(20), reads.readable());
        assert!(nothing.await.is_err(), "no bytes, no hang-up: not readable");
        // Fill the socket, then let the peer read some: room again.
        while writer.write(&[0u8; 4096]).is_ok() {}
        let mut buf = vec![0u8; 1 << 20];
        let _ = reader.read(&mut buf).unwrap();
        room.writable().await.unwrap().clear_ready();
        // The peer hangs up: seen by the read registration.
        drop(reader);
        let guard = reads.readable().await.unwrap();
        assert!(guard.ready().is_read_closed());
        assert_eq!(reads.get_ref().as_raw_fd(), reads.as_raw_fd());
    }

    #[test]
    fn a_waiting_socket_waits_for_bytes_or_the_end_and_gives_up_after_its_timeout() {
        let (mut writer, reader) = UnixStream::pair().unwrap();
        reader.set_nonblocking(true).unwrap();
        set_waiting(&reader, Some(std::time::Duration::from_millis(5))).unwrap();
        let mut buf = bytes::BytesMut::with_capacity(8);
        let err = recv_into_spare(&reader, &mut buf, true).unwrap_err();
        assert_eq!(
            err.kind(),
            io::ErrorKind::WouldBlock,
            "nothing came in time"
        );
        writer.write_all(b"x").unwrap();
        assert_eq!(recv_into_spare(&reader, &mut buf, true).unwrap(), 1);
        assert_eq!(&buf[..], b"x");
        writer.write_all(b"y").unwrap();
        assert_eq!(recv_into_spare(&reader, &mut buf, false).unwrap(), 1);
        assert_eq!(
            recv_into_spare(&reader, &mut buf, false)
                .unwrap_err()
                .kind(),
            io::ErrorKind::WouldBlock,
            "reads that must not wait never do, even on a waiting socket"
        );
        // Non-blocking again: a plain read says WouldBlock at once.
        set_waiting(&reader, None).unwrap();
        let err = (&reader).read(&mut [0u8; 4]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        // Blocking again: a wait with nothing there yet is woken by bytes
        // that arrive while it waits (a non-blocking socket would say
        // "nothing" at once instead), and reads them.
        set_waiting(&reader, Some(std::time::Duration::from_secs(60))).unwrap();
        let late = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            writer.write_all(b"late").unwrap();
            writer
        });
        let mut rest = bytes::BytesMut::with_capacity(8);
        assert_eq!(recv_into_spare(&reader, &mut rest, true).unwrap(), 4);
        assert_eq!(&rest[..], b"late");
        drop(late.join().unwrap());
        assert_eq!(
            recv_into_spare(&reader, &mut rest, true).unwrap(),
            0,
            "the end of the stream"
        );
    }

    #[tokio::test]
    async fn a_shared_socket_leaves_the_driver_and_comes_back_while_it_stays_open() {
        use tokio::io::Interest;
        let (mut writer, reader) = UnixStream::pair().unwrap();
        reader.set_nonblocking(true).unwrap();
        let reader = Arc::new(reader);
        let watch = register(Arc::clone(&reader), Interest::READABLE).unwrap();
        writer.write_all(b"a").unwrap();
        watch.readable().await.unwrap().clear_ready();
        drop(watch);
        // Still open with its other owner: readable, and registered again.
        let mut buf = bytes::BytesMut::with_capacity(8);
        assert_eq!(recv_into_spare(&*reader, &mut buf, false).unwrap(), 1);
        let watch = register(Arc::clone(&reader), Interest::READABLE).unwrap();
        writer.write_all(b"b").unwrap();
        watch.readable().await.unwrap().retain_ready();
        assert_eq!(recv_into_spare(&*reader, &mut buf, false).unwrap(), 1);
        assert_eq!(&buf[..], b"ab");
        assert_eq!(watch.as_raw_fd(), reader.as_raw_fd());
        // Bytes that arrived while it was out of the driver are reported
        // once it is registered again (a dedicated thread hands a socket
        // back with bytes in it): no readiness is lost.
        drop(watch);
        writer.write_all(b"c").unwrap();
        let watch = register(Arc::clone(&reader), Interest::READABLE).unwrap();
        let ready = tokio::time::timeout(std::time::Duration::from_secs(20), watch.readable());
        ready
            .await
            .expect("readable after registering again")
            .unwrap()
            .retain_ready();
        assert_eq!(recv_into_spare(&*reader, &mut buf, false).unwrap(), 1);
    }

    #[test]
    fn a_reader_closing_with_unread_bytes_resets_the_writer_and_one_that_read_all_does_not() {
        let (mut writer, reader) = UnixStream::pair().unwrap();
        writer.write_all(b"unread").unwrap();
        drop(reader);
        assert!(hung_up(&writer));
        let err = writer.take_error().unwrap().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);

        let (mut writer, mut reader) = UnixStream::pair().unwrap();
        writer.write_all(b"read").unwrap();
        reader.read_exact(&mut [0u8; 4]).unwrap();
        assert!(!hung_up(&writer));
        drop(reader);
        assert!(hung_up(&writer));
        assert!(writer.take_error().unwrap().is_none());
    }
}
