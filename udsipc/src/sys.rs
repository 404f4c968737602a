//! Kernel queries that nix offers only as raw `ioctl`s: the crate's second
//! room with `unsafe` code (the first adopts systemd's fd in `systemd`).
//!
//! Every function here takes a borrowed fd, so the fd is open for the whole
//! call, and passes the kernel a pointer to a local integer of the size the
//! request writes.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd};

use nix::libc::c_int;

nix::ioctl_read_bad!(fionread, nix::libc::FIONREAD, c_int);

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn unread_bytes_follows_what_the_peer_wrote_and_we_read() {
        let (mut a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(unread_bytes(&b).unwrap(), 0);
        a.write_all(&[7; 1000]).unwrap();
        assert_eq!(unread_bytes(&b).unwrap(), 1000);
        let mut buf = [0; 300];
        b.read_exact(&mut buf).unwrap();
        assert_eq!(unread_bytes(&b).unwrap(), 700);
    }

    #[test]
    fn unread_bytes_of_a_file_that_is_not_a_socket_is_answered_safely() {
        let file = std::fs::File::open("/dev/null").unwrap();
        // Not a socket: the kernel answers ENOTTY or 0, never memory unsafety.
        let _ = unread_bytes(&file);
    }
}
