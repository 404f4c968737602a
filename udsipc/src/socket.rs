//! What a socket name means ([`SocketAddress`]: a file system path, or on
//! Linux a name in the abstract namespace), and the socket file's life: path
//! checks, the parent directory, safe handling of whatever already sits at
//! the path, socket options, and removing only the socket this process
//! created. Every function here takes the name as the user gave it and does
//! the right thing for both forms, so the Reader and Writer never look at the
//! form themselves.
//!
//! Nothing here reads or writes messages.

use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sys::socket::{setsockopt, sockopt};

use crate::error::ConfigError;

/// The longest socket path the platform accepts, in bytes: the size of
/// `sockaddr_un.sun_path` minus the terminating NUL (107 on Linux), as the Go
/// reference's `MaxSocketPathLength`.
///
/// ```
/// assert!(udsipc::max_socket_path_len() >= 103);
/// ```
pub fn max_socket_path_len() -> usize {
    use nix::libc::sockaddr_un;
    std::mem::size_of::<sockaddr_un>() - std::mem::offset_of!(sockaddr_un, sun_path) - 1
}

/// What a socket name means, exactly as the Go reference's `net` package
/// reads it (PROTOCOL.md section 6).
///
/// | name | meaning |
/// |---|---|
/// | `@name` (Linux, Android) | `name` in the abstract namespace: no file, nothing to create or remove |
/// | NUL then `name` (Linux, Android) | the same abstract `name` |
/// | anything else | a file system path, relative to the working directory unless absolute |
///
/// On other systems every name is a path. The whole name, `@` included, must
/// be 1 to [`max_socket_path_len`] bytes, and a NUL byte anywhere but first
/// is refused (the kernel would silently cut the name there).
///
/// ```
/// use std::path::Path;
/// use udsipc::SocketAddress;
/// let path = SocketAddress::parse(Path::new("/run/app.sock")).unwrap();
/// assert_eq!(path, SocketAddress::Path("/run/app.sock".into()));
/// # #[cfg(target_os = "linux")]
/// assert_eq!(
///     SocketAddress::parse(Path::new("@app")).unwrap(),
///     SocketAddress::Abstract(b"app".to_vec())
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SocketAddress {
    /// A socket file at this path.
    Path(PathBuf),
    /// A name in Linux's abstract socket namespace: the bytes after the
    /// leading `@` (or NUL). It exists while a socket is bound to it and
    /// vanishes with that socket.
    Abstract(Vec<u8>),
}

impl SocketAddress {
    /// Reads a socket name as the Go reference does, after checking its
    /// length and that it holds no NUL byte past the first.
    pub fn parse(name: &Path) -> Result<Self, ConfigError> {
        use std::os::unix::ffi::OsStrExt;
        let bytes = name.as_os_str().as_bytes();
        let len = bytes.len();
        if len == 0 {
            return Err(ConfigError::EmptyPath);
        }
        let max = max_socket_path_len();
        if len > max {
            return Err(ConfigError::PathTooLong {
                path: name.to_owned(),
                len,
                max,
            });
        }
        let abstract_names = cfg!(any(target_os = "linux", target_os = "android"));
        if bytes[1..].contains(&0) || (bytes[0] == 0 && !abstract_names) {
            return Err(ConfigError::NulInPath {
                path: name.to_owned(),
            });
        }
        if abstract_names && matches!(bytes[0], b'@' | 0) {
            return Ok(Self::Abstract(bytes[1..].to_vec()));
        }
        Ok(Self::Path(name.to_owned()))
    }

    /// The address for `bind`/`connect`.
    pub(crate) fn std_addr(&self) -> io::Result<std::os::unix::net::SocketAddr> {
        match self {
            Self::Path(p) => std::os::unix::net::SocketAddr::from_pathname(p),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Self::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name)
            }
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            Self::Abstract(_) => Err(io::ErrorKind::Unsupported.into()),
        }
    }
}

