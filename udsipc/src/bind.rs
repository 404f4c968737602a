//! Taking a socket path for a Reader while other processes may race for it,
//! and giving it back at stop. Abstract names have no file: they are bound
//! directly (the kernel refuses a name still bound, and a name dies with its
//! socket).
//!
//! For a path, a start goes through these steps; each closes one race:
//!
//! 1. **Lock.** An advisory lock (`flock`) on `<path>.lock`, held for the
//!    Reader's whole life. Two udsipc Readers on one path never overlap:
//!    the second is refused (`AddrInUse`) before it probes, unlinks or binds
//!    anything, so one that judged a socket stale cannot unlink a newer
//!    reader's socket, and a bound-but-not-yet-listening socket is never
//!    seen by another udsipc start. The lock dies with the process, so a
//!    killed reader never blocks a restart.
//! 2. **Stale check** under the lock: nothing there is fine; a non-socket is
//!    refused untouched; a socket that answers is refused (`AddrInUse`: it
//!    may be a reader that does not take the lock, such as the Go
//!    reference); one that refuses connections is removed.
//! 3. **Bind in a private directory.** The socket is bound inside a fresh
//!    `mkdtemp` directory (mode 0700, ours) beside the path, its identity
//!    (device, inode) read there without following links, its mode set
//!    there, and it is put to `listen` there. No other user can add,
//!    replace or link anything inside that directory, so the mode change can
//!    only ever reach our own socket, whatever happens at the public path.
//! 4. **Publish atomically.** `renameat2(RENAME_NOREPLACE)` (or `link` where
//!    the file system lacks it) moves the already listening socket to the
//!    path, and fails instead of replacing anything that appeared there
//!    meanwhile. Writers never see a half-made socket: it appears listening
//!    and with its final mode.
//!
//! Stopping removes the socket only if the path still holds the recorded
//! identity, then removes the lock file and releases the lock, in that
//! order, so no other udsipc start can slip in between the check and the
//! unlink.
//!
//! What is left: a reader that does not take the lock (another
//! implementation) racing a udsipc start on the same path; the probe and
//! `NOREPLACE` narrow that to the instant between a stale probe and its
//! unlink.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::StartError;
use crate::socket::{self, Probe, SocketAddress};

/// A listening socket and, for a path, the file it owns.
#[derive(Debug)]
pub(crate) struct Bound {
    pub(crate) listener: UnixListener,
    pub(crate) file: Option<OwnedSocketFile>,
}

/// Binds and listens on `name` (a path or an abstract name) as described in
/// the module docs; with `mode`, the socket file gets that mode before any
/// peer can reach it.
pub(crate) fn listen_on(name: &Path, mode: Option<u32>) -> Result<Bound, StartError> {
    let bind_error = |source: io::Error| StartError::Bind {
        path: name.to_owned(),
        source,
    };
    match SocketAddress::parse(name)? {
        SocketAddress::Path(path) => listen_on_file(&path, mode),
        address => {
            let fd = new_socket().map_err(bind_error)?;
            bind_fd(&fd, &address.unix_addr().map_err(bind_error)?).map_err(bind_error)?;
            listen_fd(&fd).map_err(bind_error)?;
            Ok(Bound {
                listener: UnixListener::from(fd),
                file: None,
            })
        }
    }
}

