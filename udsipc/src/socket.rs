//! The socket file's life: path checks, the parent directory, safe handling
//! of whatever already sits at the path, socket options, and removing only
//! the socket this process created.
//!
//! Nothing here reads or writes messages.

use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::socket::{setsockopt, sockopt};

use crate::error::{ConfigError, StartError};

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

/// Checks that `path` can be bound or connected to.
pub(crate) fn validate_path(path: &Path) -> Result<(), ConfigError> {
    let len = path.as_os_str().len();
    if len == 0 {
        return Err(ConfigError::EmptyPath);
    }
    let max = max_socket_path_len();
    if len > max {
        return Err(ConfigError::PathTooLong {
            path: path.to_owned(),
            len,
            max,
        });
    }
    Ok(())
}

/// Creates the socket's parent directory (mode 0750, like Go's
/// `EnsureSocketDir`) if it does not exist.
pub(crate) fn ensure_parent_dir(path: &Path) -> Result<(), StartError> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(|source| StartError::CreateDir {
            dir: dir.to_owned(),
            source,
        })
}

/// Makes `path` free to bind without destroying anything of value:
/// - nothing there: fine;
/// - not a socket: refused, left untouched;
/// - a socket with a live listener: refused (address in use);
/// - a stale socket (connection refused): removed.
pub(crate) fn clear_stale_socket(path: &Path) -> Result<(), StartError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(StartError::Bind {
                path: path.to_owned(),
                source,
            });
        }
    };
    if !meta.file_type().is_socket() {
        return Err(StartError::NotASocket {
            path: path.to_owned(),
        });
    }
    match probe(path) {
        Probe::Live => Err(StartError::AddrInUse {
            path: path.to_owned(),
        }),
        Probe::Stale => match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StartError::RemoveStale {
                path: path.to_owned(),
                source,
            }),
        },
        Probe::Unknown(source) => Err(StartError::Bind {
            path: path.to_owned(),
            source,
        }),
    }
}

/// What a connection attempt says about the socket at a path.
enum Probe {
    /// Someone accepts (or their backlog is full: `EAGAIN`).
    Live,
    /// Connection refused (nobody listens), or the file just vanished.
    Stale,
    /// Could not tell (e.g. no permission to connect).
    Unknown(io::Error),
}

/// Connects without blocking: a blocking connect to a listener whose
/// backlog is full would wait forever.
fn probe(path: &Path) -> Probe {
    use nix::errno::Errno;
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
    let attempt = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .and_then(|fd| {
        let addr = UnixAddr::new(path)?;
        connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr)
    });
    match attempt {
        Ok(()) | Err(Errno::EAGAIN) | Err(Errno::EINPROGRESS) => Probe::Live,
        Err(Errno::ECONNREFUSED) | Err(Errno::ENOENT) => Probe::Stale,
        Err(e) => Probe::Unknown(e.into()),
    }
}

/// The identity of a socket file this process created, so that stopping
/// removes that file and never a successor's.
#[derive(Debug, Clone)]
pub(crate) struct OwnedSocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl OwnedSocketFile {
    /// Records the file now at `path` (just bound by us).
    pub(crate) fn record(path: &Path) -> io::Result<Self> {
        let meta = fs::symlink_metadata(path)?;
        Ok(Self {
            path: path.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// Removes the file if it is still the one we created.
    pub(crate) fn remove(&self) -> io::Result<()> {
        match fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.dev() == self.dev && meta.ino() == self.ino => {
                match fs::remove_file(&self.path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                }
            }
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The socket path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// Binds a listening socket at `path`. With `mode`, the file mode is set
/// between `bind` and `listen`, so no peer can connect while the socket is
/// more open than asked.
pub(crate) fn bind_listener(
    path: &Path,
    mode: Option<u32>,
) -> io::Result<std::os::unix::net::UnixListener> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, listen, socket,
    };
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    let addr = UnixAddr::new(path)?;
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr)?;
    // Connecting needs write permission on the socket file, and nobody can
    // connect before `listen`: setting the mode here leaves no window in
    // which the socket is more open than asked.
    if let Some(mode) = mode {
        if let Err(e) = fs::set_permissions(path, fs::Permissions::from_mode(mode)) {
            let _ = fs::remove_file(path);
            return Err(e);
        }
    }
    if let Err(e) = listen(&fd, Backlog::new(1024).unwrap_or(Backlog::MAXCONN)) {
        let _ = fs::remove_file(path);
        return Err(e.into());
    }
    Ok(std::os::unix::net::UnixListener::from(fd))
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
            validate_path(Path::new("")),
            Err(ConfigError::EmptyPath)
        ));
        let long = "x".repeat(max_socket_path_len() + 1);
        let err = validate_path(Path::new(&long)).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("limit of {} bytes", max_socket_path_len())),
            "{err}"
        );
        validate_path(Path::new(&"y".repeat(max_socket_path_len()))).unwrap();
    }
}