/// Connects a stream to the socket `name` means (a path or an abstract
/// name), without blocking the thread.
pub(crate) async fn connect(name: &Path) -> io::Result<tokio::net::UnixStream> {
    let addr = SocketAddress::parse(name)
        .map_err(io::Error::other)?
        .std_addr()?;
    tokio::net::UnixStream::connect_addr(&addr.into()).await
}

/// Whether someone accepts connections on the socket at `path`: `true`
/// when a connection is accepted (or the backlog is full: `EAGAIN`), `false`
/// when it is refused (nobody listens) or the file just vanished, an error
/// when it cannot tell (e.g. no permission to connect).
///
/// Connects without blocking: a blocking connect to a listener whose
/// backlog is full would wait forever.
pub(crate) fn is_live(path: &Path) -> io::Result<bool> {
    use nix::errno::Errno;
    use nix::sys::socket::{UnixAddr, connect};
    let attempt = stream_socket().and_then(|fd| {
        let addr = UnixAddr::new(path)?;
        connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr)
    });
    match attempt {
        Ok(()) | Err(Errno::EAGAIN) | Err(Errno::EINPROGRESS) => Ok(true),
        Err(Errno::ECONNREFUSED) | Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The socket's directory, when anyone can replace the socket in it: the
/// directory is writable by others and has no sticky bit (`/tmp` has one, so
/// only a file's owner can remove or rename it there). `None` for an
/// abstract name, a directory that is not open like that, or one that
/// cannot be read.
///
/// Readers log a warning when they start in such a directory.
///
/// ```
/// use std::path::Path;
/// assert_eq!(udsipc::replaceable_socket_dir(Path::new("@abstract")), None);
/// ```
pub fn replaceable_socket_dir(name: &Path) -> Option<PathBuf> {
    let SocketAddress::Path(path) = SocketAddress::parse(name).ok()? else {
        return None;
    };
    let dir = parent_of(&path);
    let mode = fs::metadata(dir).ok()?.mode();
    (mode & 0o002 != 0 && mode & 0o1000 == 0).then(|| dir.to_owned())
}

/// The directory a socket path is in (`.` for a bare name).
pub(crate) fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Sets `SO_SNDBUF`; errors are ignored by callers, as in Go (restricted
/// environments may refuse it).
pub(crate) fn set_send_buffer(sock: &impl AsFd, size: u32) -> io::Result<()> {
    setsockopt(sock, sockopt::SndBuf, &(size as usize)).map_err(io::Error::from)
}

/// Sets `SO_RCVBUF` (a no-op for Unix stream sockets on Linux, honoured on
/// the BSDs), ignored on failure as in Go.
pub(crate) fn set_recv_buffer(sock: &impl AsFd, size: u32) -> io::Result<()> {
    setsockopt(sock, sockopt::RcvBuf, &(size as usize)).map_err(io::Error::from)
}

/// A close-on-exec, non-blocking Unix stream socket: atomically where the
/// system can (Linux, the BSDs), else set right after creation (macOS has
/// no `SOCK_CLOEXEC`/`SOCK_NONBLOCK`).
pub(crate) fn stream_socket() -> nix::Result<std::os::fd::OwnedFd> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    #[cfg(not(target_vendor = "apple"))]
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    #[cfg(target_vendor = "apple")]
    let flags = SockFlag::empty();
    let fd = socket(AddressFamily::Unix, SockType::Stream, flags, None)?;
    #[cfg(target_vendor = "apple")]
    {
        use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
        use std::os::fd::AsRawFd;
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sun_path_limit_is_linux_107() {
        if cfg!(target_os = "linux") {
            assert_eq!(max_socket_path_len(), 107);
        }
    }

    #[test]
    fn empty_and_long_paths_are_rejected_naming_the_limit() {
        assert!(matches!(
            SocketAddress::parse(Path::new("")),
            Err(ConfigError::EmptyPath)
        ));
        let long = "x".repeat(max_socket_path_len() + 1);
        let err = SocketAddress::parse(Path::new(&long)).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("limit of {} bytes", max_socket_path_len())),
            "{err}"
        );
        SocketAddress::parse(Path::new(&"y".repeat(max_socket_path_len()))).unwrap();
    }
}