fn listen_on_file(path: &Path, mode: Option<u32>) -> Result<Bound, StartError> {
    let bind_error = |source: io::Error| StartError::Bind {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = socket::replaceable_dir(path) {
        tracing::warn!(
            dir = %dir.display(),
            "the socket's directory is writable by others and has no sticky bit: anyone can replace the socket"
        );
    }
    let lock = PathLock::acquire(path)?;
    clear_stale(path)?;
    let staging = Staging::create(path).map_err(bind_error)?;
    let fd = new_socket().map_err(bind_error)?;
    let addr = nix::sys::socket::UnixAddr::new(staging.bind_path().as_path())
        .map_err(|e| bind_error(e.into()))?;
    bind_fd(&fd, &addr).map_err(bind_error)?;
    hook::fire(hook::Point::Bound);
    let identity = staging.identify().map_err(bind_error)?;
    if let Some(mode) = mode {
        staging.chmod(mode).map_err(bind_error)?;
    }
    listen_fd(&fd).map_err(bind_error)?;
    staging.publish(path)?;
    Ok(Bound {
        listener: UnixListener::from(fd),
        file: Some(OwnedSocketFile {
            path: path.to_owned(),
            identity,
            lock: Mutex::new(Some(lock)),
        }),
    })
}

/// A close-on-exec, non-blocking stream socket (see `socket::stream_socket`
/// for the systems without atomic flags).
fn new_socket() -> io::Result<OwnedFd> {
    Ok(crate::socket::stream_socket()?)
}

fn bind_fd(fd: &OwnedFd, addr: &nix::sys::socket::UnixAddr) -> io::Result<()> {
    Ok(nix::sys::socket::bind(fd.as_raw_fd(), addr)?)
}

fn listen_fd(fd: &OwnedFd) -> io::Result<()> {
    use nix::sys::socket::{Backlog, listen};
    Ok(listen(fd, Backlog::new(1024).unwrap_or(Backlog::MAXCONN))?)
}

/// Makes `path` free to publish on (called with the lock held):
/// - nothing there: fine;
/// - not a socket: refused, left untouched;
/// - a socket with a live listener: refused (address in use);
/// - a stale socket (connection refused): removed.
fn clear_stale(path: &Path) -> Result<(), StartError> {
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
    match socket::probe(path) {
        Probe::Live => Err(StartError::AddrInUse {
            path: path.to_owned(),
        }),
        Probe::Stale => {
            hook::fire(hook::Point::JudgedStale);
            match fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(StartError::RemoveStale {
                    path: path.to_owned(),
                    source,
                }),
            }
        }
        Probe::Unknown(source) => Err(StartError::Bind {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The advisory lock beside a socket path (`<path>.lock`).
#[derive(Debug)]
struct PathLock {
    path: PathBuf,
    lock: Flock<File>,
}

impl PathLock {
    fn acquire(socket: &Path) -> Result<Self, StartError> {
        let mut path = socket.as_os_str().to_owned();
        path.push(".lock");
        let path = PathBuf::from(path);
        let error = |source: io::Error| StartError::Bind {
            path: path.clone(),
            source,
        };
        // A previous holder removes the file when it stops: if it did so
        // between our open and our lock, we hold a lock on a file nobody
        // else can see, so try again with the one at the path now.
        for _ in 0..16 {
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .mode(0o600)
                // Never a link, and never block on a FIFO planted there.
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
                .open(&path)
                .map_err(error)?;
            let meta = file.metadata().map_err(error)?;
            if !meta.is_file() {
                return Err(error(io::Error::other(
                    "the lock file is not a regular file",
                )));
            }
            let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => lock,
                Err((_, Errno::EWOULDBLOCK)) => {
                    return Err(StartError::AddrInUse {
                        path: socket.to_owned(),
                    });
                }
                Err((_, errno)) => return Err(error(errno.into())),
            };
            match fs::symlink_metadata(&path) {
                Ok(now) if now.dev() == meta.dev() && now.ino() == meta.ino() => {
                    return Ok(Self { path, lock });
                }
                _ => continue,
            }
        }
        Err(error(io::Error::other(
            "the lock file kept being replaced while locking it",
        )))
    }

    /// Removes the lock file (still ours: no udsipc start removes or
    /// replaces it without first taking the lock), then unlocks. A lock
    /// file is never written to: one that is not empty is somebody else's
    /// file that happens to have the name, and is left in place.
    fn release(self) -> io::Result<()> {
        let empty = self.lock.metadata().is_ok_and(|m| m.len() == 0);
        let removed = match empty.then(|| fs::remove_file(&self.path)) {
            Some(Err(e)) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
        drop(self.lock);
        removed
    }
}

/// A fresh private directory beside the socket path where the socket is
/// bound, given its mode and put to listen before it is published.
struct Staging {
    dir: PathBuf,
    fd: File,
}

/// The socket's name inside the staging directory.
const STAGED: &str = "s";

/// Opens the staging directory as a handle only (`O_PATH`) where the system
/// has that flag (Linux); elsewhere read-only.
#[cfg(any(target_os = "linux", target_os = "android"))]
const DIR_ONLY_FLAG: nix::libc::c_int = nix::libc::O_PATH;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const DIR_ONLY_FLAG: nix::libc::c_int = 0;

impl Staging {
    fn create(path: &Path) -> io::Result<Self> {
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let dir = nix::unistd::mkdtemp(&parent.join(".udsipc-XXXXXX"))?;
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(DIR_ONLY_FLAG | nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
            .open(&dir);
        let staging = match opened {
            Ok(fd) => Self { dir, fd },
            Err(e) => {
                let _ = fs::remove_dir(&dir);
                return Err(e);
            }
        };
        // Still the directory mkdtemp made for us, not one swapped in.
        let meta = staging.fd.metadata()?;
        if !meta.is_dir()
            || meta.uid() != nix::unistd::geteuid().as_raw()
            || meta.mode() & 0o077 != 0
        {
            return Err(io::Error::other("the staging directory was replaced"));
        }
        Ok(staging)
    }

    /// Where to bind: the staging directory's path, or (when that would not
    /// fit in `sun_path`) the same directory through its descriptor.
    fn bind_path(&self) -> PathBuf {
        let direct = self.dir.join(STAGED);
        if direct.as_os_str().len() <= socket::max_socket_path_len() {
            direct
        } else {
            PathBuf::from(format!("/proc/self/fd/{}/{STAGED}", self.fd.as_raw_fd()))
        }
    }

    /// Device and inode of the bound socket, read inside the private
    /// directory without following links.
    fn identify(&self) -> io::Result<(u64, u64)> {
        use nix::sys::stat::{SFlag, fstatat};
        let st = fstatat(
            Some(self.fd.as_raw_fd()),
            STAGED,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
            return Err(io::Error::other(
                "the bound socket is not where it was bound",
            ));
        }
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
        Ok((st.st_dev as u64, st.st_ino as u64))
    }

    /// Sets the socket's mode. The entry is inside a 0700 directory of ours
    /// and was just checked to be our socket: this cannot reach another file.
    fn chmod(&self, mode: u32) -> io::Result<()> {
        use nix::sys::stat::{FchmodatFlags, Mode, fchmodat};
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
        let mode = Mode::from_bits_truncate(mode as nix::libc::mode_t);
        Ok(fchmodat(
            Some(self.fd.as_raw_fd()),
            STAGED,
            mode,
            FchmodatFlags::FollowSymlink,
        )?)
    }

    /// Moves the listening socket to `path`, never replacing anything.
    fn publish(&self, path: &Path) -> Result<(), StartError> {
        let dir = Some(self.fd.as_raw_fd());
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let renamed = {
            use nix::fcntl::{RenameFlags, renameat2};
            renameat2(dir, STAGED, None, path, RenameFlags::RENAME_NOREPLACE)
        };
        // No `renameat2` on other systems: the link fallback below.
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let renamed: nix::Result<()> = Err(Errno::ENOSYS);
        let moved = match renamed {
            // File systems without RENAME_NOREPLACE: link (which never
            // replaces either), then drop the staging name.
            Err(Errno::EINVAL | Errno::ENOSYS) => nix::unistd::linkat(
                dir,
                Path::new(STAGED),
                None,
                path,
                nix::fcntl::AtFlags::empty(),
            ),
            other => other,
        };
        match moved {
            Ok(()) => Ok(()),
            Err(Errno::EEXIST) => match fs::symlink_metadata(path) {
                Ok(m) if !m.file_type().is_socket() => Err(StartError::NotASocket {
                    path: path.to_owned(),
                }),
                _ => Err(StartError::AddrInUse {
                    path: path.to_owned(),
                }),
            },
            Err(e) => Err(StartError::Bind {
                path: path.to_owned(),
                source: e.into(),
            }),
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        use nix::unistd::{UnlinkatFlags, unlinkat};
        let _ = unlinkat(
            Some(self.fd.as_raw_fd()),
            STAGED,
            UnlinkatFlags::NoRemoveDir,
        );
        let _ = fs::remove_dir(&self.dir);
    }
}

/// The identity of the socket file this Reader created and the lock it
/// holds on the path, so that stopping removes that file and never a
/// successor's.
#[derive(Debug)]
pub(crate) struct OwnedSocketFile {
    path: PathBuf,
    /// Device and inode of the socket, read from the bound socket itself.
    identity: (u64, u64),
    /// Held until [`OwnedSocketFile::remove`].
    lock: Mutex<Option<PathLock>>,
}

impl OwnedSocketFile {
    /// Removes the socket file if it is still the one we created, then the
    /// lock. Safe to call more than once.
    pub(crate) fn remove(&self) -> io::Result<()> {
        let mut lock = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let Some(held) = lock.take() else {
            return Ok(());
        };
        let (dev, ino) = self.identity;
        let removed = match fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.dev() == dev && meta.ino() == ino => {
                match fs::remove_file(&self.path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                }
            }
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        let released = held.release();
        removed.and(released)
    }

    /// The socket path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// Test-only pauses at the points where another process could act.
pub(crate) mod hook {
    /// Where a start can be paused.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) enum Point {
        /// The socket at the path was judged stale, not yet removed.
        JudgedStale,
        /// The new socket is bound, not yet listening.
        Bound,
    }

    /// What a test runs at each point.
    #[cfg(test)]
    pub(crate) type Hook = Box<dyn FnMut(Point)>;

    #[cfg(test)]
    thread_local! {
        static HOOK: std::cell::RefCell<Option<Hook>> = const { std::cell::RefCell::new(None) };
    }

    /// Installs `f` for starts on this thread.
    #[cfg(test)]
    pub(crate) fn set(f: Hook) {
        HOOK.with(|h| *h.borrow_mut() = Some(f));
    }

    /// Calls this thread's hook, if any (nothing outside tests).
    #[inline]
    pub(crate) fn fire(_point: Point) {
        #[cfg(test)]
        HOOK.with(|h| {
            if let Some(f) = h.borrow_mut().as_mut() {
                f(_point);
            }
        });
    }
}

#[cfg(test)]
#[path = "bind_tests.rs"]
mod tests;
