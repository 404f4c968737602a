//! System calls nix has no safe wrapper for: the crate's second room for
//! `unsafe` code (the first is adopting systemd's fd in `systemd.rs`).
//!
//! This module owns the two queue-length queries of a connected socket:
//! `SIOCOUTQ` (the same request number as `TIOCOUTQ`), which tells the
//! Writer how much of what it wrote the reader has not read yet, and
//! `FIONREAD` (`SIOCINQ`), which tells the Reader how much its peer wrote
//! that it has not read yet (for ordering across reconnects). Nothing else
//! belongs here.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

#[cfg(any(target_os = "linux", target_os = "android"))]
mod ffi {
    #![allow(unsafe_code, unreachable_pub, missing_docs)]
    // `ioctl(fd, SIOCOUTQ, int *)`: the kernel stores one `int`.
    nix::ioctl_read_bad!(siocoutq, nix::libc::TIOCOUTQ, nix::libc::c_int);
    // `ioctl(fd, FIONREAD, int *)`: the kernel stores one `int`.
    nix::ioctl_read_bad!(fionread, nix::libc::FIONREAD, nix::libc::c_int);
}

/// Bytes written to `sock` that its peer has not read yet, as the kernel
/// accounts them: for a Unix stream socket on Linux, the true size of the
/// buffers still queued at the peer (at least the unread bytes; exactly 0
/// once the peer has read everything, or once it closed and its queue was
/// purged: check the socket's error after this).
///
/// `Unsupported` on systems without the query.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[allow(unsafe_code)]
pub(crate) fn unread_bytes(sock: &impl AsFd) -> io::Result<u64> {
    let mut unread: nix::libc::c_int = 0;
    // SAFETY: `siocoutq` is `ioctl(fd, SIOCOUTQ, &mut c_int)`; for a socket
    // the kernel writes exactly one `c_int` through the pointer, which
    // points to `unread`, a live, aligned local `c_int` not otherwise
    // borrowed during the call. The fd is open: `sock` is borrowed for the
    // whole call. On any other kind of fd the kernel refuses the request
    // (ENOTTY / EINVAL) without writing.
    unsafe { ffi::siocoutq(sock.as_fd().as_raw_fd(), &mut unread) }.map_err(io::Error::from)?;
    Ok(u64::try_from(unread).unwrap_or(0))
}

/// See the Linux version: this system cannot tell.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn unread_bytes(_sock: &impl AsFd) -> io::Result<u64> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Bytes the peer of `sock` wrote that we have not read yet (`FIONREAD`).
#[cfg(any(target_os = "linux", target_os = "android"))]
#[allow(unsafe_code)]
pub(crate) fn bytes_to_read(sock: &impl AsFd) -> io::Result<u64> {
    let mut queued: nix::libc::c_int = 0;
    // SAFETY: `fionread` is `ioctl(fd, FIONREAD, &mut c_int)`; the kernel
    // writes exactly one `c_int` through the pointer, which points to
    // `queued`, a live, aligned local not otherwise borrowed during the
    // call. The fd is open: `sock` is borrowed for the whole call.
    unsafe { ffi::fionread(sock.as_fd().as_raw_fd(), &mut queued) }.map_err(io::Error::from)?;
    Ok(u64::try_from(queued).unwrap_or(0))
}

/// See the Linux version: this system cannot tell.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn bytes_to_read(_sock: &impl AsFd) -> io::Result<u64> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Whether the peer of `sock` has closed its end entirely (`POLLHUP`) or an
/// error is pending (`POLLERR`), without waiting.
pub(crate) fn hung_up(sock: &impl AsFd) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLOUT)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(_) => fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR)),
        Err(_) => false,
    }
}

#[cfg(all(test, any(target_os = "linux", target_os = "android")))]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn unread_bytes_covers_what_was_written_and_falls_to_zero_once_read() {
        let (mut writer, mut reader) = UnixStream::pair().unwrap();
        assert_eq!(unread_bytes(&writer).unwrap(), 0);
        writer.write_all(&[7u8; 1000]).unwrap();
        assert!(unread_bytes(&writer).unwrap() >= 1000);
        let mut buf = [0u8; 400];
        reader.read_exact(&mut buf).unwrap();
        // Partly read: still counted (the buffer is not freed yet).
        assert!(unread_bytes(&writer).unwrap() >= 600);
        let mut rest = [0u8; 600];
        reader.read_exact(&mut rest).unwrap();
        assert_eq!(unread_bytes(&writer).unwrap(), 0);
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

    #[test]
    fn bytes_to_read_follows_what_the_peer_wrote_and_we_read() {
        let (mut writer, mut reader) = UnixStream::pair().unwrap();
        assert_eq!(bytes_to_read(&reader).unwrap(), 0);
        writer.write_all(&[7; 1000]).unwrap();
        assert_eq!(bytes_to_read(&reader).unwrap(), 1000);
        reader.read_exact(&mut [0; 300]).unwrap();
        assert_eq!(bytes_to_read(&reader).unwrap(), 700);
    }

    #[test]
    fn unread_bytes_of_a_non_socket_is_an_error_not_a_number() {
        let file = tempfile::tempfile().unwrap();
        assert!(unread_bytes(&file).is_err());
    }
}
